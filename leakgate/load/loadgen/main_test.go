package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets TestCLI run this test binary as the loadgen command.
func TestMain(m *testing.M) {
	if os.Getenv("LOADGEN_TEST_EXEC_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func simple(paths ...string) scenario {
	var sc scenario
	for _, p := range paths {
		sc.Requests = append(sc.Requests, requestSpec{Path: p})
	}
	return sc
}

func testConfig(target string, sc scenario) config {
	return config{Target: target, Scenario: sc, Connections: 4, Duration: time.Second,
		Timeout: 2 * time.Second, Seed: 1}
}

func mustRun(t *testing.T, cfg config) *result {
	t.Helper()
	res, err := run(cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

// bucketQuantile reads a percentile back from the output's sparse buckets,
// as a consumer of the JSON would.
func bucketQuantile(res *result, q float64) float64 {
	rank := uint64(math.Ceil(q * float64(res.Latency.Count)))
	var cum uint64
	for _, b := range res.Latency.Buckets {
		cum += b[1]
		if cum >= rank {
			return math.Pow(growth, float64(b[0])+0.5)
		}
	}
	return math.NaN()
}

func TestParseTemplate(t *testing.T) {
	x := &expander{rng: rand.New(rand.NewSource(1)), seqSrc: new(atomic.Uint64)}
	for _, tc := range []struct{ in, want string }{
		{"/plain/path?q=1", "/plain/path?q=1"},
		{"/items/{seq}", "/items/1"},
		{"{{seq}", "{seq}"},
		{"a{{b{{", "a{b{"},
		{`{"id": {seq}, "n": {rand:7-7}}`, `{"id": 2, "n": 7}`},
		{"{", "{"},
		{"{ }", "{ }"},
		{"", ""},
	} {
		tp, err := parseTemplate(tc.in)
		if err != nil {
			t.Fatalf("parseTemplate(%q): %v", tc.in, err)
		}
		x.seq = 0
		if got := string(x.appendTo(nil, &tp)); got != tc.want {
			t.Errorf("expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"{rand:5-1}", "{rand:x}", "{foo}", "/a/{seq", "{rand:1-}",
		"{rand:-1-5}", "{rand:1-2-3}", "{uuid", "{Seq}", "{rand:0-9223372036854775807}"} {
		_, err := parseTemplate("/p" + bad + "/q")
		if err == nil {
			t.Errorf("parseTemplate(%q): no error", bad)
			continue
		}
		name := bad
		if i := strings.IndexByte(bad, '{'); i > 0 {
			name = bad[i:]
		}
		if !strings.Contains(err.Error(), strings.TrimSuffix(name, "}")) {
			t.Errorf("error %q does not name %q", err, bad)
		}
	}
}

func TestExpandSeqRandUUID(t *testing.T) {
	var src atomic.Uint64
	tp, err := parseTemplate("/p/{seq}/{seq}")
	if err != nil {
		t.Fatal(err)
	}
	const workers, per = 8, 2000
	got := make([][]uint64, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			x := &expander{rng: rand.New(rand.NewSource(int64(w))), seqSrc: &src}
			var buf []byte
			for i := 0; i < per; i++ {
				x.seq = 0 // a new request
				buf = x.appendTo(buf[:0], &tp)
				parts := strings.Split(string(buf), "/")
				if parts[2] != parts[3] {
					t.Errorf("one request got two {seq} values: %q", buf)
					return
				}
				n, _ := strconv.ParseUint(parts[2], 10, 64)
				got[w] = append(got[w], n)
			}
		}(w)
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for w, ns := range got {
		for i, n := range ns {
			if i > 0 && n <= ns[i-1] {
				t.Fatalf("worker %d: {seq} not increasing: %d after %d", w, n, ns[i-1])
			}
			if seen[n] {
				t.Fatalf("{seq} %d seen twice", n)
			}
			seen[n] = true
		}
	}
	for n := uint64(1); n <= workers*per; n++ {
		if !seen[n] {
			t.Fatalf("{seq} %d missing: not a gapless count from 1", n)
		}
	}

	x := &expander{rng: rand.New(rand.NewSource(2)), seqSrc: &src}
	rt, _ := parseTemplate("{rand:3-7}")
	counts := map[int]int{}
	for i := 0; i < 5000; i++ {
		n, err := strconv.Atoi(string(x.appendTo(nil, &rt)))
		if err != nil || n < 3 || n > 7 {
			t.Fatalf("{rand:3-7} gave %d (%v)", n, err)
		}
		counts[n]++
	}
	if len(counts) != 5 {
		t.Errorf("{rand:3-7} did not hit every value: %v", counts)
	}

	ut, _ := parseTemplate("{uuid}")
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	uuids := map[string]bool{}
	for i := 0; i < 1000; i++ {
		u := string(x.appendTo(nil, &ut))
		if !re.MatchString(u) {
			t.Fatalf("{uuid} gave %q", u)
		}
		uuids[u] = true
	}
	if len(uuids) != 1000 {
		t.Errorf("{uuid} repeated: %d distinct of 1000", len(uuids))
	}
}

func TestWeightChiSquare(t *testing.T) {
	weights := []float64{1, 3, 6}
	var sc scenario
	for i := range weights {
		sc.Requests = append(sc.Requests, requestSpec{Path: fmt.Sprintf("/%d", i), Weight: &weights[i]})
	}
	r, err := newRunner(testConfig("http://127.0.0.1:1", sc))
	if err != nil {
		t.Fatal(err)
	}
	for _, seed := range []int64{1, 2, 3} {
		w := r.newWorker(0, seed)
		const n = 20000
		obs := make([]float64, len(weights))
		for i := 0; i < n; i++ {
			obs[w.pick().idx]++
		}
		chi2 := 0.0
		for i, wt := range weights {
			exp := n * wt / 10
			chi2 += (obs[i] - exp) * (obs[i] - exp) / exp
		}
		// 2 degrees of freedom, 1% level.
		if chi2 > 9.21 {
			t.Errorf("seed %d: picks %v, chi-square %.2f > 9.21", seed, obs, chi2)
		}
	}
}

func TestHistogramPercentiles(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	const n = 100000
	vals := make([]int64, n)
	h := new(hist)
	var sum uint64
	for i := range vals {
		// log-uniform over 10 µs .. 10 s
		v := int64(math.Exp(math.Log(1e4) + rng.Float64()*(math.Log(1e10)-math.Log(1e4))))
		vals[i] = v
		sum += uint64(v)
		h.add(bucketOf(v), v)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if h.n != n || h.sum != sum || h.min != vals[0] || h.max != vals[n-1] {
		t.Fatalf("count/sum/min/max = %d/%d/%d/%d, want %d/%d/%d/%d",
			h.n, h.sum, h.min, h.max, n, sum, vals[0], vals[n-1])
	}
	for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999} {
		exact := float64(vals[int(math.Ceil(q*n))-1])
		for name, got := range map[string]float64{
			"hist":    float64(h.quantile(q)),
			"buckets": float64(quantileOf(h.counts[:], h.n, q)),
		} {
			if rel := math.Abs(got-exact) / exact; rel > 0.01 {
				t.Errorf("%s p%v = %v, exact %v: off by %.3f%%", name, q*100, got, exact, rel*100)
			}
		}
	}
	if bucketOf(0) != 0 || bucketOf(-5) != 0 || bucketOf(1) != 0 || bucketOf(math.MaxInt64) != nBuckets-1 {
		t.Errorf("edge buckets wrong")
	}
}

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

func TestConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig("http://"+addr, simple("/"))
	cfg.Duration, cfg.Connections = 300*time.Millisecond, 2
	res := mustRun(t, cfg)
	if res.Requests == 0 || res.Errors.Connect != res.Requests || res.OK != 0 || res.Latency.Count != 0 ||
		len(res.Latency.Buckets) != 0 || len(res.StatusCodes) != 0 {
		t.Fatalf("requests %d errors %+v ok %d latency %d", res.Requests, res.Errors, res.OK, res.Latency.Count)
	}
	if !strings.Contains(res.FirstError, "refused") {
		t.Errorf("first_error %q", res.FirstError)
	}
}

func TestStatusErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "boom")
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL, simple("/"))
	cfg.Duration = 300 * time.Millisecond
	res := mustRun(t, cfg)
	if res.Requests == 0 || res.Errors.Status != res.Requests || res.StatusCodes["500"] != res.Requests ||
		res.OK != 0 || res.Latency.Count != 0 {
		t.Fatalf("requests %d errors %+v codes %v", res.Requests, res.Errors, res.StatusCodes)
	}
	if !strings.Contains(res.FirstError, "500") {
		t.Errorf("first_error %q", res.FirstError)
	}
	// The same server is fine when 500 is what the scenario expects.
	cfg.Scenario.Requests[0].ExpectStatus = 500
	res = mustRun(t, cfg)
	if res.Requests == 0 || res.OK != res.Requests {
		t.Fatalf("expect_status 500: requests %d ok %d errors %+v", res.Requests, res.OK, res.Errors)
	}
}

func TestTimeoutErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer srv.Close()
	cfg := testConfig(srv.URL, simple("/slow"))
	cfg.Duration, cfg.Timeout, cfg.Connections = 500*time.Millisecond, 100*time.Millisecond, 2
	start := time.Now()
	res := mustRun(t, cfg)
	if res.Requests == 0 || res.Errors.Timeout != res.Requests || res.OK != 0 || res.Latency.Count != 0 {
		t.Fatalf("requests %d errors %+v ok %d", res.Requests, res.Errors, res.OK)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("run took %v: in-flight requests not bounded by the timeout", el)
	}
}

func TestResponseFraming(t *testing.T) {
	// Chunked, close-delimited, Connection: close, HEAD, 204 and 1xx
	// responses must all complete as ok, on as few connections as allowed.
	var newConns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			for i := 0; i < 3; i++ {
				io.WriteString(w, strings.Repeat("c", 1000))
				w.(http.Flusher).Flush()
			}
		case "/close":
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		case "/head":
			w.Header().Set("Content-Length", "1000")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/early":
			w.Header().Set("Link", "</a.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "after hints")
		case "/host":
			if r.Host != "svc.local:1" || r.Header.Get("X-Q") != r.URL.Query().Get("q") {
				w.WriteHeader(http.StatusBadRequest)
			}
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	for _, spec := range []requestSpec{
		{Path: "/chunked"}, {Method: "HEAD", Path: "/head"}, {Path: "/nocontent"},
		{Path: "/early"}, {Path: "/host?q={seq}", Headers: map[string]string{"host": "svc.local:1", "X-Q": "{seq}"}},
		{Path: "/close"},
	} {
		newConns.Store(0)
		cfg := testConfig(srv.URL, scenario{Requests: []requestSpec{spec}})
		cfg.Duration, cfg.Connections = 200*time.Millisecond, 2
		res := mustRun(t, cfg)
		if res.Requests == 0 || res.OK != res.Requests {
			t.Errorf("%s %s: requests %d ok %d errors %+v codes %v (%q)", spec.Method, spec.Path,
				res.Requests, res.OK, res.Errors, res.StatusCodes, res.FirstError)
		}
		n := newConns.Load()
		if spec.Path == "/close" {
			if n < int64(res.Requests) {
				t.Errorf("/close: %d connections for %d requests", n, res.Requests)
			}
		} else if n > 2 {
			t.Errorf("%s: %d connections opened for 2 workers", spec.Path, n)
		}
	}
}

// cannedServer answers every request on 127.0.0.1 with response, closing
// the connection after it when closeAfter. It counts connections.
func cannedServer(t *testing.T, response string, closeAfter bool) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := new(atomic.Int64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					for { // the request: GET without a body, up to a blank line
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						if line == "\r\n" {
							break
						}
					}
					if _, err := io.WriteString(c, response); err != nil || closeAfter {
						return
					}
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), conns
}

func TestResponseParsing(t *testing.T) {
	for _, tc := range []struct {
		name, response string
		closeAfter     bool
		ok             bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false, true},
		{"no reason phrase", "HTTP/1.1 204\r\n\r\n", false, true},
		{"bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi", false, true},
		{"chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nContent-Length: 99\r\n\r\n" +
			"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n", false, true},
		{"interim", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true},
		{"HTTP/1.0 to EOF", "HTTP/1.0 200 OK\r\n\r\nuntil the end", true, true},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx", false, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", true, false},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", true, false},
		{"coded to EOF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nabc", true, true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", true, false},
		{"bad length 2", "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", true, false},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", true, false},
		{"short chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc", true, false},
	} {
		target, conns := cannedServer(t, tc.response, tc.closeAfter)
		cfg := testConfig(target, simple("/"))
		cfg.Duration, cfg.Connections = 150*time.Millisecond, 2
		res := mustRun(t, cfg)
		if res.Requests == 0 {
			t.Errorf("%s: no requests", tc.name)
			continue
		}
		if tc.ok && res.OK != res.Requests || !tc.ok && res.Errors.Other != res.Requests {
			t.Errorf("%s: requests %d ok %d errors %+v (%q)", tc.name, res.Requests, res.OK, res.Errors, res.FirstError)
		}
		if !tc.closeAfter && conns.Load() > 2 {
			t.Errorf("%s: %d connections for 2 workers: keep-alive lost", tc.name, conns.Load())
		}
	}
}

