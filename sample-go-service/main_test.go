package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets TestMainProcess re-run this test binary as the real service.
func TestMain(m *testing.M) {
	if os.Getenv("SAMPLE_GO_SERVICE_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// resetLeakState empties the process-wide stores the leak modes write to.
func resetLeakState() {
	auditLog.Lock()
	auditLog.seq, auditLog.entries = 0, make(map[uint64][]byte)
	auditLog.Unlock()
	responseCache.Lock()
	responseCache.m = make(map[string]*cachedResponse)
	responseCache.Unlock()
	fifoCache.Lock()
	fifoCache.m = make(map[string]*cachedResponse, boundedCacheCap)
	fifoCache.ring = [boundedCacheCap]string{}
	fifoCache.next = 0
	fifoCache.Unlock()
	orderIndex.Lock()
	orderIndex.ids = nil
	orderIndex.Unlock()
	outbox.Lock()
	outbox.items, outbox.head, outbox.sent = nil, 0, 0
	outbox.Unlock()
}

type testApp struct {
	*app
	h      http.Handler
	cancel context.CancelFunc // cancels appCtx
}

// newTestApp builds an app with fresh leak state, its own pricing upstream
// and its own mux; everything is torn down when the test ends.
func newTestApp(t *testing.T, cfg config) *testApp {
	t.Helper()
	if cfg.leakBytes == 0 {
		cfg.leakBytes = defaultLeakBytes
	}
	resetLeakState()
	ctx, cancel := context.WithCancel(context.Background())
	up, err := startUpstream()
	if err != nil {
		t.Fatal(err)
	}
	a := newApp(ctx, cfg, up.URL)
	mux := http.NewServeMux()
	registerRoutes(mux, a)
	t.Cleanup(func() {
		cancel()
		_ = up.Close()
		a.client.CloseIdleConnections()
		resetLeakState()
	})
	return &testApp{app: a, h: countRequests(mux), cancel: cancel}
}

func (ta *testApp) do(method, target, body string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	rec := httptest.NewRecorder()
	ta.h.ServeHTTP(rec, httptest.NewRequest(method, target, rd))
	return rec
}

func decode(t *testing.T, rec *httptest.ResponseRecorder, v any) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json", ct)
	}
	if err := json.Unmarshal(rec.Body.Bytes(), v); err != nil {
		t.Fatalf("decode %q: %v", rec.Body.String(), err)
	}
}

func wantStatus(t *testing.T, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("status = %d, want %d (body %q)", rec.Code, want, rec.Body.String())
	}
}

func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	wantStatus(t, rec, status)
	var e map[string]string
	decode(t, rec, &e)
	if e["error"] == "" {
		t.Fatalf("no error message in %q", rec.Body.String())
	}
}

// ---------------------------------------------------------------------------
// Handlers

func TestHealthz(t *testing.T) {
	ta := newTestApp(t, config{})
	rec := ta.do("GET", "/healthz", "")
	wantStatus(t, rec, http.StatusOK)
	if got := strings.TrimSpace(rec.Body.String()); got != `{"status":"ok"}` {
		t.Fatalf("body = %s", got)
	}
	rec = ta.do("POST", "/healthz", "")
	wantError(t, rec, http.StatusMethodNotAllowed)
	if rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow = %q", rec.Header().Get("Allow"))
	}
}

func TestMetricsUseClientGolangNames(t *testing.T) {
	ta := newTestApp(t, config{})
	rec := ta.do("GET", "/metrics", "")
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics = %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	values := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(rec.Body.String()), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("malformed line %q", line)
		}
		values[name] = value
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_memstats_heap_objects", "go_memstats_next_gc_bytes", "go_gc_duration_seconds_count"} {
		if values[name] == "" {
			t.Errorf("/metrics has no %s:\n%s", name, rec.Body.String())
		}
	}
}

