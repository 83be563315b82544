package main

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// runner is one load run: the compiled scenario, the open-loop plan, the
// per-second histograms the workers share and the stop/abort state.
type runner struct {
	cfg      config
	addr     string // host:port to dial
	entries  []*entry
	cum      []float64 // cumulative weights
	open     bool
	planned  uint64 // open loop: requests planned in the window
	start    time.Time
	next     atomic.Uint64 // open loop: next request index
	seq      atomic.Uint64 // {seq}
	secs     []atomic.Pointer[secHist]
	errOnce  atomic.Bool
	errMu    sync.Mutex
	firstErr string

	stopped  chan struct{} // closed when the window ends early
	stopAt   atomic.Int64  // ns after start at which it ended early; 0: it did not
	aborted  atomic.Bool   // the stop grace is over: connections in flight are cut
	abortCtx context.Context
	abort    context.CancelFunc
}

// run performs one load run as configured; a *usageError reports a bad
// configuration.
func run(cfg config) (*result, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	return r.run(), nil
}

func newRunner(cfg config) (*runner, error) {
	if cfg.Connections < 1 {
		return nil, usagef("-connections must be >= 1, got %d", cfg.Connections)
	}
	if cfg.Duration <= 0 {
		return nil, usagef("-duration must be > 0, got %v", cfg.Duration)
	}
	if cfg.Timeout <= 0 {
		return nil, usagef("-timeout must be > 0, got %v", cfg.Timeout)
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return nil, usagef("-rate must be a finite number >= 0, got %v", cfg.Rate)
	}
	u, err := url.Parse(cfg.Target)
	if err != nil || cfg.Target == "" {
		return nil, usagef("-target %q: want a URL like http://127.0.0.1:8080", cfg.Target)
	}
	if u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, usagef("-target %q: want http://HOST[:PORT][/prefix] without user, query or fragment", cfg.Target)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, usagef("-target %q: host %q is not a loopback address (127.0.0.0/8, ::1, localhost); loadgen only loads services on this machine", cfg.Target, u.Hostname())
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	r := &runner{cfg: cfg, addr: net.JoinHostPort(u.Hostname(), port), open: cfg.Rate > 0,
		stopped: make(chan struct{})}
	r.abortCtx, r.abort = context.WithCancel(context.Background())
	prefix := strings.TrimRight(u.EscapedPath(), "/")
	if len(cfg.Scenario.Requests) == 0 {
		return nil, usagef("scenario: \"requests\" is empty")
	}
	var total float64
	for i, spec := range cfg.Scenario.Requests {
		e, err := compileEntry(i, spec, prefix, u.Host)
		if err != nil {
			return nil, usagef("scenario requests[%d] (%s %s): %v", i, spec.Method, spec.Path, err)
		}
		w := 1.0
		if spec.Weight != nil {
			w = *spec.Weight
		}
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, usagef("scenario requests[%d] (%s %s): weight must be > 0, got %v", i, spec.Method, spec.Path, w)
		}
		total += w
		r.entries = append(r.entries, e)
		r.cum = append(r.cum, total)
	}
	if r.open {
		if math.Ceil(cfg.Duration.Seconds()*cfg.Rate) > 1e12 {
			return nil, usagef("-rate %v for %v plans too many requests", cfg.Rate, cfg.Duration)
		}
		r.planned = r.plannedBefore(cfg.Duration)
	}
	r.secs = make([]atomic.Pointer[secHist], int(cfg.Duration/time.Second))
	return r, nil
}

// run starts the workers (and the progress and stop goroutines), waits for
// them and collects the result.
func (r *runner) run() *result {
	seed := r.cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	workers := make([]*worker, r.cfg.Connections)
	for i := range workers {
		workers[i] = r.newWorker(i, seed)
	}
	r.start = time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			if r.open {
				w.openLoop()
			} else {
				w.closedLoop()
			}
		}(w)
	}
	done := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if r.cfg.Progress != nil {
			r.progress(done)
		}
	}()
	stopDone := make(chan struct{})
	go func() {
		defer close(stopDone)
		select {
		case <-r.cfg.Stop: // nil: never
			r.stop(workers)
		case <-done:
		}
	}()
	wg.Wait() // each worker closed its connection on the way out
	elapsed := time.Since(r.start)
	r.abort() // ends stop()'s grace: nothing is in flight any more
	close(done)
	<-progressDone
	<-stopDone
	return r.collect(workers, elapsed)
}

// window is how long the run sends: -duration, or until it was stopped.
func (r *runner) window() time.Duration {
	if at := r.stopAt.Load(); at > 0 {
		return time.Duration(at)
	}
	return r.cfg.Duration
}

// isStopped reports whether the window was ended early.
func (r *runner) isStopped() bool { return r.stopAt.Load() > 0 }

// seconds is the number of whole seconds in the window as run.
func (r *runner) seconds() int { return min(len(r.secs), int(r.window()/time.Second)) }

// plannedAt is the open-loop send time of request i, from the start.
func (r *runner) plannedAt(i uint64) time.Duration {
	return time.Duration(float64(i) * 1e9 / r.cfg.Rate)
}

// plannedBefore is the number of open-loop requests planned before d.
func (r *runner) plannedBefore(d time.Duration) uint64 {
	p := uint64(math.Ceil(d.Seconds() * r.cfg.Rate))
	for r.plannedAt(p) < d {
		p++
	}
	for p > 0 && r.plannedAt(p-1) >= d {
		p--
	}
	return p
}

// stop ends the window now, and cuts the connections still busy after the
// grace. A stop after the window (nothing more is sent, but requests may be
// in flight until their -timeout) leaves the window as it was and still cuts
// what is busy after the grace, so the result is written promptly.
func (r *runner) stop(workers []*worker) {
	at := max(int64(time.Since(r.start)), 1)
	if time.Duration(at) < r.cfg.Duration && r.stopAt.CompareAndSwap(0, at) {
		close(r.stopped)
	}
	t := time.NewTimer(r.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.abortCtx.Done():
		return // every worker finished within the grace
	}
	r.aborted.Store(true)
	r.abort()
	for _, w := range workers {
		w.mu.Lock()
		if w.conn != nil {
			if err := w.conn.SetDeadline(longAgo); err != nil {
				// No deadline on it (closed, or broken): closing it cuts it too,
				// and its worker then drops it as usual.
				_ = w.conn.Close()
			}
		}
		w.mu.Unlock()
	}
}

func (r *runner) second(k int) *secHist {
	p := &r.secs[k]
	if s := p.Load(); s != nil {
		return s
	}
	p.CompareAndSwap(nil, new(secHist))
	return p.Load()
}

func (r *runner) noteError(msg func() string) {
	if r.errOnce.Load() {
		return
	}
	r.errMu.Lock()
	if r.firstErr == "" {
		r.firstErr = msg()
		r.errOnce.Store(true)
	}
	r.errMu.Unlock()
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly refuses to connect anywhere but loopback, whatever a name
// resolved to.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to non-loopback address %s", address)
	}
	return nil
}
