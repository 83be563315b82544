package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestClosedLoop(t *testing.T) {
	var newConns atomic.Int64
	var mu sync.Mutex
	seqs := map[string]bool{}
	var bad atomic.Int64
	payload := bytes.Repeat([]byte("x"), 32<<10)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var id string
		switch {
		case r.Method == http.MethodPost:
			body, _ := io.ReadAll(r.Body)
			id = r.Header.Get("X-Id")
			if string(body) != `{"id": `+id+`}` {
				bad.Add(1)
			}
		case strings.HasPrefix(r.URL.Path, "/items/"):
			id = strings.TrimPrefix(r.URL.Path, "/items/")
			if n, err := strconv.Atoi(r.URL.Query().Get("n")); err != nil || n < 1 || n > 9 {
				bad.Add(1)
			}
		default:
			bad.Add(1)
		}
		mu.Lock()
		if seqs[id] {
			bad.Add(1)
		}
		seqs[id] = true
		mu.Unlock()
		w.Write(payload)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	sc := scenario{Requests: []requestSpec{
		{Path: "/items/{seq}?n={rand:1-9}"},
		{Method: "POST", Path: "/items", Headers: map[string]string{"x-id": "{seq}"}, Body: `{"id": {seq}}`},
	}}
	cfg := testConfig(srv.URL, sc)
	var progress bytes.Buffer
	cfg.Progress = &progress
	res := mustRun(t, cfg)
	e := res.Errors
	if res.Requests == 0 || res.OK != res.Requests || e.Connect+e.Timeout+e.Status+e.Other != 0 {
		t.Fatalf("requests %d ok %d errors %+v first_error %q", res.Requests, res.OK, e, res.FirstError)
	}
	if res.Mode != "closed" || res.Planned != res.Requests || res.StatusCodes["200"] != res.OK ||
		res.Latency.Count != res.OK || res.Latency.Min <= 0 || res.Latency.Max < res.Latency.Min {
		t.Errorf("inconsistent result: %+v", res)
	}
	if bad.Load() != 0 {
		t.Errorf("%d requests had a wrong path, body, header or a repeated {seq}", bad.Load())
	}
	if n := newConns.Load(); n > int64(cfg.Connections) {
		t.Errorf("%d connections opened for %d workers: bodies not drained or keep-alive lost", n, cfg.Connections)
	}
	if len(res.Seconds) != 1 || res.Seconds[0].T != 1 || res.Seconds[0].Requests == 0 || res.Seconds[0].P50 <= 0 {
		t.Errorf("seconds: %+v", res.Seconds)
	}
	if res.DurationS < 1 || res.DurationS > 1.5 || math.Abs(res.AchievedRate-float64(res.Requests)/res.DurationS) > 1e-6 {
		t.Errorf("duration_s %v achieved_rate %v", res.DurationS, res.AchievedRate)
	}
	var line map[string]float64
	if err := json.Unmarshal(bytes.TrimSpace(progress.Bytes()), &line); err != nil || line["t"] != 1 || line["requests"] == 0 {
		t.Errorf("progress %q: %v", progress.String(), err)
	}
}

func TestOpenLoopRate(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL, simple("/"))
	cfg.Rate, cfg.Duration = 200, 2*time.Second
	res := mustRun(t, cfg)
	if res.Mode != "open" || res.Planned != 400 || res.Requests != 400 || res.OK != 400 {
		t.Fatalf("mode %s planned %d requests %d ok %d (%q)", res.Mode, res.Planned, res.Requests, res.OK, res.FirstError)
	}
	if rel := math.Abs(res.AchievedRate-200) / 200; rel > 0.03 {
		t.Errorf("achieved %.1f req/s for a target of 200", res.AchievedRate)
	}
	for _, s := range res.Seconds {
		if s.Requests < 190 || s.Requests > 210 {
			t.Errorf("second %d: %d requests, want ~200", s.T, s.Requests)
		}
	}
}

func TestOpenLoopStallIsMeasured(t *testing.T) {
	// The whole server stops for 1 s once, about 1 s into the run (like a
	// long GC pause). Requests planned during the stall must show it.
	var mu sync.Mutex
	var first atomic.Int64
	var stalled atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		mu.Lock()
		if now-first.Load() > int64(time.Second) && stalled.CompareAndSwap(false, true) {
			time.Sleep(time.Second)
		}
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL, simple("/"))
	cfg.Rate, cfg.Duration, cfg.Connections = 100, 3*time.Second, 16
	res := mustRun(t, cfg)
	if !stalled.Load() || res.OK != res.Requests || res.Requests < 290 {
		t.Fatalf("stalled %v requests %d ok %d (%q)", stalled.Load(), res.Requests, res.OK, res.FirstError)
	}
	p50, p99 := bucketQuantile(res, 0.5), bucketQuantile(res, 0.99)
	if p99 < 0.5e9 {
		t.Errorf("p99 %.0f ns: the 1 s stall is missing (coordinated omission)", p99)
	}
	if p50 > 0.1e9 {
		t.Errorf("p50 %.0f ns: expected most requests to be fast", p50)
	}
	if res.Latency.Max < int64(900*time.Millisecond) {
		t.Errorf("max %d ns < 0.9 s", res.Latency.Max)
	}
}

func TestUsageErrors(t *testing.T) {
	zero := 0.0
	good := simple("/")
	for name, cfg := range map[string]config{
		"non-loopback IP":   testConfig("http://10.1.2.3:8080", good),
		"non-loopback name": testConfig("http://example.com/", good),
		"https":             testConfig("https://127.0.0.1:8443", good),
		"bad template":      testConfig("http://127.0.0.1:1", simple("/a/{rand:5-1}")),
		"unknown template":  testConfig("http://127.0.0.1:1", simple("/a/{foo}")),
		"relative path":     testConfig("http://127.0.0.1:1", simple("a")),
		"zero weight": testConfig("http://127.0.0.1:1",
			scenario{Requests: []requestSpec{{Path: "/", Weight: &zero}}}),
		"no requests": testConfig("http://127.0.0.1:1", scenario{}),
	} {
		_, err := run(cfg)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%s: got %v, want a usage error", name, err)
		}
	}
	_, err := run(testConfig("http://127.0.0.1:1", simple("/", "/x/{foo}")))
	if err == nil || !strings.Contains(err.Error(), "requests[1]") || !strings.Contains(err.Error(), "{foo}") {
		t.Errorf("error should name the entry and the template: %v", err)
	}
	for _, h := range []string{"127.0.0.1", "127.9.8.7", "::1", "localhost", "LOCALHOST"} {
		if !isLoopbackHost(h) {
			t.Errorf("%s not accepted as loopback", h)
		}
	}
	for _, h := range []string{"0.0.0.0", "10.0.0.1", "::", "example.com", "128.0.0.1"} {
		if isLoopbackHost(h) {
			t.Errorf("%s accepted as loopback", h)
		}
	}
}
