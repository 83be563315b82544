package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"time"
)

// The outcome of a completed request: an index into worker.errs, or kindOK.
const (
	errConnect = iota
	errTimeout
	errStatus
	errOther
	kindOK = -1
)

// worker is one of the -connections goroutines: it picks, sends and records
// one request at a time on its own keep-alive connection.
type worker struct {
	r       *runner
	x       expander
	out     []byte // the request being sent, when templated
	scratch []byte // its body
	conn    net.Conn
	br      *bufio.Reader
	mu      sync.Mutex    // guards conn against stop(), which cuts it
	idle    time.Duration // when conn last completed a request, from the start
	h       hist
	ok      uint64
	sent    uint64
	errs    [4]uint64
	codes   [1000]uint64
	last    time.Duration // last completion, from the start
}

func (r *runner) newWorker(i int, seed int64) *worker {
	return &worker{
		r:  r,
		x:  expander{rng: rand.New(rand.NewSource(seed + int64(i)*0x5851F42D4C957F2D)), seqSrc: &r.seq},
		br: bufio.NewReaderSize(nil, 16<<10),
	}
}

func (w *worker) pick() *entry {
	es := w.r.entries
	if len(es) == 1 {
		return es[0]
	}
	cum := w.r.cum
	x := w.x.rng.Float64() * cum[len(cum)-1]
	for i, c := range cum {
		if x < c {
			return es[i]
		}
	}
	return es[len(es)-1]
}

func (w *worker) closedLoop() {
	defer w.closeConn()
	for !w.r.isStopped() && time.Since(w.r.start) < w.r.cfg.Duration {
		w.do(w.pick(), 0, false)
	}
}

func (w *worker) openLoop() {
	defer w.closeConn()
	r := w.r
	for {
		i := r.next.Add(1) - 1
		if i >= r.planned {
			return
		}
		planned := r.plannedAt(i)
		now := time.Since(r.start)
		if now >= r.window() {
			return // the window is over: planned but never sent
		}
		late := now >= planned
		if !late {
			t := time.NewTimer(planned - now)
			select {
			case <-t.C:
			case <-r.stopped:
				t.Stop()
				return
			}
		}
		w.do(w.pick(), planned, late)
	}
}

// do sends one request and records its outcome. Latency runs from planned
// when fromPlanned, else from the send.
func (w *worker) do(e *entry, planned time.Duration, fromPlanned bool) {
	r := w.r
	req := e.raw
	if req == nil {
		w.x.seq = 0
		w.out, w.scratch = e.appendRequest(w.out[:0], w.scratch, &w.x)
		req = w.out
	}
	sent := time.Since(r.start)
	w.sent++
	code, err := w.exchange(e, req, sent)
	if err != nil && r.aborted.Load() {
		w.sent-- // cut by stop(): neither served nor failed by the service
		return
	}
	done := time.Since(r.start)
	w.last = done

	kind := kindOK
	if err != nil {
		kind = classify(err)
	} else if !e.accepts(code) {
		kind = errStatus
	}
	if code > 0 && code < len(w.codes) {
		w.codes[code]++
	}
	var sh *secHist
	if k := int(done / time.Second); k < len(r.secs) {
		sh = r.second(k)
		sh.requests.Add(1)
	}
	if kind == kindOK {
		begin := sent
		if fromPlanned {
			begin = planned
		}
		lat := int64(done - begin)
		b := bucketOf(lat)
		w.h.add(b, lat)
		w.ok++
		if sh != nil {
			sh.counts[b].Add(1)
		}
		return
	}
	w.errs[kind]++
	if sh != nil {
		sh.errors.Add(1)
	}
	r.noteError(func() string {
		line := strings.TrimSuffix(string(req[:bytes.IndexByte(req, '\r')]), " HTTP/1.1")
		if kind == errStatus {
			return fmt.Sprintf("%s: unexpected status %d", line, code)
		}
		return fmt.Sprintf("%s: %v", line, err)
	})
}

// classify is the outcome kind of a failed exchange.
func classify(err error) int {
	var ce *connectError
	switch {
	case errors.As(err, &ce):
		return errConnect
	case isTimeout(err):
		return errTimeout
	}
	return errOther
}
