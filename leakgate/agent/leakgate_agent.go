// leakgate debug agent.
//
// This file is injected by leakgate into the main package of the service
// under test through `go build -overlay overlay.json`, using a mapping like
//
//	{"Replace": {"<abs main pkg dir>/zz_leakgate_agent.go": "<abs path of this file>"}}
//
// It shares the package block with arbitrary user code, so every
// package-level identifier is prefixed with leakgateAgent. It uses only the
// standard library and only language features available in Go 1.17, and
// builds wherever syscall.Getrusage exists (Linux and the BSDs, where leakgate
// runs services).
//
// When LEAKGATE_AGENT_ADDR is unset or empty the agent does nothing at all.
// Otherwise it needs LEAKGATE_AGENT_TOKEN, a secret leakgate makes for each
// service process (without one the agent does not start, and says so), and
// removes it from the environment so the service and its children never see
// it. It then serves, on its own loopback-only listener and its own
// http.ServeMux (never http.DefaultServeMux):
//
//	GET      /leakgate/health
//	GET      /leakgate/metrics            runtime/metrics snapshot, JSON
//	GET      /leakgate/counters           exact cumulative CPU, allocation and GC counts, JSON
//	POST|GET /leakgate/checkpoint         GC twice + ReadMemStats, JSON
//	POST     /leakgate/heapdump?name=N&max=B  GC twice + runtime/debug.WriteHeapDump, JSON
//	GET      /debug/pprof/                plain-text index
//	GET      /debug/pprof/profile?seconds=N  CPU profile (1..60 s, default 10)
//	GET      /debug/pprof/trace?seconds=N    execution trace (0.1..30 s, default 1)
//	GET      /debug/pprof/<name>?debug=N     any pprof.Lookup(name) profile
//
// Every request must name a loopback host in its Host header (127.0.0.0/8,
// ::1 or localhost, with or without a port) and carry the token in an
// X-Leakgate-Token header (compared in constant time); anything else is
// answered 403 before it reaches a handler. The Host check stops a web page
// in the developer's browser that rebinds its own name to 127.0.0.1 (its
// requests carry its name); the token stops anything that has not been given
// it, a page included (a browser sends no custom header cross-origin without a
// CORS preflight, which the agent never grants).
//
// LEAKGATE_AGENT_MEMPROFILERATE, when set, becomes runtime.MemProfileRate
// (bytes allocated per heap-profile sample; Go's default is 512 KiB, too
// coarse to place a leak of a few hundred kilobytes). It is set in init, before
// main allocates, as the runtime documentation asks.
//
// LEAKGATE_AGENT_DUMP_DIR, when set, is the directory /leakgate/heapdump
// writes to (N.heapdump, N of 1-40 characters [a-z0-9-]); without it heap
// dumps are off. A dump stops the world while it is written, so the agent
// refuses one when the live heap after the forced GCs exceeds max bytes
// (default 256 MiB), and says so.
//
// Errors are reported on stderr prefixed with "leakgate agent: ". The agent
// never writes to stdout, never panics out of init and never exits the
// process.

package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	leakgateAgentEnvAddr     = "LEAKGATE_AGENT_ADDR"
	leakgateAgentEnvAddrFile = "LEAKGATE_AGENT_ADDR_FILE"
	leakgateAgentEnvDumpDir  = "LEAKGATE_AGENT_DUMP_DIR"
	leakgateAgentEnvMemRate  = "LEAKGATE_AGENT_MEMPROFILERATE"
	leakgateAgentEnvToken    = "LEAKGATE_AGENT_TOKEN"
	leakgateAgentTokenHeader = "X-Leakgate-Token"
	leakgateAgentLogPrefix   = "leakgate agent: "

	leakgateAgentMetricHeapLive    = "/gc/heap/live:bytes"
	leakgateAgentMetricHeapObjects = "/memory/classes/heap/objects:bytes"
	leakgateAgentMetricHeapGoal    = "/gc/heap/goal:bytes"
	leakgateAgentMetricTotalMemory = "/memory/classes/total:bytes"
	leakgateAgentMetricGoroutines  = "/sched/goroutines:goroutines"
	leakgateAgentMetricGCCycles    = "/gc/cycles/total:gc-cycles"
	leakgateAgentMetricGCCPU       = "/cpu/classes/gc/total:cpu-seconds"
	leakgateAgentMetricTotalCPU    = "/cpu/classes/total:cpu-seconds"
	leakgateAgentMetricAllocBytes  = "/gc/heap/allocs:bytes"
	leakgateAgentMetricAllocObjs   = "/gc/heap/allocs:objects"
	leakgateAgentMetricTinyAllocs  = "/gc/heap/tiny/allocs:objects"
)

