// Command sample-go-service is a small JSON shop API used to exercise
// leakgate. Environment switches (see leaks.go):
//
//	LEAK=<mode>      "" (clean), globalmap, goroutine, keyedcache, unclosed,
//	                 context, subslice, queue, timer, or boundedcache (a capped
//	                 cache, not a leak)
//	LEAK_BYTES=<n>   bytes kept per request by LEAK=globalmap (default 256)
//	SLOW=<percent>   each product/order request's own work (pricing CPU and
//	                 the stock lookup) takes this much longer (default 0)
//	CPU=<percent>    each product/order request's pricing does this much more
//	                 CPU work, 0..1000 (default 0); the stock lookup is untouched
//	ALLOC=<size>     each product/order request allocates this much short-lived
//	                 garbage in one buffer (bytes, or KiB/MiB: 16KiB; 0..64MiB,
//	                 default 0); the stock lookup is untouched
//	STOCK_LATENCY=<d> simulated inventory-database round trip per product or
//	                 order request (Go duration, default 10ms; 0s disables it)
//	PORT=<port>      listen on 127.0.0.1:PORT when -addr is not given
//	CRASH_AFTER=<n>  panic (and crash) after serving n requests: a crash under load
//	CHILD=sleep      start a child process that outlives its requests (`sleep 600`),
//	                 to check that whoever runs the service stops its whole group
//
// The service serves /debug/pprof/ and /debug/vars from http.DefaultServeMux.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"expvar"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	defaultAddr     = "127.0.0.1:8080"
	orderRingSize   = 1024
	maxSKULen       = 128
	maxQty          = 1000
	maxBodyBytes    = 1 << 20
	shutdownTimeout = 5 * time.Second
)

// Counters published on /debug/vars.
var (
	requestsServed    = expvar.NewInt("requests_served")
	ordersCreated     = expvar.NewInt("orders_created")
	upstreamRefreshes = expvar.NewInt("upstream_refreshes")
)

func main() {
	log.SetPrefix("sample-go-service: ")
	addrFlag := flag.String("addr", "", "listen address host:port (default: 127.0.0.1:$PORT, else "+defaultAddr+")")
	flag.Parse()

	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sample-go-service:", err)
		os.Exit(2)
	}
	if n, err := strconv.ParseInt(os.Getenv("CRASH_AFTER"), 10, 64); err == nil && n > 0 {
		crashAfter = n
	}
	if os.Getenv("CHILD") == "sleep" {
		child := exec.Command("sleep", "600")
		if err := child.Start(); err != nil {
			log.Printf("CHILD=sleep: %v", err)
		} else {
			log.Printf("CHILD=sleep: started pid %d", child.Process.Pid)
		}
	}
	sigCtx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	addr := listenAddr(*addrFlag, os.Getenv("PORT"))
	if err := run(sigCtx, addr, cfg, http.DefaultServeMux, os.Stdout); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

// config is the environment-driven behaviour of the service.
type config struct {
	leak      string // "" means clean
	leakBytes int
	slow      int           // percent of extra work per request
	cpu       int           // percent of extra pricing CPU per request
	alloc     int           // bytes of short-lived garbage per request
	stock     time.Duration // simulated stock lookup latency
}