func TestIdleConnectionClosedByServer(t *testing.T) {
	// The server drops keep-alive connections idle for 300 ms; requests
	// 2 s apart must not fail because of it.
	var newConns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.IdleTimeout = 300 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			newConns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	cfg := testConfig(srv.URL, simple("/"))
	cfg.Rate, cfg.Duration, cfg.Connections = 0.5, 4100*time.Millisecond, 1
	res := mustRun(t, cfg)
	if res.Requests != 3 || res.OK != 3 {
		t.Errorf("requests %d ok %d errors %+v (%q)", res.Requests, res.OK, res.Errors, res.FirstError)
	}
	if newConns.Load() < 2 {
		t.Errorf("server idle timeout did not close the connection (%d connections)", newConns.Load())
	}
}

func TestBrokenResponses(t *testing.T) {
	// A response cut short, and a connection dropped without any response
	// (as when a handler panics), are "other" errors, not retried away.
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if r.URL.Path == "/short" {
			io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
		}
		conn.Close()
	}))
	defer srv.Close()
	for _, path := range []string{"/short", "/drop"} {
		calls.Store(0)
		cfg := testConfig(srv.URL, simple(path))
		cfg.Duration, cfg.Connections = 200*time.Millisecond, 2
		res := mustRun(t, cfg)
		if res.Requests == 0 || res.Errors.Other != res.Requests || res.Latency.Count != 0 {
			t.Errorf("%s: requests %d errors %+v", path, res.Requests, res.Errors)
		}
		if uint64(calls.Load()) != res.Requests {
			t.Errorf("%s: server saw %d requests, loadgen counted %d", path, calls.Load(), res.Requests)
		}
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

func TestCLI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	scPath := filepath.Join(dir, "scenario.json")
	if err := os.WriteFile(scPath, []byte(`{"requests": [{"path": "/p/{seq}", "weight": 2}, {"method": "HEAD", "path": "/"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "out.json")
	cmd := func(args ...string) (int, string) {
		c := exec.Command(os.Args[0], args...)
		c.Env = append(os.Environ(), "LOADGEN_TEST_EXEC_MAIN=1")
		var stderr bytes.Buffer
		c.Stderr = &stderr
		err := c.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, stderr.String()
	}

	code, stderr := cmd("-target", "http://192.0.2.1:80", "-scenario", scPath)
	if code != 2 || !strings.Contains(stderr, "-target") || !strings.Contains(stderr, "loopback") {
		t.Errorf("non-loopback target: exit %d, stderr %q", code, stderr)
	}
	code, stderr = cmd("-target", srv.URL, "-scenario", scPath, "-connections", "0")
	if code != 2 || !strings.Contains(stderr, "-connections") {
		t.Errorf("-connections 0: exit %d, stderr %q", code, stderr)
	}

	code, stderr = cmd("-target", srv.URL, "-scenario", scPath, "-duration", "1100ms",
		"-connections", "2", "-out", outPath, "-progress")
	if code != 0 {
		t.Fatalf("run: exit %d, stderr %q", code, stderr)
	}
	sc := bufio.NewScanner(strings.NewReader(stderr))
	lines := 0
	for sc.Scan() {
		var p struct {
			T        int     `json:"t"`
			Requests int64   `json:"requests"`
			Errors   *int64  `json:"errors"`
			Rate     float64 `json:"rate"`
			P95      int64   `json:"p95_ns"`
		}
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil || p.T != lines+1 || p.Errors == nil || p.Rate <= 0 || p.P95 <= 0 {
			t.Errorf("progress line %q: %v", sc.Text(), err)
		}
		lines++
	}
	if lines != 1 {
		t.Errorf("%d progress lines for 1.1 s, want 1", lines)
	}
	data, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema_version", "tool", "mode", "target", "connections", "target_rate",
		"duration_s", "requests", "ok", "errors", "status_codes", "achieved_rate", "planned", "latency",
		"seconds", "first_error"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("output lacks %q", k)
		}
	}
	if doc["schema_version"] != 1.0 || doc["tool"] != "leakgate-loadgen" || doc["ok"].(float64) <= 0 {
		t.Errorf("output: %s", data)
	}
	lat := doc["latency"].(map[string]any)
	if lat["unit"] != "ns" || lat["growth"] != 1.02 || len(lat["buckets"].([]any)) == 0 {
		t.Errorf("latency: %v", lat)
	}
}

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

// The command: SIGTERM writes the partial result and exits 0.
func TestCLISigtermWritesThePartialResult(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	dir := t.TempDir()
	scPath := filepath.Join(dir, "scenario.json")
	if err := os.WriteFile(scPath, []byte(`{"requests": [{"path": "/"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "out.json")
	c := exec.Command(os.Args[0], "-target", srv.URL, "-scenario", scPath, "-duration", "23h",
		"-connections", "2", "-out", outPath)
	c.Env = append(os.Environ(), "LOADGEN_TEST_EXEC_MAIN=1")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; stderr %q", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		t.Fatal("loadgen did not exit within 10 s of SIGTERM")
	}
	data, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var res result
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.OK == 0 || res.WindowS < 1 || res.WindowS > 5 || len(res.Seconds) > 5 {
		t.Errorf("result: interrupted %v ok %d window_s %v seconds %d", res.Interrupted, res.OK, res.WindowS, len(res.Seconds))
	}
}