var (
	leakgateAgentStart time.Time

	leakgateAgentMetricsOnce  sync.Once
	leakgateAgentMetricsAvail map[string]metrics.ValueKind

	// 0 = idle, 1 = busy; accessed with sync/atomic only.
	leakgateAgentCPUBusy   int32
	leakgateAgentTraceBusy int32
)

func init() {
	addr := os.Getenv(leakgateAgentEnvAddr)
	if addr == "" {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			leakgateAgentLogf("internal error during start-up: %v", r)
		}
	}()
	token := os.Getenv(leakgateAgentEnvToken)
	os.Unsetenv(leakgateAgentEnvToken)
	if token == "" {
		leakgateAgentLogf("refusing to start: %s is unset (leakgate sets it; the agent answers only requests that carry it)", leakgateAgentEnvToken)
		return
	}
	leakgateAgentStart = time.Now()
	if rate := os.Getenv(leakgateAgentEnvMemRate); rate != "" {
		if n, err := strconv.Atoi(rate); err == nil && n > 0 {
			runtime.MemProfileRate = n
		} else {
			leakgateAgentLogf("ignoring %s=%q: want a positive integer", leakgateAgentEnvMemRate, rate)
		}
	}
	leakgateAgentStartServer(addr, os.Getenv(leakgateAgentEnvAddrFile), token)
}

func leakgateAgentLogf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, leakgateAgentLogPrefix+format+"\n", args...)
}

// leakgateAgentCheckAddr validates that addr is host:port with a loopback
// host and returns the address to listen on.
func leakgateAgentCheckAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("invalid %s %q: %v", leakgateAgentEnvAddr, addr, err)
	}
	if port == "" {
		return "", fmt.Errorf("invalid %s %q: missing port", leakgateAgentEnvAddr, addr)
	}
	if n, perr := strconv.Atoi(port); perr != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("invalid %s %q: bad port %q", leakgateAgentEnvAddr, addr, port)
	}
	if strings.EqualFold(host, "localhost") {
		// Avoid resolver surprises: localhost always means IPv4 loopback.
		return net.JoinHostPort("127.0.0.1", port), nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("refusing %s %q: host must be a loopback IP (127.0.0.0/8, ::1) or localhost", leakgateAgentEnvAddr, addr)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

func leakgateAgentStartServer(addr, addrFile, token string) {
	listenAddr, err := leakgateAgentCheckAddr(addr)
	if err != nil {
		leakgateAgentLogf("%v", err)
		return
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		leakgateAgentLogf("listen on %s: %v", listenAddr, err)
		return
	}
	bound := ln.Addr().String()
	if addrFile != "" {
		if err := leakgateAgentWriteFileAtomic(addrFile, []byte(bound+"\n")); err != nil {
			leakgateAgentLogf("writing address file: %v", err)
			ln.Close()
			return
		}
	}

	srv := &http.Server{
		Handler:           leakgateAgentGuard(leakgateAgentMux(), token),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// CPU profiles may run for 60 s and traces for 30 s, and the
		// response is only written once they finish.
		WriteTimeout:   80 * time.Second,
		IdleTimeout:    60 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       log.New(os.Stderr, leakgateAgentLogPrefix, 0),
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			leakgateAgentLogf("serve: %v", err)
		}
	}()
}

func leakgateAgentWriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// leakgateAgentGuard answers 403 to a request whose Host is not loopback or
// that does not carry the token.
func leakgateAgentGuard(next http.Handler, token string) http.Handler {
	want := []byte(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if !leakgateAgentLoopbackHost(r.Host) {
			http.Error(w, fmt.Sprintf("leakgate agent: refused: Host %q is not a loopback address", r.Host), http.StatusForbidden)
			return
		}
		got := []byte(r.Header.Get(leakgateAgentTokenHeader))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			http.Error(w, "leakgate agent: refused: missing or wrong "+leakgateAgentTokenHeader, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// leakgateAgentLoopbackHost reports whether a Host header names this machine
// by a loopback address: 127.0.0.0/8, ::1 (in brackets) or localhost, with an
// optional numeric port.
func leakgateAgentLoopbackHost(hostport string) bool {
	host := hostport
	if h, port, err := net.SplitHostPort(hostport); err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			return false
		}
		host = h
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	} else if strings.Contains(hostport, ":") {
		return false // an IPv6 address must be in brackets
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func leakgateAgentMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/leakgate/health", leakgateAgentWrap(leakgateAgentHealth))
	mux.HandleFunc("/leakgate/metrics", leakgateAgentWrap(leakgateAgentMetrics))
	mux.HandleFunc("/leakgate/counters", leakgateAgentWrap(leakgateAgentCounters))
	mux.HandleFunc("/leakgate/checkpoint", leakgateAgentWrap(leakgateAgentCheckpoint))
	mux.HandleFunc("/leakgate/heapdump", leakgateAgentWrap(leakgateAgentHeapDump))
	mux.HandleFunc("/debug/pprof/", leakgateAgentWrap(leakgateAgentPprof))
	return mux
}

// leakgateAgentWrap keeps a panic in a handler from reaching net/http's
// per-connection recovery (which would log a stack trace) and answers 500.
func leakgateAgentWrap(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if rec := recover(); rec != nil {
				if rec == http.ErrAbortHandler {
					return
				}
				leakgateAgentLogf("handler %s panicked: %v", r.URL.Path, rec)
				http.Error(w, fmt.Sprintf("leakgate agent: internal error: %v", rec), http.StatusInternalServerError)
			}
		}()
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h(w, r)
	}
}

func leakgateAgentAllowMethods(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	w.Header().Set("Allow", strings.Join(methods, ", "))
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func leakgateAgentWriteJSON(w http.ResponseWriter, v interface{}) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "leakgate agent: encoding JSON: "+err.Error(), http.StatusInternalServerError)
		return
	}
	data = append(data, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Write(data)
}

func leakgateAgentHealth(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok"))
}

// leakgateAgentFloat is a float64 that always encodes with a decimal point
// or exponent, so JSON consumers decode it as a float, never an integer.
type leakgateAgentFloat float64

func (f leakgateAgentFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("0.0"), nil
	}
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return []byte(s), nil
}

func leakgateAgentFloatPtr(v float64) *leakgateAgentFloat {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	f := leakgateAgentFloat(v)
	return &f
}

