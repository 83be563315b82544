package main

// This file holds the per-request CPU work ("pricing" and the SLOW and CPU
// knobs), the per-request garbage of the ALLOC knob and every LEAK mode. Each
// mode lives in its own named, non-inlined function so that heap, goroutine
// and CPU profiles attribute the growth to it by name.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// baseRounds is the fixed pricing work per product/order request:
	// 200 rounds of SHA-256 over a 64-byte buffer, about 32 µs on a modern core.
	baseRounds = 200

	// upstreamEvery: one product view in this many refreshes its price from
	// the in-process pricing upstream.
	upstreamEvery = 50

	// boundedCacheCap is the number of entries boundedCache keeps.
	boundedCacheCap = 4096

	defaultLeakBytes = 256
	maxLeakBytes     = 1 << 20
	maxSlowPercent   = 10000
	maxCPUPercent    = 1000
	maxAllocBytes    = 64 << 20

	// defaultStockLatency is the simulated round trip to the inventory
	// database that every product and order request makes. It dominates the
	// request's latency the way a real downstream call does, so SLOW=20
	// shows as about 20% more latency end to end. 10 ms, not less: an idle
	// Go scheduler wakes sleepers with millisecond granularity, which would
	// blur a 20% change of a shorter wait.
	defaultStockLatency = 10 * time.Millisecond
	maxStockLatency     = 10 * time.Second
)

// Valid values of the LEAK environment variable ("" means clean).
const (
	modeGlobalMap    = "globalmap"
	modeGoroutine    = "goroutine"
	modeKeyedCache   = "keyedcache"
	modeUnclosed     = "unclosed"
	modeContext      = "context"
	modeSubslice     = "subslice"
	modeQueue        = "queue"
	modeTimer        = "timer"
	modeBoundedCache = "boundedcache" // control mode: capped, NOT a leak
)

var leakModes = []string{
	modeGlobalMap, modeGoroutine, modeKeyedCache,
	modeUnclosed, modeContext, modeSubslice, modeQueue, modeTimer,
	modeBoundedCache,
}

// parseLeak validates the LEAK environment variable.
func parseLeak(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	for _, m := range leakModes {
		if s == m {
			return s, nil
		}
	}
	return "", fmt.Errorf("unknown LEAK=%q; valid values: %s, %s (not a leak: capped cache), or empty for clean",
		s, strings.Join(leakModes[:len(leakModes)-1], ", "), modeBoundedCache)
}

// parseSlow validates SLOW: an integer percentage by which each product or
// order request's own work (pricing CPU and the stock lookup) takes longer
// ("20" or "20%"); empty means 0.
func parseSlow(s string) (int, error) {
	return parsePercent("SLOW", s, maxSlowPercent)
}

// parseCPU validates CPU: an integer percentage by which the pricing
// computation of each product or order request does more work ("20" or
// "20%"); empty means 0. Unlike SLOW it leaves the stock lookup alone.
func parseCPU(s string) (int, error) {
	return parsePercent("CPU", s, maxCPUPercent)
}

// parsePercent reads the switch name=s, an integer percentage between 0 and
// max with an optional "%"; empty means 0.
func parsePercent(name, s string, max int) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(s), "%"))
	if err != nil || n < 0 || n > max {
		return 0, fmt.Errorf("invalid %s=%q: want an integer percentage between 0 and %d", name, s, max)
	}
	return n, nil
}