func TestIndex(t *testing.T) {
	ta := newTestApp(t, config{})
	rec := ta.do("GET", "/", "")
	wantStatus(t, rec, http.StatusOK)
	var idx struct {
		Service   string     `json:"service"`
		Endpoints []endpoint `json:"endpoints"`
	}
	decode(t, rec, &idx)
	paths := map[string]bool{}
	for _, e := range idx.Endpoints {
		paths[e.Method+" "+e.Path] = true
	}
	for _, p := range []string{"GET /healthz", "GET /products/{sku}", "POST /orders", "GET /orders/{id}", "GET /debug/vars"} {
		if !paths[p] {
			t.Errorf("index lacks %s: %s", p, rec.Body.String())
		}
	}
	wantError(t, ta.do("GET", "/nope", ""), http.StatusNotFound)
	wantError(t, ta.do("DELETE", "/", ""), http.StatusMethodNotAllowed)
}

func TestProduct(t *testing.T) {
	ta := newTestApp(t, config{})
	rec := ta.do("GET", "/products/42", "")
	wantStatus(t, rec, http.StatusOK)
	var p product
	decode(t, rec, &p)
	if p.SKU != "42" || p.Name == "" || p.Currency != "EUR" || len(p.Tags) != 2 ||
		p.PriceCents < 199 || p.PriceCents > 99998 || len(p.Description) < 500 {
		t.Fatalf("unexpected product %+v", p)
	}
	if again := ta.do("GET", "/products/42", ""); again.Body.String() != rec.Body.String() {
		t.Fatalf("product is not deterministic:\n%s\n%s", rec.Body, again.Body)
	}
	if other := ta.do("GET", "/products/43", ""); other.Body.String() == rec.Body.String() {
		t.Fatal("different skus rendered the same product")
	}
	wantStatus(t, ta.do("HEAD", "/products/42", ""), http.StatusOK)
	wantError(t, ta.do("GET", "/products/", ""), http.StatusNotFound)
	rec = ta.do("POST", "/products/42", "")
	wantError(t, rec, http.StatusMethodNotAllowed)
	if rec.Header().Get("Allow") == "" {
		t.Fatal("405 without Allow header")
	}
}

func TestProductUpstreamRefresh(t *testing.T) {
	ta := newTestApp(t, config{})
	want := ta.do("GET", "/products/7", "").Body.String()
	before := upstreamRefreshes.Value()
	for i := 2; i <= 2*upstreamEvery; i++ {
		rec := ta.do("GET", "/products/7", "")
		wantStatus(t, rec, http.StatusOK)
		if rec.Body.String() != want {
			t.Fatalf("view %d differs (upstream price must match local price)", i)
		}
	}
	if got := upstreamRefreshes.Value() - before; got != 2 {
		t.Fatalf("upstream refreshes = %d, want 2 (1 in %d views)", got, upstreamEvery)
	}
}

func TestOrders(t *testing.T) {
	ta := newTestApp(t, config{})
	rec := ta.do("POST", "/orders", `{"sku":"42","qty":3}`)
	wantStatus(t, rec, http.StatusCreated)
	var o order
	decode(t, rec, &o)
	var p product
	decode(t, ta.do("GET", "/products/42", ""), &p)
	if o.ID == 0 || o.SKU != "42" || o.Qty != 3 || o.UnitPriceCents != p.PriceCents ||
		o.TotalCents != 3*p.PriceCents || o.Name != p.Name {
		t.Fatalf("unexpected order %+v for product %+v", o, p)
	}
	loc := rec.Header().Get("Location")
	if loc != "/orders/"+strconv.FormatUint(o.ID, 10) {
		t.Fatalf("Location = %q", loc)
	}
	got := ta.do("GET", loc, "")
	wantStatus(t, got, http.StatusOK)
	if strings.TrimSpace(got.Body.String()) != strings.TrimSpace(rec.Body.String()) {
		t.Fatalf("GET %s = %s, want %s", loc, got.Body, rec.Body)
	}

	for _, body := range []string{`{bad`, ``, `{"sku":"","qty":1}`, `{"sku":"x","qty":0}`,
		`{"sku":"x","qty":100000}`, `{"sku":"` + strings.Repeat("x", maxSKULen+1) + `","qty":1}`} {
		wantError(t, ta.do("POST", "/orders", body), http.StatusBadRequest)
	}
	wantError(t, ta.do("GET", "/orders", ""), http.StatusMethodNotAllowed)
	wantError(t, ta.do("POST", "/orders/1", `{}`), http.StatusMethodNotAllowed)
	for _, path := range []string{"/orders/", "/orders/abc", "/orders/0", "/orders/999999"} {
		wantError(t, ta.do("GET", path, ""), http.StatusNotFound)
	}
}