type leakgateAgentMetricsResp struct {
	HeapLiveBytes    *uint64 `json:"heap_live_bytes,omitempty"`
	HeapLiveSource   string  `json:"heap_live_source,omitempty"`
	HeapObjectsBytes *uint64 `json:"heap_objects_bytes,omitempty"`
	HeapGoalBytes    *uint64 `json:"heap_goal_bytes,omitempty"`
	TotalMemoryBytes *uint64 `json:"total_memory_bytes,omitempty"`
	// Goroutines is /sched/goroutines:goroutines, which since Go 1.26 also
	// counts runtime system goroutines (e.g. GC mark workers, started at the
	// first GC). NumGoroutine is runtime.NumGoroutine() (user goroutines
	// only, no stop-the-world) and is stable across Go versions.
	Goroutines      *uint64             `json:"goroutines,omitempty"`
	NumGoroutine    int                 `json:"num_goroutine"`
	GCCycles        *uint64             `json:"gc_cycles,omitempty"`
	GCCPUSeconds    *leakgateAgentFloat `json:"gc_cpu_seconds,omitempty"`
	TotalCPUSeconds *leakgateAgentFloat `json:"total_cpu_seconds,omitempty"`
	// AllocBytes and AllocObjects count every heap allocation since the
	// process started (garbage included): their deltas over a window are
	// what the window's requests allocated. /gc/heap/allocs:objects leaves
	// out the tiny allocator's objects, which MemStats.Mallocs counts: they
	// are added, so the figure is the same with or without the agent.
	AllocBytes   *uint64 `json:"alloc_bytes,omitempty"`
	AllocObjects *uint64 `json:"alloc_objects,omitempty"`
	// ProcessCPUSeconds is getrusage(RUSAGE_SELF) user + system time: the
	// kernel's precise per-thread run time summed over every thread the
	// process ever had (exited ones included), at microsecond resolution.
	// runtime/metrics' /cpu/classes/total is wall time x GOMAXPROCS, not CPU
	// used, so it cannot say what a request costs.
	ProcessCPUSeconds    *leakgateAgentFloat `json:"process_cpu_seconds,omitempty"`
	ProcessUserSeconds   *leakgateAgentFloat `json:"process_user_seconds,omitempty"`
	ProcessSystemSeconds *leakgateAgentFloat `json:"process_system_seconds,omitempty"`
	GoVersion            string              `json:"go_version"`
	GOMAXPROCS           int                 `json:"gomaxprocs"`
	NumCPU               int                 `json:"num_cpu"`
	PID                  int                 `json:"pid"`
	UptimeSeconds        *leakgateAgentFloat `json:"uptime_seconds,omitempty"`
}

func leakgateAgentAvailableMetrics() map[string]metrics.ValueKind {
	leakgateAgentMetricsOnce.Do(func() {
		m := make(map[string]metrics.ValueKind)
		for _, d := range metrics.All() {
			m[d.Name] = d.Kind
		}
		leakgateAgentMetricsAvail = m
	})
	return leakgateAgentMetricsAvail
}

// leakgateAgentSum is a + b, or a alone where b is not available.
func leakgateAgentSum(a, b *uint64) *uint64 {
	if a == nil || b == nil {
		return a
	}
	sum := *a + *b
	return &sum
}

func leakgateAgentMetrics(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	avail := leakgateAgentAvailableMetrics()

	wanted := []string{
		leakgateAgentMetricHeapLive,
		leakgateAgentMetricHeapObjects,
		leakgateAgentMetricHeapGoal,
		leakgateAgentMetricTotalMemory,
		leakgateAgentMetricGoroutines,
		leakgateAgentMetricGCCycles,
		leakgateAgentMetricGCCPU,
		leakgateAgentMetricTotalCPU,
		leakgateAgentMetricAllocBytes,
		leakgateAgentMetricAllocObjs,
		leakgateAgentMetricTinyAllocs,
	}
	var samples []metrics.Sample
	seen := make(map[string]bool)
	for _, name := range wanted {
		if _, ok := avail[name]; ok && !seen[name] {
			seen[name] = true
			samples = append(samples, metrics.Sample{Name: name})
		}
	}
	metrics.Read(samples)

	u := make(map[string]*uint64)
	f := make(map[string]*leakgateAgentFloat)
	for i := range samples {
		s := &samples[i]
		switch s.Value.Kind() {
		case metrics.KindUint64:
			v := s.Value.Uint64()
			u[s.Name] = &v
		case metrics.KindFloat64:
			f[s.Name] = leakgateAgentFloatPtr(s.Value.Float64())
		}
	}

	// /gc/heap/live:bytes (Go 1.21+) is measured by the GC mark phase and
	// reads 0 until the first GC cycle has completed; fall back to the
	// heap object bytes (an upper bound of the live heap) until then.
	heapLiveName := leakgateAgentMetricHeapObjects
	if c := u[leakgateAgentMetricGCCycles]; u[leakgateAgentMetricHeapLive] != nil && c != nil && *c > 0 {
		heapLiveName = leakgateAgentMetricHeapLive
	}

	resp := leakgateAgentMetricsResp{
		HeapLiveBytes:    u[heapLiveName],
		HeapObjectsBytes: u[leakgateAgentMetricHeapObjects],
		HeapGoalBytes:    u[leakgateAgentMetricHeapGoal],
		TotalMemoryBytes: u[leakgateAgentMetricTotalMemory],
		Goroutines:       u[leakgateAgentMetricGoroutines],
		GCCycles:         u[leakgateAgentMetricGCCycles],
		GCCPUSeconds:     f[leakgateAgentMetricGCCPU],
		TotalCPUSeconds:  f[leakgateAgentMetricTotalCPU],
		AllocBytes:       u[leakgateAgentMetricAllocBytes],
		AllocObjects:     leakgateAgentSum(u[leakgateAgentMetricAllocObjs], u[leakgateAgentMetricTinyAllocs]),
		NumGoroutine:     runtime.NumGoroutine(),
		GoVersion:        runtime.Version(),
		GOMAXPROCS:       runtime.GOMAXPROCS(0),
		NumCPU:           runtime.NumCPU(),
		PID:              os.Getpid(),
		UptimeSeconds:    leakgateAgentFloatPtr(time.Since(leakgateAgentStart).Seconds()),
	}
	if resp.HeapLiveBytes != nil {
		resp.HeapLiveSource = heapLiveName
	}
	resp.ProcessCPUSeconds, resp.ProcessUserSeconds, resp.ProcessSystemSeconds = leakgateAgentProcessCPU()
	leakgateAgentWriteJSON(w, resp)
}

