package main

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A stop (SIGTERM in the command) ends the window where it is: the result
// covers the window that ran, not the one configured.
func TestStopEndsTheWindowWithItsResult(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	for _, rate := range []float64{0, 400} {
		cfg := testConfig(srv.URL, simple("/"))
		cfg.Duration, cfg.Rate, cfg.StopGrace = time.Hour, rate, time.Second
		stop := make(chan struct{})
		cfg.Stop = stop
		var progress bytes.Buffer
		cfg.Progress = &progress
		time.AfterFunc(1500*time.Millisecond, func() { close(stop) })
		began := time.Now()
		res := mustRun(t, cfg)
		if took := time.Since(began); took > 4*time.Second {
			t.Errorf("rate %v: the run took %v after a stop at 1.5 s", rate, took)
		}
		if !res.Interrupted || res.WindowS < 1.4 || res.WindowS > 3 {
			t.Errorf("rate %v: interrupted %v window_s %v", rate, res.Interrupted, res.WindowS)
		}
		e := res.Errors
		if res.Requests == 0 || res.OK != res.Requests || e.Connect+e.Timeout+e.Status+e.Other != 0 {
			t.Errorf("rate %v: requests %d ok %d errors %+v (%q)", rate, res.Requests, res.OK, e, res.FirstError)
		}
		if res.DurationS > 3 || len(res.Seconds) != 1 {
			t.Errorf("rate %v: duration_s %v, %d seconds (want the 1 whole second run)", rate, res.DurationS, len(res.Seconds))
		}
		if rate > 0 {
			want := uint64(math.Ceil(res.WindowS * rate))
			if res.Planned+1 < want || res.Planned > want+1 || math.Abs(res.AchievedRate-rate)/rate > 0.05 {
				t.Errorf("open loop: planned %d (want ~%d) achieved %.1f req/s", res.Planned, want, res.AchievedRate)
			}
		}
		if lines := strings.Count(progress.String(), "\n"); lines != 1 {
			t.Errorf("rate %v: %d progress lines, want 1: %q", rate, lines, progress.String())
		}
	}
}

// Requests still in flight after the grace are cut, and counted nowhere:
// the service neither served nor failed them.
func TestStopCutsRequestsInFlightAfterTheGrace(t *testing.T) {
	release := make(chan struct{})
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) > 20 {
			<-release // hangs: the timeout (1 min) is far away
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	defer close(release)
	cfg := testConfig(srv.URL, simple("/"))
	cfg.Duration, cfg.Timeout, cfg.StopGrace = time.Hour, time.Minute, 200*time.Millisecond
	stop := make(chan struct{})
	cfg.Stop = stop
	time.AfterFunc(500*time.Millisecond, func() { close(stop) })
	began := time.Now()
	res := mustRun(t, cfg)
	if took := time.Since(began); took > 3*time.Second {
		t.Errorf("the run took %v: requests in flight were not cut after the grace", took)
	}
	e := res.Errors
	if !res.Interrupted || res.Requests != 20 || res.OK != 20 || e.Connect+e.Timeout+e.Status+e.Other != 0 {
		t.Errorf("interrupted %v requests %d ok %d errors %+v (%q)", res.Interrupted, res.Requests, res.OK, e, res.FirstError)
	}
}

// A stop just after the window, while requests are still in flight (they
// would otherwise run to their -timeout), still cuts them after the grace: the
// result is written promptly, with the window as configured.
func TestStopAfterTheWindowStillCutsAfterTheGrace(t *testing.T) {
	for _, rate := range []float64{0, 200} {
		release := make(chan struct{})
		var served atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if served.Add(1) > 20 {
				<-release // hangs: the timeout (8 s) is far away
			}
			io.WriteString(w, "ok")
		}))
		cfg := testConfig(srv.URL, simple("/"))
		cfg.Rate, cfg.Duration, cfg.Timeout, cfg.StopGrace = rate, time.Second, 8*time.Second, 200*time.Millisecond
		stop := make(chan struct{})
		cfg.Stop = stop
		time.AfterFunc(1300*time.Millisecond, func() { close(stop) }) // after the 1 s window
		began := time.Now()
		res := mustRun(t, cfg)
		took := time.Since(began)
		close(release)
		srv.Close()
		if took > 3*time.Second {
			t.Errorf("rate %v: the run took %v after a stop at 1.3 s: requests in flight were not cut after the grace", rate, took)
		}
		e := res.Errors
		if res.Requests != 20 || res.OK != 20 || e.Connect+e.Timeout+e.Status+e.Other != 0 {
			t.Errorf("rate %v: requests %d ok %d errors %+v (%q)", rate, res.Requests, res.OK, e, res.FirstError)
		}
		if !res.Interrupted || res.WindowS != 1 || len(res.Seconds) != 1 {
			t.Errorf("rate %v: interrupted %v window_s %v seconds %d (want true, 1, 1)", rate, res.Interrupted, res.WindowS, len(res.Seconds))
		}
	}
}

// A connection whose deadline cannot be set when the grace is over is cut by
// closing it.
func TestStopClosesAConnectionWithoutDeadline(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1", simple("/"))
	cfg.StopGrace = 0
	r, err := newRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.start = time.Now()
	w := r.newWorker(0, 1)
	bad := new(noDeadlineConn)
	w.conn = bad
	r.stop([]*worker{w})
	if !r.isStopped() || !r.aborted.Load() || !bad.closed.Load() {
		t.Errorf("stopped %v aborted %v closed %v; want all true", r.isStopped(), r.aborted.Load(), bad.closed.Load())
	}
}