func loadConfig(getenv func(string) string) (config, error) {
	var cfg config
	var err error
	if cfg.leak, err = parseLeak(getenv("LEAK")); err != nil {
		return cfg, err
	}
	if cfg.leakBytes, err = parseLeakBytes(getenv("LEAK_BYTES")); err != nil {
		return cfg, err
	}
	if cfg.slow, err = parseSlow(getenv("SLOW")); err != nil {
		return cfg, err
	}
	if cfg.cpu, err = parseCPU(getenv("CPU")); err != nil {
		return cfg, err
	}
	if cfg.alloc, err = parseAlloc(getenv("ALLOC")); err != nil {
		return cfg, err
	}
	if cfg.stock, err = parseStockLatency(getenv("STOCK_LATENCY")); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// listenAddr picks the listen address: the -addr flag, else 127.0.0.1:$PORT,
// else defaultAddr.
func listenAddr(flagAddr, port string) string {
	if flagAddr != "" {
		return flagAddr
	}
	if port != "" {
		return "127.0.0.1:" + port
	}
	return defaultAddr
}

// baseURL renders a bound address as a URL, mapping wildcard hosts to
// 127.0.0.1 so the printed URL is always dialable.
func baseURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// run serves until ctx is cancelled, then shuts down gracefully.
func run(ctx context.Context, addr string, cfg config, mux *http.ServeMux, stdout io.Writer) error {
	appCtx, cancelApp := context.WithCancel(context.Background())
	defer cancelApp()

	up, err := startUpstream()
	if err != nil {
		return fmt.Errorf("start pricing upstream: %w", err)
	}
	defer up.Close()

	a := newApp(appCtx, cfg, up.URL)
	registerRoutes(mux, a)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           countRequests(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	// os.Stdout is unbuffered: this line is on the pipe once Fprintf returns.
	if _, err := fmt.Fprintf(stdout, "listening on %s\n", baseURL(ln.Addr())); err != nil {
		_ = srv.Close()
		return err
	}
	log.Printf("serving on %s (leak=%q leak_bytes=%d slow=%d%% cpu=%d%% alloc=%dB stock_latency=%s, pricing upstream %s)",
		ln.Addr(), cfg.leak, cfg.leakBytes, cfg.slow, cfg.cpu, cfg.alloc, cfg.stock, up.URL)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Print("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// E.g. a connection that never sent a request: not worth failing for.
		log.Printf("graceful shutdown incomplete (%v); closing remaining connections", err)
		_ = srv.Close()
	}
	cancelApp()
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Print("stopped")
	return nil
}

// crashAfter > 0 makes the service crash once it has served that many
// requests (CRASH_AFTER), the way an unrecovered panic in a goroutine does.
var (
	crashAfter int64
	served     atomic.Int64 // the count Add returns: exactly one request sees crashAfter
)

func countRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requestsServed.Add(1)
		if n := served.Add(1); crashAfter > 0 && n == crashAfter {
			go func() { panic(fmt.Sprintf("CRASH_AFTER=%d requests reached", crashAfter)) }()
		}
		next.ServeHTTP(w, r)
	})
}

// ---------------------------------------------------------------------------
// Application state and routes

type app struct {
	ctx         context.Context // appCtx: lives until shutdown
	cfg         config
	orders      orderStore
	upstreamURL string
	client      *http.Client
	views       atomic.Uint64 // product views, drives the 1-in-50 refresh
}

func newApp(appCtx context.Context, cfg config, upstreamURL string) *app {
	return &app{
		ctx:         appCtx,
		cfg:         cfg,
		upstreamURL: upstreamURL,
		client: &http.Client{Transport: &http.Transport{
			DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
			MaxIdleConns:          4,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			ResponseHeaderTimeout: 2 * time.Second,
		}},
	}
}

// registerRoutes routes by hand; main passes http.DefaultServeMux, which
// also carries /debug/pprof/ (net/http/pprof) and /debug/vars (expvar).
func registerRoutes(mux *http.ServeMux, a *app) {
	mux.HandleFunc("/", a.handleIndex)
	mux.HandleFunc("/healthz", a.handleHealthz)
	mux.HandleFunc("/products/", a.handleProduct)
	mux.HandleFunc("/orders", a.handleCreateOrder)
	mux.HandleFunc("/orders/", a.handleGetOrder)
	mux.HandleFunc("/metrics", handleMetrics)
}

type endpoint struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	About  string `json:"about"`
}

var endpoints = []endpoint{
	{"GET", "/", "this index"},
	{"GET", "/healthz", "liveness probe"},
	{"GET", "/products/{sku}", "a product, priced deterministically from its sku"},
	{"POST", "/orders", `create an order from {"sku":"...","qty":N}`},
	{"GET", "/orders/{id}", "one of the last 1024 orders"},
	{"GET", "/debug/vars", "expvar counters and runtime memstats"},
	{"GET", "/metrics", "Prometheus text format, client_golang's Go and process metric names"},
	{"GET", "/debug/pprof/", "runtime profiles"},
}

func (a *app) handleIndex(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		writeError(w, http.StatusNotFound, "not found")
		return
	}
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"service":   "sample-go-service",
		"endpoints": endpoints,
	})
}

func (a *app) handleHealthz(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *app) handleProduct(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	sku := strings.TrimPrefix(r.URL.Path, "/products/")
	if sku == "" {
		writeError(w, http.StatusNotFound, "product not found")
		return
	}
	p := a.product(sku)
	if a.views.Add(1)%upstreamEvery == 0 {
		if price, ok := a.refreshPrice(sku); ok {
			p.PriceCents = price
		}
	}
	body, err := json.Marshal(p)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	renderAudit(r, http.StatusOK, a.cfg.alloc)
	a.applyLeak(r, http.StatusOK, r.URL.RequestURI(), body)
	writeBody(w, http.StatusOK, body)
}