// leakgateAgentCountersResp is what a window's per-request costs are
// computed from: two readings, just before and just after the window's load,
// subtract. The allocation counts come from runtime.ReadMemStats, which
// stops the world and flushes every P's allocation cache first, so they are
// exact. runtime/metrics' /gc/heap/allocs settles a small-object span's
// count only when the span moves between a P's cache and the heap: read
// mid-flight it is off by up to a span per size class per P (about a
// megabyte), a few per cent of a two-second block's allocations.
type leakgateAgentCountersResp struct {
	AllocBytes           uint64              `json:"alloc_bytes"`
	AllocObjects         uint64              `json:"alloc_objects"`
	GCCycles             uint32              `json:"gc_cycles"`
	ProcessCPUSeconds    *leakgateAgentFloat `json:"process_cpu_seconds,omitempty"`
	ProcessUserSeconds   *leakgateAgentFloat `json:"process_user_seconds,omitempty"`
	ProcessSystemSeconds *leakgateAgentFloat `json:"process_system_seconds,omitempty"`
}

func leakgateAgentCounters(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	resp := leakgateAgentCountersResp{
		AllocBytes:   ms.TotalAlloc,
		AllocObjects: ms.Mallocs,
		GCCycles:     ms.NumGC,
	}
	resp.ProcessCPUSeconds, resp.ProcessUserSeconds, resp.ProcessSystemSeconds = leakgateAgentProcessCPU()
	leakgateAgentWriteJSON(w, resp)
}

// leakgateAgentProcessCPU is getrusage(RUSAGE_SELF): user + system, user
// and system CPU seconds; nil where getrusage fails.
func leakgateAgentProcessCPU() (cpu, user, system *leakgateAgentFloat) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return nil, nil, nil
	}
	u := time.Duration(ru.Utime.Nano()).Seconds()
	s := time.Duration(ru.Stime.Nano()).Seconds()
	return leakgateAgentFloatPtr(u + s), leakgateAgentFloatPtr(u), leakgateAgentFloatPtr(s)
}

type leakgateAgentCheckpointResp struct {
	HeapAlloc   uint64 `json:"heap_alloc"`
	HeapObjects uint64 `json:"heap_objects"`
	HeapInuse   uint64 `json:"heap_inuse"`
	HeapSys     uint64 `json:"heap_sys"`
	StackInuse  uint64 `json:"stack_inuse"`
	Sys         uint64 `json:"sys"`
	NumGC       uint32 `json:"num_gc"`
	Goroutines  int    `json:"goroutines"`
}

