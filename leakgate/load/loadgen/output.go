package main

import (
	"encoding/json"
	"strconv"
	"time"
)

// result is the JSON object a run writes (-out, or stdout); doc.go describes
// each field.
type result struct {
	SchemaVersion int               `json:"schema_version"`
	Tool          string            `json:"tool"`
	Mode          string            `json:"mode"`
	Target        string            `json:"target"`
	Connections   int               `json:"connections"`
	TargetRate    float64           `json:"target_rate"`
	DurationS     float64           `json:"duration_s"`
	Requests      uint64            `json:"requests"`
	OK            uint64            `json:"ok"`
	Errors        errorCounts       `json:"errors"`
	StatusCodes   map[string]uint64 `json:"status_codes"`
	AchievedRate  float64           `json:"achieved_rate"`
	Planned       uint64            `json:"planned"`
	Latency       latencyResult     `json:"latency"`
	Seconds       []secondResult    `json:"seconds"`
	FirstError    string            `json:"first_error"`
	Interrupted   bool              `json:"interrupted"`
	WindowS       float64           `json:"window_s"`
}

type errorCounts struct {
	Connect uint64 `json:"connect"`
	Timeout uint64 `json:"timeout"`
	Status  uint64 `json:"status"`
	Other   uint64 `json:"other"`
}

type latencyResult struct {
	Unit    string      `json:"unit"`
	Growth  float64     `json:"growth"`
	Count   uint64      `json:"count"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
	Sum     uint64      `json:"sum"`
	Buckets [][2]uint64 `json:"buckets"`
}

type secondResult struct {
	T        int    `json:"t"`
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	P50      int64  `json:"p50_ns"`
	P95      int64  `json:"p95_ns"`
	P99      int64  `json:"p99_ns"`
}

// progressLine is the line -progress prints to stderr once per second; the
// Python side (leakgate/load/builtin.py) reads it while the run goes on.
type progressLine struct {
	T        int     `json:"t"`
	Requests uint64  `json:"requests"` // cumulative
	Errors   uint64  `json:"errors"`   // cumulative
	Rate     float64 `json:"rate"`     // that second's requests, per second
	P95      int64   `json:"p95_ns"`   // that second's
}

// progress prints second k's line shortly after it ended (or at once when
// the run is over). A line that cannot be written ends the progress lines,
// not the run.
func (r *runner) progress(done <-chan struct{}) {
	enc := json.NewEncoder(r.cfg.Progress)
	var reqs, errs uint64
	over := false
	for k := 1; k <= len(r.secs); k++ {
		if wait := time.Duration(k)*time.Second + 50*time.Millisecond - time.Since(r.start); wait > 0 && !over {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				over = true
			}
		}
		if over && k > r.seconds() {
			return // stopped early: no lines for seconds never run
		}
		n, e, _, p95, _ := r.secs[k-1].Load().summary()
		reqs += n
		errs += e
		line := progressLine{T: k, Requests: reqs, Errors: errs, Rate: float64(n), P95: p95}
		if err := enc.Encode(line); err != nil {
			return
		}
	}
}

func (r *runner) collect(workers []*worker, elapsed time.Duration) *result {
	res := &result{
		SchemaVersion: 1,
		Tool:          "leakgate-loadgen",
		Mode:          "closed",
		Target:        r.cfg.Target,
		Connections:   r.cfg.Connections,
		TargetRate:    r.cfg.Rate,
		StatusCodes:   map[string]uint64{},
		Seconds:       []secondResult{},
		FirstError:    r.firstErr,
	}
	h := new(hist)
	var sent uint64
	var last time.Duration
	codes := make([]uint64, len(workers[0].codes))
	for _, w := range workers {
		h.merge(&w.h)
		res.OK += w.ok
		sent += w.sent
		res.Errors.Connect += w.errs[errConnect]
		res.Errors.Timeout += w.errs[errTimeout]
		res.Errors.Status += w.errs[errStatus]
		res.Errors.Other += w.errs[errOther]
		for c, n := range w.codes {
			codes[c] += n
		}
		last = max(last, w.last)
	}
	for c, n := range codes {
		if n > 0 {
			res.StatusCodes[strconv.Itoa(c)] = n
		}
	}
	e := res.Errors
	res.Requests = res.OK + e.Connect + e.Timeout + e.Status + e.Other
	if res.Requests == 0 {
		last = elapsed
	}
	res.DurationS = last.Seconds()
	window := r.window()
	res.Interrupted = r.isStopped() || r.aborted.Load() // ended early, or requests in flight were cut
	res.WindowS = window.Seconds()
	if r.open {
		res.Mode = "open"
		res.Planned = r.planned
		if res.Interrupted {
			res.Planned = min(r.planned, r.plannedBefore(window))
		}
		res.AchievedRate = float64(sent) / window.Seconds()
	} else {
		res.Planned = res.Requests
		if res.DurationS > 0 {
			res.AchievedRate = float64(res.Requests) / res.DurationS
		}
	}
	res.Latency = latencyResult{Unit: "ns", Growth: growth, Count: h.n, Min: h.min, Max: h.max,
		Sum: h.sum, Buckets: h.sparse()}
	for k := 0; k < r.seconds(); k++ {
		n, e, p50, p95, p99 := r.secs[k].Load().summary()
		res.Seconds = append(res.Seconds, secondResult{T: k + 1, Requests: n, Errors: e, P50: p50, P95: p95, P99: p99})
	}
	return res
}