type orderRequest struct {
	SKU string `json:"sku"`
	Qty int    `json:"qty"`
}

func (a *app) handleCreateOrder(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodPost) {
		return
	}
	var req orderRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
		return
	}
	switch {
	case req.SKU == "":
		writeError(w, http.StatusBadRequest, "sku is required")
		return
	case len(req.SKU) > maxSKULen:
		writeError(w, http.StatusBadRequest, "sku is too long")
		return
	case req.Qty < 1 || req.Qty > maxQty:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("qty must be between 1 and %d", maxQty))
		return
	}
	p := a.product(req.SKU)
	o := a.orders.add(order{
		SKU:            req.SKU,
		Name:           p.Name,
		Qty:            req.Qty,
		UnitPriceCents: p.PriceCents,
		TotalCents:     p.PriceCents * int64(req.Qty),
		Currency:       p.Currency,
		Status:         "accepted",
		CreatedAt:      time.Now().UTC(),
	})
	ordersCreated.Add(1)
	body, err := json.Marshal(o)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	loc := "/orders/" + strconv.FormatUint(o.ID, 10)
	renderAudit(r, http.StatusCreated, a.cfg.alloc)
	a.applyLeak(r, http.StatusCreated, loc, body)
	w.Header().Set("Location", loc)
	writeBody(w, http.StatusCreated, body)
}

func (a *app) handleGetOrder(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	id, err := strconv.ParseUint(strings.TrimPrefix(r.URL.Path, "/orders/"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "order not found")
		return
	}
	o, ok := a.orders.get(id)
	if !ok {
		writeError(w, http.StatusNotFound, "order not found")
		return
	}
	body, err := json.Marshal(o)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	a.applyLeak(r, http.StatusOK, r.URL.RequestURI(), body)
	writeBody(w, http.StatusOK, body)
}

// allowMethod answers 405 unless r uses method (GET also admits HEAD).
func allowMethod(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method || (method == http.MethodGet && r.Method == http.MethodHead) {
		return true
	}
	allow := method
	if method == http.MethodGet {
		allow = "GET, HEAD"
	}
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeBody(w, status, body)
}

func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(status)
	_, _ = w.Write(body)
	_, _ = w.Write([]byte{'\n'})
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// ---------------------------------------------------------------------------
// Catalog: products are generated deterministically from the sku.