func leakgateAgentCheckpoint(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodPost, http.MethodGet) {
		return
	}
	// The second cycle frees what only the sync.Pool victim caches kept alive.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	leakgateAgentWriteJSON(w, leakgateAgentCheckpointResp{
		HeapAlloc:   ms.HeapAlloc,
		HeapObjects: ms.HeapObjects,
		HeapInuse:   ms.HeapInuse,
		HeapSys:     ms.HeapSys,
		StackInuse:  ms.StackInuse,
		Sys:         ms.Sys,
		NumGC:       ms.NumGC,
		Goroutines:  runtime.NumGoroutine(),
	})
}

type leakgateAgentHeapDumpResp struct {
	File         string  `json:"file,omitempty"`
	Bytes        int64   `json:"bytes,omitempty"`
	PauseSeconds float64 `json:"pause_seconds,omitempty"`
	HeapAlloc    uint64  `json:"heap_alloc"`
	Refused      string  `json:"refused,omitempty"`
}

const leakgateAgentDumpMaxDefault = 256 << 20

var leakgateAgentDumpBusy int32

func leakgateAgentDumpName(name string) bool {
	if name == "" || len(name) > 40 {
		return false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// leakgateAgentHeapDump writes a heap dump after the same two forced GCs as
// the checkpoint, so what it holds is what the checkpoint counted as live.
func leakgateAgentHeapDump(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodPost) {
		return
	}
	dir := os.Getenv(leakgateAgentEnvDumpDir)
	if dir == "" {
		http.Error(w, "heap dumps are off: "+leakgateAgentEnvDumpDir+" is unset", http.StatusNotFound)
		return
	}
	name := r.URL.Query().Get("name")
	if !leakgateAgentDumpName(name) {
		http.Error(w, "name: want 1-40 characters of [a-z0-9-]", http.StatusBadRequest)
		return
	}
	limit := uint64(leakgateAgentDumpMaxDefault)
	if v := r.URL.Query().Get("max"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			http.Error(w, "max: want a positive number of bytes", http.StatusBadRequest)
			return
		}
		limit = n
	}
	// Go 1.26's goroutineleak profile leaves the goroutines it found in a
	// status runtime/heapdump.go does not know: WriteHeapDump would abort
	// the process ("dumpgs in STW - bad status"). Refuse instead.
	if p := pprof.Lookup("goroutineleak"); p != nil && p.Count() > 0 {
		leakgateAgentWriteJSON(w, leakgateAgentHeapDumpResp{
			Refused: fmt.Sprintf("%d goroutines are marked leaked by the goroutineleak profile, and a heap dump would abort the process on them", p.Count()),
		})
		return
	}
	if !atomic.CompareAndSwapInt32(&leakgateAgentDumpBusy, 0, 1) {
		http.Error(w, "a heap dump is already being written", http.StatusConflict)
		return
	}
	defer atomic.StoreInt32(&leakgateAgentDumpBusy, 0)
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > limit {
		leakgateAgentWriteJSON(w, leakgateAgentHeapDumpResp{
			HeapAlloc: ms.HeapAlloc,
			Refused:   fmt.Sprintf("the live heap (%d bytes) is over the %d-byte bound", ms.HeapAlloc, limit),
		})
		return
	}
	path := filepath.Join(dir, name+".heapdump")
	f, err := os.CreateTemp(dir, name+".heapdump.*.tmp")
	if err != nil {
		http.Error(w, "creating the dump file: "+err.Error(), http.StatusInternalServerError)
		return
	}
	start := time.Now()
	debug.WriteHeapDump(f.Fd())
	pause := time.Since(start)
	info, statErr := f.Stat()
	closeErr := f.Close()
	if statErr == nil && closeErr == nil {
		closeErr = os.Rename(f.Name(), path)
	}
	if statErr != nil || closeErr != nil {
		os.Remove(f.Name())
		http.Error(w, fmt.Sprintf("writing the dump file: %v %v", statErr, closeErr), http.StatusInternalServerError)
		return
	}
	leakgateAgentWriteJSON(w, leakgateAgentHeapDumpResp{
		File:         path,
		Bytes:        info.Size(),
		PauseSeconds: pause.Seconds(),
		HeapAlloc:    ms.HeapAlloc,
	})
}