func TestOrderStoreIsBounded(t *testing.T) {
	var s orderStore
	first := s.add(order{SKU: "a"})
	var last order
	for i := 0; i < orderRingSize; i++ {
		last = s.add(order{SKU: "b"})
	}
	if _, ok := s.get(first.ID); ok {
		t.Fatal("oldest order still present after the ring wrapped")
	}
	if o, ok := s.get(last.ID); !ok || o.SKU != "b" {
		t.Fatalf("latest order missing: %+v %v", o, ok)
	}
}

// ---------------------------------------------------------------------------
// Configuration

func TestListenAddr(t *testing.T) {
	for _, tc := range []struct{ flag, port, want string }{
		{"", "", "127.0.0.1:8080"},
		{"", "9000", "127.0.0.1:9000"},
		{"", "0", "127.0.0.1:0"},
		{"0.0.0.0:7000", "9000", "0.0.0.0:7000"},
		{"127.0.0.1:0", "", "127.0.0.1:0"},
	} {
		if got := listenAddr(tc.flag, tc.port); got != tc.want {
			t.Errorf("listenAddr(%q, %q) = %q, want %q", tc.flag, tc.port, got, tc.want)
		}
	}
}

type fakeAddr string

func (a fakeAddr) Network() string { return "tcp" }
func (a fakeAddr) String() string  { return string(a) }

func TestBaseURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:1234": "http://127.0.0.1:1234",
		"[::]:1234":      "http://127.0.0.1:1234",
		"0.0.0.0:80":     "http://127.0.0.1:80",
		"[::1]:5":        "http://[::1]:5",
	} {
		if got := baseURL(fakeAddr(in)); got != want {
			t.Errorf("baseURL(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestParseSlow(t *testing.T) {
	for in, want := range map[string]int{"": 0, "0": 0, "20": 20, "20%": 20, "100": 100, " 5 ": 5} {
		if got, err := parseSlow(in); err != nil || got != want {
			t.Errorf("parseSlow(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"abc", "-1", "1.5", "100001", "%"} {
		if _, err := parseSlow(in); err == nil {
			t.Errorf("parseSlow(%q) accepted", in)
		}
	}
	if slowRounds(20) != baseRounds/5 || slowRounds(100) != baseRounds || slowRounds(0) != 0 {
		t.Fatalf("slowRounds: 20%%->%d 100%%->%d", slowRounds(20), slowRounds(100))
	}
	if stockWait(4*time.Millisecond, 20) != 4800*time.Microsecond || stockWait(0, 50) != 0 {
		t.Fatalf("stockWait(4ms, 20%%) = %s", stockWait(4*time.Millisecond, 20))
	}
	for in, want := range map[string]time.Duration{"": defaultStockLatency, "0s": 0, "2ms": 2 * time.Millisecond} {
		if got, err := parseStockLatency(in); err != nil || got != want {
			t.Errorf("parseStockLatency(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"4", "-1ms", "fast", "1h"} {
		if _, err := parseStockLatency(in); err == nil {
			t.Errorf("parseStockLatency(%q) accepted", in)
		}
	}
	// SLOW only adds cost; the product is unchanged.
	fast := (&app{}).product("sku-1")
	slow := (&app{cfg: config{slow: 200}}).product("sku-1")
	if fast.PriceCents != slow.PriceCents || fast.Description != slow.Description {
		t.Fatal("SLOW changed the product")
	}
}

func TestParseCPU(t *testing.T) {
	for in, want := range map[string]int{"": 0, "0": 0, "20": 20, "20%": 20, "1000": 1000, " 5 ": 5} {
		if got, err := parseCPU(in); err != nil || got != want {
			t.Errorf("parseCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"abc", "-1", "1.5", "1001", "%", "20ms"} {
		if _, err := parseCPU(in); err == nil {
			t.Errorf("parseCPU(%q) accepted", in)
		} else if !strings.Contains(err.Error(), "CPU="+strconv.Quote(in)) {
			t.Errorf("parseCPU(%q) error %q does not name the variable and value", in, err)
		}
	}
}

func TestParseAlloc(t *testing.T) {
	for in, want := range map[string]int{
		"": 0, "0": 0, "0KiB": 0, "16384": 16384, "16KiB": 16 << 10, " 2KiB ": 2048,
		"1MiB": 1 << 20, "64MiB": 64 << 20, "65536KiB": 64 << 20, "67108864": 64 << 20,
	} {
		if got, err := parseAlloc(in); err != nil || got != want {
			t.Errorf("parseAlloc(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{
		"x", "-1", "-1KiB", "1.5MiB", "16kib", "16KB", "16k", "KiB", "MiB", "16MiBKiB",
		"67108865", "65537KiB", "65MiB", "1GiB", "9007199254740993MiB", "99999999999999999999",
	} {
		if got, err := parseAlloc(in); err == nil {
			t.Errorf("parseAlloc(%q) = %d, accepted", in, got)
		} else if !strings.Contains(err.Error(), "ALLOC="+strconv.Quote(in)) {
			t.Errorf("parseAlloc(%q) error %q does not name the variable and value", in, err)
		}
	}
}

// TestPricingRounds: CPU=20 runs the pricing chain in priceWork for 240
// rounds, and the digest the product is built from is still the
// baseRounds one.
func TestPricingRounds(t *testing.T) {
	for percent, want := range map[int]int{0: baseRounds, 20: 240, 50: 300, 1000: 2200} {
		if got := pricingRounds(percent); got != want {
			t.Errorf("pricingRounds(%d) = %d, want %d", percent, got, want)
		}
	}
	chain := func(n int) [32]byte { sum, _ := priceWork("sku-1", n, 0); return sum }
	sum, end := priceWork("sku-1", baseRounds, pricingRounds(20))
	if sum != chain(baseRounds) {
		t.Fatal("CPU=20 changed the pricing digest")
	}
	if end != chain(240) || end == chain(239) || end == chain(241) {
		t.Fatal("CPU=20: priceWork's chain did not end after 240 rounds")
	}
	if sum, end := priceWork("sku-1", baseRounds, pricingRounds(0)); end != sum {
		t.Fatal("CPU=0: priceWork ran past baseRounds")
	}
}

// TestCPUAndAllocKeepResponses: neither switch changes what a product or
// an order looks like.
func TestCPUAndAllocKeepResponses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		off, on config
	}{
		{"CPU=50", config{}, config{cpu: 50}},
		{"ALLOC=16KiB", config{}, config{alloc: 16 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			off, on := newTestApp(t, tc.off), newTestApp(t, tc.on)
			for _, path := range []string{"/products/42", "/products/sku-7"} {
				a, b := off.do("GET", path, ""), on.do("GET", path, "")
				wantStatus(t, b, http.StatusOK)
				if !bytes.Equal(a.Body.Bytes(), b.Body.Bytes()) {
					t.Fatalf("GET %s differs:\n%s\n%s", path, a.Body, b.Body)
				}
			}
			var a, b order
			decode(t, off.do("POST", "/orders", `{"sku":"42","qty":2}`), &a)
			decode(t, on.do("POST", "/orders", `{"sku":"42","qty":2}`), &b)
			a.CreatedAt, b.CreatedAt = time.Time{}, time.Time{}
			if a != b {
				t.Fatalf("orders differ: %+v, %+v", a, b)
			}
		})
	}
}

// allocPerRequest is the bytes allocated per request (runtime TotalAlloc)
// while the real handler serves n requests to method path.
func allocPerRequest(t *testing.T, cfg config, method, path, body string) float64 {
	t.Helper()
	ta := newTestApp(t, cfg)
	for i := 0; i < 10; i++ {
		ta.do(method, path, body)
	}
	const n = 200
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < n; i++ {
		if rec := ta.do(method, path, body); rec.Code >= 300 {
			t.Fatalf("%s %s = %d", method, path, rec.Code)
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / n
}

func TestAllocPerRequest(t *testing.T) {
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/products/42", ""},
		{"POST", "/orders", `{"sku":"42","qty":1}`},
	} {
		t.Run(req.method+" "+req.path, func(t *testing.T) {
			off := allocPerRequest(t, config{}, req.method, req.path, req.body)
			on := allocPerRequest(t, config{alloc: 16 << 10}, req.method, req.path, req.body)
			t.Logf("allocated per request: ALLOC=0 %.0f B, ALLOC=16KiB %.0f B", off, on)
			if on < 16<<10 {
				t.Errorf("ALLOC=16KiB allocated %.0f B per request, want >= 16384", on)
			}
			if on-off < 12<<10 || on-off > 32<<10 {
				t.Errorf("ALLOC=16KiB allocated %.0f B more per request than ALLOC=0, want 12 KiB..32 KiB", on-off)
			}
		})
	}
}

// TestRenderAuditIsGarbage: renderAudit's buffer is one heap allocation per
// request (none at ALLOC=0), and nothing keeps it.
func TestRenderAuditIsGarbage(t *testing.T) {
	r := httptest.NewRequest("GET", "/products/1", nil)
	for size, want := range map[int]float64{0: 0, 16 << 10: 1} {
		if got := testing.AllocsPerRun(100, func() { renderAudit(r, http.StatusOK, size) }); got != want {
			t.Errorf("renderAudit(size %d): %.1f heap allocations, want %.0f", size, got, want)
		}
	}
	ta := newTestApp(t, config{alloc: 1 << 20})
	const n = 64
	before := heapAlloc()
	for i := 0; i < n; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	if after := heapAlloc(); after > before+8<<20 {
		t.Fatalf("heap %d -> %d after %d requests with ALLOC=1MiB: the buffers were kept", before, after, n)
	}
}

func TestParseLeak(t *testing.T) {
	for _, m := range append([]string{""}, leakModes...) {
		if got, err := parseLeak(m); err != nil || got != m {
			t.Errorf("parseLeak(%q) = %q, %v", m, got, err)
		}
	}
	_, err := parseLeak("bogus")
	if err == nil {
		t.Fatal("parseLeak accepted an unknown mode")
	}
	for _, m := range leakModes {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not list %s", err, m)
		}
	}
	for in, want := range map[string]int{"": defaultLeakBytes, "64": 64, "4096": 4096} {
		if got, err := parseLeakBytes(in); err != nil || got != want {
			t.Errorf("parseLeakBytes(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"0", "-5", "x", "99999999"} {
		if _, err := parseLeakBytes(in); err == nil {
			t.Errorf("parseLeakBytes(%q) accepted", in)
		}
	}
	env := map[string]string{"LEAK": "globalmap", "LEAK_BYTES": "64", "SLOW": "20", "CPU": "30", "ALLOC": "16KiB"}
	cfg, err := loadConfig(func(k string) string { return env[k] })
	want := config{leak: modeGlobalMap, leakBytes: 64, slow: 20, cpu: 30, alloc: 16 << 10, stock: defaultStockLatency}
	if err != nil || cfg != want {
		t.Fatalf("loadConfig = %+v, %v", cfg, err)
	}
	for k, v := range map[string]string{"SLOW": "fast", "CPU": "lots", "ALLOC": "1GiB"} {
		bad := map[string]string{k: v}
		_, err := loadConfig(func(k string) string { return bad[k] })
		if err == nil || !strings.Contains(err.Error(), k+"="+strconv.Quote(v)) {
			t.Errorf("loadConfig(%s=%s) = %v, want an error naming %s=%q", k, v, err, k, v)
		}
	}
}

// ---------------------------------------------------------------------------
// Leak modes

func TestCleanModeRetainsNothing(t *testing.T) {
	ta := newTestApp(t, config{})
	for i := 0; i < 200; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	wantStatus(t, ta.do("POST", "/orders", `{"sku":"1","qty":1}`), http.StatusCreated)
	if n := len(auditLog.entries) + len(responseCache.m) + len(fifoCache.m); n != 0 {
		t.Fatalf("clean mode stored %d entries", n)
	}
}

func TestLeakGlobalMap(t *testing.T) {
	ta := newTestApp(t, config{leak: modeGlobalMap, leakBytes: 64})
	const n = 500
	for i := 0; i < n; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	rec := ta.do("POST", "/orders", `{"sku":"1","qty":1}`)
	wantStatus(t, rec, http.StatusCreated)
	wantStatus(t, ta.do("GET", rec.Header().Get("Location"), ""), http.StatusOK)
	wantError(t, ta.do("GET", "/orders/999999", ""), http.StatusNotFound) // errors are not logged
	if got := len(auditLog.entries); got != n+2 {
		t.Fatalf("audit log has %d entries, want %d", got, n+2)
	}
	for _, rec := range auditLog.entries {
		if len(rec) != 64 || !strings.Contains(string(rec), " GET /") && !strings.Contains(string(rec), " POST /") {
			t.Fatalf("bad audit record %q", rec)
		}
	}
}

func TestLeakBlockedGoroutine(t *testing.T) {
	ta := newTestApp(t, config{leak: modeGoroutine})
	const n = 200
	before := runtime.NumGoroutine()
	for i := 0; i < n; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	// These goroutines are blocked forever by design; they stay parked and
	// do not affect other tests, which only look at deltas.
	if grew := runtime.NumGoroutine() - before; grew < n*9/10 {
		t.Fatalf("goroutines grew by %d after %d requests, want ~%d", grew, n, n)
	}
}

func TestLeakKeyedCache(t *testing.T) {
	ta := newTestApp(t, config{leak: modeKeyedCache})
	const n = 300
	for round := 0; round < 2; round++ {
		for i := 0; i < n; i++ {
			wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
		}
	}
	if got := len(responseCache.m); got != n {
		t.Fatalf("keyed cache has %d entries, want %d", got, n)
	}
	wantStatus(t, ta.do("POST", "/orders", `{"sku":"1","qty":1}`), http.StatusCreated)
	if got := len(responseCache.m); got != n+1 {
		t.Fatalf("keyed cache has %d entries after an order, want %d", got, n+1)
	}
	e := responseCache.m["/products/7"]
	if e == nil || len(e.body) < 500 || e.etag == "" {
		t.Fatalf("bad cache entry %+v", e)
	}
}

func TestBoundedCacheStaysAtCap(t *testing.T) {
	ta := newTestApp(t, config{leak: modeBoundedCache})
	for i := 0; i < 50; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	if got := len(fifoCache.m); got != 50 {
		t.Fatalf("bounded cache has %d entries, want 50", got)
	}
	body := make([]byte, 1024)
	for i := 0; i < 2*boundedCacheCap; i++ {
		boundedCache("/products/x"+strconv.Itoa(i), body)
		if len(fifoCache.m) > boundedCacheCap {
			t.Fatalf("bounded cache exceeded its cap: %d", len(fifoCache.m))
		}
	}
	if got := len(fifoCache.m); got != boundedCacheCap {
		t.Fatalf("bounded cache has %d entries, want %d", got, boundedCacheCap)
	}
	if _, ok := fifoCache.m["/products/x0"]; ok {
		t.Fatal("oldest entry was not evicted")
	}
	if _, ok := fifoCache.m["/products/x"+strconv.Itoa(2*boundedCacheCap-1)]; !ok {
		t.Fatal("newest entry missing")
	}
}

func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func TestLeakContext(t *testing.T) {
	ta := newTestApp(t, config{leak: modeContext})
	r := httptest.NewRequest("GET", "/products/1", nil)
	const n = 20000
	before := heapAlloc()
	for i := 0; i < n; i++ {
		ta.applyLeak(r, http.StatusOK, "/products/"+strconv.Itoa(i), nil)
	}
	during := heapAlloc()
	if during < before || (during-before)/n < 100 {
		t.Fatalf("heap grew %d -> %d over %d requests, want >= 100 B/request", before, during, n)
	}
	// The retained memory is appCtx's children: cancelling appCtx frees it.
	ta.cancel()
	after := heapAlloc()
	if after > before+(during-before)/4 {
		t.Fatalf("heap %d -> %d -> %d: cancelling appCtx did not release the children", before, during, after)
	}
	// And through the handler, too.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ta.ctx = ctx
	wantStatus(t, ta.do("GET", "/products/1", ""), http.StatusOK)
}

func TestLeakSubslice(t *testing.T) {
	ta := newTestApp(t, config{leak: modeSubslice})
	wantStatus(t, ta.do("GET", "/products/1", ""), http.StatusOK) // only orders are indexed
	const n = 50
	for i := 0; i < n; i++ {
		wantStatus(t, ta.do("POST", "/orders", `{"sku":"1","qty":1}`), http.StatusCreated)
	}
	if got := len(orderIndex.ids); got != n {
		t.Fatalf("order index has %d entries, want %d", got, n)
	}
	for _, id := range orderIndex.ids {
		if len(id) != 16 || cap(id) != 4096 {
			t.Fatalf("index entry len %d cap %d, want a 16 B view of a 4 KiB buffer", len(id), cap(id))
		}
	}
}

func TestLeakQueue(t *testing.T) {
	ta := newTestApp(t, config{leak: modeQueue})
	const n = 300
	for i := 0; i < n; i++ {
		wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		outbox.Lock()
		sent, queued, head := outbox.sent, len(outbox.items), outbox.head
		outbox.Unlock()
		if sent == n {
			// Everything was sent, and everything is still in the queue.
			if queued != n || head != n {
				t.Fatalf("queue holds %d items with head %d after %d sent, want %d", queued, head, sent, n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sender sent %d of %d notifications in 5 s", sent, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b := outbox.items[n-1].body; len(b) < 500 {
		t.Fatalf("queued notification carries %d bytes, want the rendered product", len(b))
	}
}

func TestLeakTimer(t *testing.T) {
	ta := newTestApp(t, config{leak: modeTimer})
	r := httptest.NewRequest("GET", "/products/1", nil)
	body := make([]byte, 1024)
	const n = 5000
	before := heapAlloc()
	for i := 0; i < n; i++ {
		ta.applyLeak(r, http.StatusOK, "/products/"+strconv.Itoa(i), body)
	}
	// The armed timers keep their watches (1 KiB each) for an hour.
	if grew := int64(heapAlloc()) - int64(before); grew < n*1024 {
		t.Fatalf("heap grew %d B over %d armed timers, want >= %d", grew, n, n*1024)
	}
	wantStatus(t, ta.do("GET", "/products/1", ""), http.StatusOK)
}

// waitGoroutines polls until cond(NumGoroutine) holds or 5 s pass.
func waitGoroutines(cond func(int) bool) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if cond(n) || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLeakUnclosedBody(t *testing.T) {
	const views = 10 * upstreamEvery // 10 upstream fetches
	for _, mode := range []string{"", modeUnclosed} {
		t.Run("leak="+mode, func(t *testing.T) {
			ta := newTestApp(t, config{leak: mode})
			before := runtime.NumGoroutine()
			for i := 0; i < views; i++ {
				wantStatus(t, ta.do("GET", "/products/"+strconv.Itoa(i), ""), http.StatusOK)
			}
			if mode == "" {
				// One pooled connection: readLoop, writeLoop, server conn.
				if grew := runtime.NumGoroutine() - before; grew > 4 {
					t.Fatalf("clean mode: goroutines grew by %d", grew)
				}
				return
			}
			// Each fetch pins readLoop + writeLoop (+ the upstream's conn).
			n := waitGoroutines(func(n int) bool { return n >= before+20 })
			if n < before+20 {
				t.Fatalf("goroutines %d -> %d after 10 unclosed fetches, want +20", before, n)
			}
			// The requests ran under appCtx: cancelling it frees the connections.
			ta.cancel()
			if n := waitGoroutines(func(n int) bool { return n <= before+3 }); n > before+3 {
				t.Fatalf("goroutines still %d (was %d) after cancelling appCtx", n, before)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// The real binary: PORT=0, default mux with pprof/expvar, SIGTERM, exit codes.

func serviceCmd(t *testing.T, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SAMPLE_GO_SERVICE_RUN_MAIN=1", "LEAK=", "LEAK_BYTES=", "SLOW=", "CPU=", "ALLOC=", "PORT=")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

func TestMainProcess(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses SIGTERM")
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"PORT=0", map[string]string{"PORT": "0", "LEAK": "goroutine"}, nil},
		{"-addr", map[string]string{"PORT": "1"}, []string{"-addr=127.0.0.1:0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := serviceCmd(t, tc.env, tc.args...)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill() }()
			lines := make(chan string, 1)
			go func() {
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				lines <- line
				_, _ = io.Copy(io.Discard, stdout)
			}()
			var line string
			select {
			case line = <-lines:
			case <-time.After(10 * time.Second):
				t.Fatal("no listening line within 10s")
			}
			m := regexp.MustCompile(`^listening on (http://127\.0\.0\.1:(\d+))\n$`).FindStringSubmatch(line)
			if m == nil || m[2] == "0" {
				t.Fatalf("bad first line %q", line)
			}
			base := m[1]
			for path, want := range map[string]string{
				"/healthz":      `"status":"ok"`,
				"/products/1":   `"sku":"1"`,
				"/debug/vars":   `"requests_served"`,
				"/debug/pprof/": "goroutine",
			} {
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
					t.Fatalf("GET %s = %d %.200s", path, resp.StatusCode, body)
				}
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no exit within 10s of SIGTERM")
			}
		})
	}
}

func TestMainRejectsBadEnv(t *testing.T) {
	for _, env := range []map[string]string{
		{"LEAK": "bogus"},
		{"SLOW": "fast"},
		{"LEAK_BYTES": "-1"},
		{"CPU": "lots"},
		{"ALLOC": "1GiB"},
	} {
		cmd := serviceCmd(t, env)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Fatalf("%v: err = %v, want exit status 2; output %s", env, err, out)
		}
		if env["LEAK"] != "" && !strings.Contains(string(out), "globalmap") {
			t.Fatalf("unknown LEAK message does not list the modes: %s", out)
		}
		for k, v := range env {
			if !strings.Contains(string(out), k+"="+strconv.Quote(v)) {
				t.Fatalf("%s=%s: message does not name the variable and value: %s", k, v, out)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Benchmarks: go test -run '^$' -bench .

func BenchmarkPriceWork(b *testing.B) {
	for i := 0; i < b.N; i++ {
		priceWork("12345", baseRounds, 0)
	}
}

func BenchmarkProductHandler(b *testing.B) {
	for _, bc := range []struct {
		name string
		cfg  config
	}{
		{"SLOW=0", config{}},
		{"SLOW=20", config{slow: 20}},
		{"SLOW=100", config{slow: 100}},
		{"CPU=20", config{cpu: 20}},
		{"ALLOC=16KiB", config{alloc: 16 << 10}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := newApp(context.Background(), bc.cfg, "http://127.0.0.1:1")
			mux := http.NewServeMux()
			registerRoutes(mux, a)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				// Views 1..49 of every 50; the upstream refresh is not measured.
				a.views.Store(0)
				rec := httptest.NewRecorder()
				mux.ServeHTTP(rec, httptest.NewRequest("GET", "/products/"+strconv.Itoa(i), nil))
			}
		})
	}
}