type product struct {
	SKU         string   `json:"sku"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	PriceCents  int64    `json:"price_cents"`
	Currency    string   `json:"currency"`
	Tags        []string `json:"tags"`
	Stock       int      `json:"stock"`
}

var (
	adjectives = []string{"Classic", "Compact", "Deluxe", "Rugged", "Silent", "Smart", "Vintage", "Wireless"}
	materials  = []string{"Aluminium", "Bamboo", "Carbon", "Ceramic", "Copper", "Leather", "Oak", "Steel"}
	nouns      = []string{"Backpack", "Desk Lamp", "Kettle", "Keyboard", "Notebook", "Speaker", "Teapot", "Watch"}
	words      = []string{
		"built", "for", "everyday", "use", "with", "a", "durable", "finish", "and", "careful",
		"attention", "to", "detail", "designed", "in", "small", "batches", "tested", "long", "lasting",
		"comfortable", "reliable", "quiet", "simple", "elegant", "light", "strong", "warm", "repairable", "recyclable",
		"materials", "craft",
	}
	tagPool = []string{"bestseller", "eco", "gift", "limited", "new", "outdoor", "office", "sale"}
)

// priceCents maps a pricing digest to a price between 1.99 and 999.98.
func priceCents(sum [32]byte) int64 {
	return 199 + int64(binary.BigEndian.Uint32(sum[:4])%99800)
}

// product runs the per-request work (pricing, run on by CPU, plus the SLOW
// share, and the stock lookup) and builds the product for sku. The result
// does not depend on SLOW or CPU.
func (a *app) product(sku string) product {
	sum, _ := priceWork(sku, baseRounds, pricingRounds(a.cfg.cpu))
	_ = slowWork(sku, a.cfg.slow)
	stock := lookupStock(sku, stockWait(a.cfg.stock, a.cfg.slow))
	t1 := sum[7] % 8
	t2 := (t1 + 1 + sum[8]%7) % 8
	return product{
		SKU:         sku,
		Name:        adjectives[sum[4]%8] + " " + materials[sum[5]%8] + " " + nouns[sum[6]%8],
		Description: describe(sum),
		PriceCents:  priceCents(sum),
		Currency:    "EUR",
		Tags:        []string{tagPool[t1], tagPool[t2]},
		Stock:       stock,
	}
}

// describe writes a ~700-byte deterministic description from a digest.
func describe(sum [32]byte) string {
	x := binary.LittleEndian.Uint64(sum[8:16]) | 1
	var b strings.Builder
	b.Grow(800)
	for i := 0; i < 110; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		w := words[x%uint64(len(words))]
		switch {
		case i == 0:
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		case i%12 == 0:
			b.WriteString(". ")
			b.WriteString(strings.ToUpper(w[:1]) + w[1:])
		default:
			b.WriteByte(' ')
			b.WriteString(w)
		}
	}
	b.WriteByte('.')
	return b.String()
}

// refreshPrice asks the pricing upstream for the current price of sku.
// Under LEAK=unclosed the call goes through leakUnclosedBody instead.
func (a *app) refreshPrice(sku string) (int64, bool) {
	upstreamRefreshes.Add(1)
	u := a.upstreamURL + "/price?sku=" + url.QueryEscape(sku)
	if a.cfg.leak == modeUnclosed {
		leakUnclosedBody(a.ctx, a.client, u)
		return 0, false
	}
	price, err := fetchUpstreamPrice(a.ctx, a.client, u)
	if err != nil {
		return 0, false
	}
	return price, true
}

// fetchUpstreamPrice is the correct client call: read and close the body.
func fetchUpstreamPrice(ctx context.Context, client *http.Client, u string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return 0, fmt.Errorf("pricing upstream: %s", resp.Status)
	}
	var p struct {
		PriceCents int64 `json:"price_cents"`
	}
	err = json.NewDecoder(resp.Body).Decode(&p)
	_, _ = io.Copy(io.Discard, resp.Body) // drain so the connection is reused
	return p.PriceCents, err
}

// upstream is the in-process "pricing service" on its own listener and mux.
type upstream struct {
	URL string
	srv *http.Server
}

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/price", func(w http.ResponseWriter, r *http.Request) {
		sku := r.URL.Query().Get("sku")
		if sku == "" {
			writeError(w, http.StatusBadRequest, "sku is required")
			return
		}
		sum, _ := priceWork(sku, baseRounds, 0)
		writeJSON(w, http.StatusOK, map[string]any{
			"sku":         sku,
			"price_cents": priceCents(sum),
		})
	})
	up := &upstream{
		URL: "http://" + ln.Addr().String(),
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       5 * time.Second,
		},
	}
	go func() { _ = up.srv.Serve(ln) }()
	return up, nil
}

func (u *upstream) Close() error { return u.srv.Close() }

// ---------------------------------------------------------------------------
// Orders: a bounded ring of the most recent orderRingSize orders.

type order struct {
	ID             uint64    `json:"id"`
	SKU            string    `json:"sku"`
	Name           string    `json:"name"`
	Qty            int       `json:"qty"`
	UnitPriceCents int64     `json:"unit_price_cents"`
	TotalCents     int64     `json:"total_cents"`
	Currency       string    `json:"currency"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"created_at"`
}

type orderStore struct {
	mu   sync.Mutex
	last uint64
	ring [orderRingSize]order
}

func (s *orderStore) add(o order) order {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last++
	o.ID = s.last
	s.ring[o.ID%orderRingSize] = o
	return o
}

func (s *orderStore) get(id uint64) (order, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := s.ring[id%orderRingSize]
	return o, id != 0 && o.ID == id
}

// handleMetrics writes the Go runtime's figures in the Prometheus text
// exposition format under the names client_golang's Go and process collectors
// use, so tools that read /metrics (leakgate's probes.source: prometheus)
// work on the sample without a dependency outside the standard library.
func handleMetrics(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r, http.MethodGet) {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	gauge := func(name, help string, value float64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %g\n", name, help, name, name, value)
	}
	gauge("go_goroutines", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
	gauge("go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and still in use.", float64(ms.HeapAlloc))
	gauge("go_memstats_heap_objects", "Number of allocated objects.", float64(ms.HeapObjects))
	fmt.Fprintf(w, "# HELP go_memstats_alloc_bytes_total Total number of bytes allocated, even if freed.\n"+
		"# TYPE go_memstats_alloc_bytes_total counter\ngo_memstats_alloc_bytes_total %d\n", ms.TotalAlloc)
	gauge("go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place.", float64(ms.NextGC))
	fmt.Fprintf(w, "# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.\n"+
		"# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds_sum %g\ngo_gc_duration_seconds_count %d\n",
		float64(ms.PauseTotalNs)/1e9, ms.NumGC)
}