func leakgateAgentPprof(w http.ResponseWriter, r *http.Request) {
	if !leakgateAgentAllowMethods(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/")
	switch name {
	case "":
		leakgateAgentPprofIndex(w)
	case "profile":
		leakgateAgentCPUProfile(w, r)
	case "trace":
		leakgateAgentTrace(w, r)
	default:
		leakgateAgentNamedProfile(w, r, name)
	}
}

func leakgateAgentPprofIndex(w http.ResponseWriter) {
	var b bytes.Buffer
	b.WriteString("leakgate agent profiles (/debug/pprof/<name>?debug=0|1|2):\n")
	profiles := pprof.Profiles()
	sort.Slice(profiles, func(i, j int) bool { return profiles[i].Name() < profiles[j].Name() })
	for _, p := range profiles {
		fmt.Fprintf(&b, "%s\t%d\n", p.Name(), p.Count())
	}
	b.WriteString("profile\tCPU profile, ?seconds=N (1..60, default 10)\n")
	b.WriteString("trace\texecution trace, ?seconds=N (0.1..30, default 1)\n")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(b.Bytes())
}

func leakgateAgentNamedProfile(w http.ResponseWriter, r *http.Request, name string) {
	p := pprof.Lookup(name)
	if p == nil {
		http.Error(w, fmt.Sprintf("leakgate agent: unknown profile %q", name), http.StatusNotFound)
		return
	}
	debug := 0
	if s := r.FormValue("debug"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > 2 {
			http.Error(w, "leakgate agent: debug must be 0, 1 or 2", http.StatusBadRequest)
			return
		}
		debug = n
	}
	if gc, _ := strconv.Atoi(r.FormValue("gc")); gc > 0 && (name == "heap" || name == "allocs") {
		runtime.GC()
	}
	var buf bytes.Buffer
	if err := p.WriteTo(&buf, debug); err != nil {
		http.Error(w, fmt.Sprintf("leakgate agent: writing profile %q: %v", name, err), http.StatusInternalServerError)
		return
	}
	if debug == 0 {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

// leakgateAgentSeconds parses ?seconds=, clamped to [lo, hi].
func leakgateAgentSeconds(r *http.Request, def, lo, hi float64) (time.Duration, error) {
	sec := def
	if s := r.FormValue("seconds"); s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("bad seconds %q", s)
		}
		sec = v
	}
	if sec < lo {
		sec = lo
	}
	if sec > hi {
		sec = hi
	}
	return time.Duration(sec * float64(time.Second)), nil
}

// leakgateAgentSleep waits for d or until the client goes away; it reports
// whether the full duration elapsed.
func leakgateAgentSleep(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

func leakgateAgentCPUProfile(w http.ResponseWriter, r *http.Request) {
	d, err := leakgateAgentSeconds(r, 10, 1, 60)
	if err != nil {
		http.Error(w, "leakgate agent: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !atomic.CompareAndSwapInt32(&leakgateAgentCPUBusy, 0, 1) {
		http.Error(w, "leakgate agent: a CPU profile is already running", http.StatusConflict)
		return
	}
	defer atomic.StoreInt32(&leakgateAgentCPUBusy, 0)
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		http.Error(w, "leakgate agent: cannot start CPU profile (already running?): "+err.Error(), http.StatusConflict)
		return
	}
	ok := leakgateAgentSleep(r, d)
	pprof.StopCPUProfile()
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

func leakgateAgentTrace(w http.ResponseWriter, r *http.Request) {
	d, err := leakgateAgentSeconds(r, 1, 0.1, 30)
	if err != nil {
		http.Error(w, "leakgate agent: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !atomic.CompareAndSwapInt32(&leakgateAgentTraceBusy, 0, 1) {
		http.Error(w, "leakgate agent: a trace is already running", http.StatusConflict)
		return
	}
	defer atomic.StoreInt32(&leakgateAgentTraceBusy, 0)
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		http.Error(w, "leakgate agent: cannot start trace (already running?): "+err.Error(), http.StatusConflict)
		return
	}
	ok := leakgateAgentSleep(r, d)
	trace.Stop()
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}