// parseAlloc validates ALLOC: the bytes of short-lived garbage each product
// or order request allocates, an integer with an optional 1024-based KiB or
// MiB suffix ("16384", "16KiB", "1MiB"); empty means 0.
func parseAlloc(s string) (int, error) {
	num, unit := strings.TrimSpace(s), 1
	if num == "" {
		return 0, nil
	}
	if n, ok := strings.CutSuffix(num, "KiB"); ok {
		num, unit = n, 1<<10
	} else if n, ok := strings.CutSuffix(num, "MiB"); ok {
		num, unit = n, 1<<20
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > maxAllocBytes/unit {
		return 0, fmt.Errorf("invalid ALLOC=%q: want a size between 0 and 64MiB in bytes, KiB or MiB (16384, 16KiB, 1MiB)", s)
	}
	return n * unit, nil
}

// parseStockLatency validates STOCK_LATENCY, a Go duration ("4ms", "0s");
// empty means defaultStockLatency.
func parseStockLatency(s string) (time.Duration, error) {
	if s == "" {
		return defaultStockLatency, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 || d > maxStockLatency {
		return 0, fmt.Errorf("invalid STOCK_LATENCY=%q: want a duration between 0s and %s", s, maxStockLatency)
	}
	return d, nil
}

// parseLeakBytes validates LEAK_BYTES (bytes kept per request by globalmap).
func parseLeakBytes(s string) (int, error) {
	if s == "" {
		return defaultLeakBytes, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > maxLeakBytes {
		return 0, fmt.Errorf("invalid LEAK_BYTES=%q: want an integer between 1 and %d", s, maxLeakBytes)
	}
	return n, nil
}

// applyLeak runs the configured LEAK mode for one successful product or
// order request. key is the URI of the resource served; body is the
// rendered response. LEAK=unclosed is handled by refreshPrice instead.
func (a *app) applyLeak(r *http.Request, status int, key string, body []byte) {
	switch a.cfg.leak {
	case modeGlobalMap:
		leakGlobalMap(r, status, a.cfg.leakBytes)
	case modeGoroutine:
		leakBlockedGoroutine(key)
	case modeKeyedCache:
		leakKeyedCache(key, body)
	case modeContext:
		leakContext(a.ctx, r, key)
	case modeSubslice:
		leakSubslice(status, body)
	case modeQueue:
		leakQueue(key, body)
	case modeTimer:
		leakTimer(key, body)
	case modeBoundedCache:
		boundedCache(key, body)
	}
}

// ---------------------------------------------------------------------------
// CPU work

// priceWork is the deterministic "pricing" computation: a chain of SHA-256
// rounds seeded by the sku. sum is the digest after rounds rounds. Under CPU
// the chain runs on to total rounds (no further when total <= rounds) and
// end is its last digest: the extra work happens here, so a CPU profile
// charges it to priceWork, and callers discard end, so the price does not
// depend on CPU. Its cost is linear in max(rounds, total).
//
//go:noinline
func priceWork(seed string, rounds, total int) (sum, end [32]byte) {
	var buf [64]byte
	sum = sha256.Sum256([]byte(seed))
	end = sum
	for i := 0; i < rounds || i < total; i++ {
		copy(buf[:32], end[:])
		binary.LittleEndian.PutUint64(buf[32:], uint64(i))
		end = sha256.Sum256(buf[:])
		if i < rounds {
			sum = end
		}
	}
	return sum, end
}

// pricingRounds is the length of the pricing chain of a product or order
// request under CPU=percent: baseRounds plus percent% of it.
func pricingRounds(percent int) int {
	return baseRounds * (100 + percent) / 100
}

// stockWait is the time the stock lookup takes: base, plus percent% of it
// under SLOW.
func stockWait(base time.Duration, percent int) time.Duration {
	return base + base*time.Duration(percent)/100
}

// lookupStock simulates the inventory database round trip (a wait that
// costs no CPU, like network I/O) and returns the stock level of sku.
//
//go:noinline
func lookupStock(sku string, wait time.Duration) int {
	if wait > 0 {
		time.Sleep(wait)
	}
	return stockLevel(sku)
}

// slowRounds is the extra work SLOW=percent adds on top of baseRounds.
func slowRounds(percent int) int {
	return baseRounds * percent / 100
}

// slowWork burns the SLOW share of extra CPU: percent% of baseRounds. The
// caller discards the result, so the product does not depend on SLOW.
//
//go:noinline
func slowWork(seed string, percent int) byte {
	if percent <= 0 {
		return 0
	}
	sum, _ := priceWork(seed, slowRounds(percent), 0)
	return sum[0]
}

// ---------------------------------------------------------------------------
// ALLOC

// renderAudit renders the request's audit record into a fresh size-byte
// buffer and writes it to io.Discard: ALLOC's per-request scratch buffer.
// Nothing keeps the buffer, so it is garbage once the request is served
// (unlike LEAK=globalmap, which keeps its records). The buffer, made with a
// size known only at run time and handed to an io.Writer, escapes: it is a
// heap allocation, charged to renderAudit by an allocation profile.
//
//go:noinline
func renderAudit(r *http.Request, status, size int) {
	if size <= 0 {
		return
	}
	var tmp [256]byte
	line := appendAuditLine(tmp[:0], r, status)
	rec := make([]byte, size)
	copy(rec, line)
	_, _ = io.Discard.Write(rec)
}

// appendAuditLine appends "unix-nanos method path status remote" to b. Small
// enough to be inlined, so a caller's stack buffer stays on its stack.
func appendAuditLine(b []byte, r *http.Request, status int) []byte {
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, ' ')
	b = append(b, r.Method...)
	b = append(b, ' ')
	b = append(b, r.URL.Path...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	return append(b, r.RemoteAddr...)
}

// ---------------------------------------------------------------------------
// LEAK=globalmap

// auditLog is a process-wide "audit log" of requests. It is never trimmed.
var auditLog = struct {
	sync.Mutex
	seq     uint64
	entries map[uint64][]byte
}{entries: make(map[uint64][]byte)}

// leakGlobalMap appends a size-byte audit record for the request to the
// global auditLog map, which nothing ever trims.
//
//go:noinline
func leakGlobalMap(r *http.Request, status, size int) {
	var tmp [256]byte
	line := appendAuditLine(tmp[:0], r, status)
	rec := make([]byte, size)
	copy(rec, line)

	auditLog.Lock()
	auditLog.seq++
	auditLog.entries[auditLog.seq] = rec
	auditLog.Unlock()
}

// ---------------------------------------------------------------------------
// LEAK=goroutine

// stockHint is what the background stock check reports.
type stockHint struct {
	sku   string
	units int
}

// leakBlockedGoroutine starts a background stock check and uses its result
// only if it is already there; otherwise the caller gives up. Because the
// result channel is unbuffered and nobody receives after giving up, the
// sender blocks forever in chan send: one goroutine leaked per request.
//
//go:noinline
func leakBlockedGoroutine(sku string) (units int, ok bool) {
	result := make(chan stockHint) // BUG: should be buffered (cap 1)
	go func() {
		result <- checkStock(sku)
	}()
	select {
	case h := <-result:
		return h.units, true
	default: // don't hold up the response for a hint
		return 0, false
	}
}

// checkStock simulates a call to an inventory service with ~1 ms latency,
// so the caller in leakBlockedGoroutine never finds the result ready.
func checkStock(sku string) stockHint {
	time.Sleep(time.Millisecond)
	return stockHint{sku: sku, units: stockLevel(sku)}
}

// stockLevel is a cheap deterministic stock figure for a sku.
func stockLevel(sku string) int {
	h := fnv.New32a()
	h.Write([]byte(sku))
	return int(h.Sum32() % 50)
}

// ---------------------------------------------------------------------------
// LEAK=keyedcache and LEAK=boundedcache

// cachedResponse is one rendered response kept by a response cache.
type cachedResponse struct {
	body   []byte
	etag   string
	stored time.Time
}

func newCachedResponse(body []byte) *cachedResponse {
	h := fnv.New64a()
	h.Write(body)
	return &cachedResponse{
		body:   append([]byte(nil), body...),
		etag:   `"` + strconv.FormatUint(h.Sum64(), 16) + `"`,
		stored: time.Now(),
	}
}

// responseCache caches rendered responses by request URI, with no eviction.
var responseCache = struct {
	sync.Mutex
	m map[string]*cachedResponse
}{m: make(map[string]*cachedResponse)}

// leakKeyedCache stores the rendered response under its URI and never
// evicts. Keys come from an unbounded set (every sku / order id), so the
// cache grows by one rendered response per distinct request.
//
//go:noinline
func leakKeyedCache(key string, body []byte) {
	responseCache.Lock()
	defer responseCache.Unlock()
	if _, ok := responseCache.m[key]; ok {
		return
	}
	responseCache.m[strings.Clone(key)] = newCachedResponse(body)
}

// fifoCache is the capped variant: a map plus a ring of keys in insertion
// order; inserting into a full cache evicts the oldest entry.
var fifoCache = struct {
	sync.Mutex
	m    map[string]*cachedResponse
	ring [boundedCacheCap]string
	next int
}{m: make(map[string]*cachedResponse, boundedCacheCap)}

// boundedCache is the same response cache as leakKeyedCache but capped at
// boundedCacheCap entries (FIFO eviction). It is NOT a leak: memory grows
// until the cache is full, then stays flat.
//
//go:noinline
func boundedCache(key string, body []byte) {
	fifoCache.Lock()
	defer fifoCache.Unlock()
	if _, ok := fifoCache.m[key]; ok {
		return
	}
	if old := fifoCache.ring[fifoCache.next]; old != "" {
		delete(fifoCache.m, old)
	}
	k := strings.Clone(key)
	fifoCache.ring[fifoCache.next] = k
	fifoCache.next = (fifoCache.next + 1) % boundedCacheCap
	fifoCache.m[k] = newCachedResponse(body)
}

// ---------------------------------------------------------------------------
// LEAK=subslice

// orderIndex remembers the ID of every order created, for idempotent retries.
var orderIndex = struct {
	sync.Mutex
	ids [][]byte
}{}

// leakSubslice renders the order into a 4 KiB scratch buffer and keeps its
// first 16 bytes as the order's index entry. The entry is a sub-slice: it
// keeps the whole 4 KiB buffer alive (copying the 16 bytes would not). Only
// created orders are indexed.
//
//go:noinline
func leakSubslice(status int, body []byte) {
	if status != http.StatusCreated {
		return
	}
	buf := make([]byte, 0, 4096)
	buf = append(buf, body...)
	if len(buf) < 16 {
		buf = buf[:16]
	}
	orderIndex.Lock()
	orderIndex.ids = append(orderIndex.ids, buf[:16])
	orderIndex.Unlock()
}

// ---------------------------------------------------------------------------
// LEAK=queue

// notification is one "your order / price watch" e-mail waiting to be sent.
type notification struct {
	key    string
	body   []byte
	queued time.Time
}

// outbox is the queue of notifications: leakQueue appends, the sender takes
// items[head] and moves head on. The consumed prefix is never dropped
// (neither items = items[head:] nor items[head] = nil), so every
// notification ever sent stays reachable from the backing array, which
// append keeps growing.
var outbox = struct {
	sync.Mutex
	items []*notification
	head  int
	sent  int
	wake  chan struct{}
}{wake: make(chan struct{}, 1)}

var startSender sync.Once

// leakQueue queues a notification carrying a copy of the response and wakes
// the sender, started on first use.
//
//go:noinline
func leakQueue(key string, body []byte) {
	startSender.Do(func() { go sendNotifications() })
	n := &notification{key: strings.Clone(key), body: bytes.Clone(body), queued: time.Now()}
	outbox.Lock()
	outbox.items = append(outbox.items, n)
	outbox.Unlock()
	select {
	case outbox.wake <- struct{}{}:
	default: // the sender is already awake
	}
}

// sendNotifications delivers the queued notifications in order, forever.
func sendNotifications() {
	for range outbox.wake {
		for {
			outbox.Lock()
			if outbox.head == len(outbox.items) {
				outbox.Unlock()
				break
			}
			n := outbox.items[outbox.head]
			outbox.head++ // BUG: the sent notification stays in items
			outbox.Unlock()
			deliver(n)
		}
	}
}

// deliver "sends" the notification: here it only counts it.
func deliver(n *notification) {
	outbox.Lock()
	outbox.sent++
	outbox.Unlock()
	_, _ = io.Discard.Write(n.body)
}

// ---------------------------------------------------------------------------
// LEAK=timer

// priceWatchTTL is how long a price watch waits before re-checking a price.
const priceWatchTTL = time.Hour

// priceWatch re-renders a resource when its price may have changed.
type priceWatch struct {
	key      string
	rendered []byte
}

// leakTimer arms a price watch for the resource served: in an hour, check
// whether the rendered price is stale. The request is done long before; the
// handler should Stop the timer (or not arm one per request at all), and
// nothing does: each armed timer stays in the runtime's timer heap with its
// function and the watch it captured until it fires.
//
//go:noinline
func leakTimer(key string, body []byte) {
	w := &priceWatch{key: strings.Clone(key), rendered: bytes.Clone(body)}
	time.AfterFunc(priceWatchTTL, func() { recheckPrice(w) }) // BUG: never stopped
}

// recheckPrice compares the watch's rendering with a fresh one.
func recheckPrice(w *priceWatch) {
	_, _ = io.Discard.Write(w.rendered)
}

// ---------------------------------------------------------------------------
// LEAK=context

type requestInfoKey struct{}

// requestInfo is request-scoped data carried by a background job's context.
type requestInfo struct {
	Method, URI, RemoteAddr, UserAgent string
	Start                              time.Time
}

// refreshJob is a background cache-refresh job for one resource.
type refreshJob struct {
	ctx    context.Context
	cancel context.CancelFunc
	key    string
}

// leakContext derives a cancellable job context from the long-lived app
// context for every request and hands the job to scheduleRefresh, which
// drops it without calling cancel. Each child stays registered in appCtx's
// children set (with its request-scoped values) until appCtx is cancelled.
//
//go:noinline
func leakContext(appCtx context.Context, r *http.Request, key string) {
	info := requestInfo{
		Method:     r.Method,
		URI:        r.URL.RequestURI(),
		RemoteAddr: r.RemoteAddr,
		UserAgent:  r.UserAgent(),
		Start:      time.Now(),
	}
	job := refreshJob{key: key}
	job.ctx, job.cancel = context.WithCancel(context.WithValue(appCtx, requestInfoKey{}, info))
	scheduleRefresh(job)
}

// scheduleRefresh decides the resource is still fresh and drops the job —
// forgetting to call job.cancel, which is the bug.
func scheduleRefresh(job refreshJob) {
	if job.ctx.Err() != nil {
		return
	}
	// Still fresh: nothing to refresh.
}

// ---------------------------------------------------------------------------
// LEAK=unclosed

// leakUnclosedBody asks the pricing upstream for a price but only looks at
// the status code: the response body is never read nor closed, so the
// connection stays checked out, pinning its readLoop/writeLoop goroutines,
// buffers and the upstream's server-side connection.
//
//go:noinline
func leakUnclosedBody(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	// BUG: "we only need the status"; resp.Body is neither read nor closed.
	return resp.StatusCode == http.StatusOK
}
