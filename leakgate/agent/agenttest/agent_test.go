package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentBinary is built once in TestMain with the agent injected via overlay.
var agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "leakgate-agenttest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary, err = buildWithAgent(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildWithAgent builds this package with leakgate_agent.go injected as
// <pkgdir>/zz_leakgate_agent.go, the way leakgate does.
func buildWithAgent(outDir string) (string, error) {
	pkgDir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	agentFile, err := filepath.Abs(filepath.Join(pkgDir, "..", "leakgate_agent.go"))
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(agentFile); err != nil {
		return "", err
	}
	overlay := map[string]map[string]string{
		"Replace": {filepath.Join(pkgDir, "zz_leakgate_agent.go"): agentFile},
	}
	data, err := json.Marshal(overlay)
	if err != nil {
		return "", err
	}
	overlayPath := filepath.Join(outDir, "overlay.json")
	if err := os.WriteFile(overlayPath, data, 0o644); err != nil {
		return "", err
	}
	bin := filepath.Join(outDir, "svc")
	cmd := exec.Command("go", "build", "-overlay", overlayPath, "-o", bin, ".")
	cmd.Dir = pkgDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -overlay: %v\n%s", err, out)
	}
	return bin, nil
}

// lockedBuffer collects the child's stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type service struct {
	dir       string // holds svc-addr and agent-addr
	svcAddr   string // the service's own listener
	agentAddr string // "" if the agent is not expected to listen
	pid       int
	stderr    *lockedBuffer
	stdout    *lockedBuffer
	exited    chan struct{}
}

// testToken is the LEAKGATE_AGENT_TOKEN the tests give the agent; fetch sends it.
const testToken = "agenttest-token-0123456789"

// startService runs the built binary with the given LEAKGATE_AGENT_ADDR
// (empty: unset) and testToken, and waits (bounded) for the service and, if
// wantAgent, the agent address file. The process is always killed in
// t.Cleanup.
func startService(t *testing.T, agentEnv string, wantAgent bool) *service {
	t.Helper()
	return startServiceWithToken(t, agentEnv, testToken, wantAgent)
}

// startServiceWithToken is startService with the given LEAKGATE_AGENT_TOKEN
// (empty: unset).
func startServiceWithToken(t *testing.T, agentEnv, token string, wantAgent bool) *service {
	t.Helper()
	dir := t.TempDir()
	svcAddrFile := filepath.Join(dir, "svc-addr")
	agentAddrFile := filepath.Join(dir, "agent-addr")

	env := []string{}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LEAKGATE_AGENT_") || strings.HasPrefix(kv, "AGENTTEST_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"AGENTTEST_ADDR=127.0.0.1:0",
		"AGENTTEST_ADDR_FILE="+svcAddrFile,
		"LEAKGATE_AGENT_ADDR_FILE="+agentAddrFile,
		"LEAKGATE_AGENT_DUMP_DIR="+dir,
	)
	if agentEnv != "" {
		env = append(env, "LEAKGATE_AGENT_ADDR="+agentEnv)
	}
	if token != "" {
		env = append(env, "LEAKGATE_AGENT_TOKEN="+token)
	}

	s := &service{dir: dir, stderr: &lockedBuffer{}, stdout: &lockedBuffer{}, exited: make(chan struct{})}
	cmd := exec.Command(agentBinary)
	cmd.Env = env
	cmd.Stderr = s.stderr
	cmd.Stdout = s.stdout
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case <-s.exited:
		case <-time.After(5 * time.Second):
			t.Errorf("process %d did not exit after kill", s.pid)
		}
	})

	s.svcAddr = waitForFile(t, s, svcAddrFile)
	if wantAgent {
		s.agentAddr = waitForFile(t, s, agentAddrFile)
		if !strings.HasPrefix(s.agentAddr, "127.0.0.1:") {
			t.Fatalf("agent address %q is not 127.0.0.1:port", s.agentAddr)
		}
	}
	return s
}

func waitForFile(t *testing.T, s *service, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return strings.TrimSpace(string(data))
		}
		select {
		case <-s.exited:
			t.Fatalf("service exited before writing %s; stderr:\n%s", path, s.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("timed out waiting for %s; stderr:\n%s", path, s.stderr.String())
	return ""
}

var client = &http.Client{Timeout: 20 * time.Second}

func fetch(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Leakgate-Token", testToken)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, body
}

func fetchJSON(t *testing.T, method, url string) map[string]interface{} {
	t.Helper()
	resp, body := fetch(t, method, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: status %d: %s", method, url, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", url, ct)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("%s: bad JSON %q: %v", url, body, err)
	}
	return m
}

func number(t *testing.T, m map[string]interface{}, key string) float64 {
	t.Helper()
	v, ok := m[key]
	if !ok {
		t.Fatalf("missing field %q in %v", key, m)
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("field %q = %#v is not a number", key, v)
	}
	return f
}

func TestAgentEndpoints(t *testing.T) {
	s := startService(t, "127.0.0.1:0", true)
	base := "http://" + s.agentAddr

	t.Run("health", func(t *testing.T) {
		resp, body := fetch(t, "GET", base+"/leakgate/health")
		if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
			t.Fatalf("health: %d %q", resp.StatusCode, body)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		m := fetchJSON(t, "GET", base+"/leakgate/metrics")
		for _, k := range []string{"heap_live_bytes", "heap_objects_bytes", "heap_goal_bytes",
			"total_memory_bytes", "goroutines", "num_goroutine", "gc_cycles", "gc_cpu_seconds",
			"total_cpu_seconds", "gomaxprocs", "num_cpu", "pid", "uptime_seconds",
			"alloc_bytes", "alloc_objects", "process_cpu_seconds", "process_user_seconds",
			"process_system_seconds"} {
			number(t, m, k)
		}
		cpu := number(t, m, "process_cpu_seconds")
		if sum := number(t, m, "process_user_seconds") + number(t, m, "process_system_seconds"); cpu <= 0 || math.Abs(cpu-sum) > 1e-6 {
			t.Errorf("process_cpu_seconds %v is not user + system (%v) or not positive", cpu, sum)
		}
		// The counters only grow, and requests move them: the agent's own
		// answer allocates, and serving /hello costs CPU.
		for i := 0; i < 200; i++ {
			fetch(t, "GET", "http://"+s.svcAddr+"/hello")
		}
		later := fetchJSON(t, "GET", base+"/leakgate/metrics")
		for _, k := range []string{"alloc_bytes", "alloc_objects", "process_cpu_seconds"} {
			if number(t, later, k) <= number(t, m, k) {
				t.Errorf("%s did not grow over 200 requests: %v then %v", k, m[k], later[k])
			}
		}
		if number(t, m, "goroutines") <= 0 {
			t.Errorf("goroutines <= 0: %v", m)
		}
		if number(t, m, "heap_live_bytes") <= 0 {
			t.Errorf("heap_live_bytes <= 0: %v", m)
		}
		if int(number(t, m, "pid")) != s.pid {
			t.Errorf("pid %v, want %d", m["pid"], s.pid)
		}
		if v, _ := m["go_version"].(string); !strings.HasPrefix(v, "go") {
			t.Errorf("go_version %q", v)
		}
		src, _ := m["heap_live_source"].(string)
		if src != "/gc/heap/live:bytes" && src != "/memory/classes/heap/objects:bytes" {
			t.Errorf("heap_live_source %q", src)
		}
	})

	t.Run("heap dump", func(t *testing.T) {
		m := fetchJSON(t, "POST", base+"/leakgate/heapdump?name=heap-drain")
		file, _ := m["file"].(string)
		if file != filepath.Join(s.dir, "heap-drain.heapdump") {
			t.Fatalf("file %q, want heap-drain.heapdump in %s: %v", file, s.dir, m)
		}
		data, err := os.ReadFile(file)
		if err != nil || !bytes.HasPrefix(data, []byte("go1.7 heap dump\n")) || int64(len(data)) != int64(number(t, m, "bytes")) {
			t.Fatalf("dump: %v, %d bytes, answer %v", err, len(data), m)
		}
		if pause := number(t, m, "pause_seconds"); pause <= 0 || pause > 10 {
			t.Errorf("pause_seconds %v", pause)
		}
		leftovers, _ := filepath.Glob(filepath.Join(s.dir, "*.tmp"))
		if len(leftovers) != 0 {
			t.Errorf("temporary files left: %v", leftovers)
		}
		refused := fetchJSON(t, "POST", base+"/leakgate/heapdump?name=big&max=1024")
		if r, _ := refused["refused"].(string); !strings.Contains(r, "over the 1024-byte bound") {
			t.Errorf("a heap over max: %v", refused)
		}
		if _, err := os.Stat(filepath.Join(s.dir, "big.heapdump")); err == nil {
			t.Errorf("a refused dump was written")
		}
		for _, q := range []string{"name=../x", "name=", "name=UPPER", "name=ok&max=-1"} {
			if resp, _ := fetch(t, "POST", base+"/leakgate/heapdump?"+q); resp.StatusCode != 400 {
				t.Errorf("%s: status %d, want 400", q, resp.StatusCode)
			}
		}
		if resp, _ := fetch(t, "GET", base+"/leakgate/heapdump?name=x"); resp.StatusCode != 405 {
			t.Errorf("GET: status %d, want 405", resp.StatusCode)
		}
	})

	t.Run("counters are exact", func(t *testing.T) {
		c := fetchJSON(t, "GET", base+"/leakgate/counters")
		for _, k := range []string{"alloc_bytes", "alloc_objects", "gc_cycles",
			"process_cpu_seconds", "process_user_seconds", "process_system_seconds"} {
			number(t, c, k)
		}
		// 20 requests that each allocate 100 objects of 48 B, against 20 that
		// allocate none: the difference is 2,000 objects and 96,000 B, give or
		// take what net/http itself allocates differently (a new connection's
		// buffers: a few objects, 4 KiB each). Read without flushing the per-P
		// caches (runtime/metrics), a span's free slots count as allocated when
		// a P takes it: 170 objects of 48 B per span, and off by hundreds of
		// objects and tens of KB here.
		delta := func(query string) (bytes, objects float64) {
			before := fetchJSON(t, "GET", base+"/leakgate/counters")
			for i := 0; i < 20; i++ {
				fetch(t, "GET", "http://"+s.svcAddr+"/alloc?"+query)
			}
			after := fetchJSON(t, "GET", base+"/leakgate/counters")
			return number(t, after, "alloc_bytes") - number(t, before, "alloc_bytes"),
				number(t, after, "alloc_objects") - number(t, before, "alloc_objects")
		}
		// A GC empties net/http's sync.Pools, and refilling them allocates.
		fetch(t, "GET", "http://"+s.svcAddr+"/gcpercent?v=-1")
		defer fetch(t, "GET", "http://"+s.svcAddr+"/gcpercent?v=100")
		delta("n=0&size=48") // connections and lazily built state, out of the way
		for round := 0; round < 3; round++ {
			emptyBytes, emptyObjects := delta("n=0&size=48")
			fullBytes, fullObjects := delta("n=100&size=48")
			if got := fullObjects - emptyObjects; math.Abs(got-2000) > 40 {
				t.Errorf("round %d: 20 x 100 objects counted as %v more objects (%v then %v)", round, got, emptyObjects, fullObjects)
			}
			if got := fullBytes - emptyBytes; math.Abs(got-96000) > 8192 {
				t.Errorf("round %d: 20 x 100 x 48 B counted as %v more bytes (%v then %v)", round, got, emptyBytes, fullBytes)
			}
		}
	})

	t.Run("checkpoint", func(t *testing.T) {
		c := fetchJSON(t, "POST", base+"/leakgate/checkpoint")
		for _, k := range []string{"heap_alloc", "heap_objects", "heap_inuse", "heap_sys",
			"stack_inuse", "sys", "num_gc", "goroutines"} {
			number(t, c, k)
		}
		if number(t, c, "num_gc") < 2 || number(t, c, "goroutines") <= 0 || number(t, c, "heap_alloc") <= 0 {
			t.Errorf("checkpoint: %v", c)
		}
		// After a GC the live-heap metric of Go 1.21+ is used and non-zero.
		m := fetchJSON(t, "GET", base+"/leakgate/metrics")
		if src, _ := m["heap_live_source"].(string); src != "/gc/heap/live:bytes" {
			t.Errorf("after GC heap_live_source = %q", src)
		}
		if number(t, m, "heap_live_bytes") <= 0 || number(t, m, "gc_cycles") < 2 {
			t.Errorf("after GC metrics: %v", m)
		}
	})

	t.Run("heap", func(t *testing.T) {
		resp, body := fetch(t, "GET", base+"/debug/pprof/heap?gc=1")
		if resp.StatusCode != 200 || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
			t.Fatalf("heap profile: status %d, %d bytes, not gzip", resp.StatusCode, len(body))
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("heap Content-Type %q", ct)
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil || len(raw) == 0 {
			t.Fatalf("gunzip heap profile: %d bytes, %v", len(raw), err)
		}
	})

	t.Run("goroutine", func(t *testing.T) {
		resp, body := fetch(t, "GET", base+"/debug/pprof/goroutine?debug=2")
		if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine ") {
			t.Fatalf("goroutine?debug=2: %d %.200q", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("goroutine?debug=2 Content-Type %q", ct)
		}
	})

	t.Run("trace", func(t *testing.T) {
		resp, body := fetch(t, "GET", base+"/debug/pprof/trace?seconds=0.2")
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("trace: %d, %d bytes", resp.StatusCode, len(body))
		}
	})

	t.Run("notfound", func(t *testing.T) {
		resp, _ := fetch(t, "GET", base+"/debug/pprof/no-such-profile")
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("unknown profile: status %d, want 404", resp.StatusCode)
		}
	})

	t.Run("service routes untouched", func(t *testing.T) {
		svc := "http://" + s.svcAddr
		if resp, body := fetch(t, "GET", svc+"/hello"); resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "hello" {
			t.Errorf("service /hello: %d %q", resp.StatusCode, body)
		}
		if resp, _ := fetch(t, "GET", svc+"/debug/pprof/"); resp.StatusCode != 200 {
			t.Errorf("service's own /debug/pprof/: %d", resp.StatusCode)
		}
		if resp, _ := fetch(t, "GET", svc+"/leakgate/health"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("agent route leaked onto DefaultServeMux: %d", resp.StatusCode)
		}
	})

	client.CloseIdleConnections()
	if out := s.stdout.String(); out != "" {
		t.Errorf("agent/service wrote to stdout: %q", out)
	}
}

func TestAgentRefusesNonLoopback(t *testing.T) {
	s := startService(t, "0.0.0.0:0", false)
	// The service itself must run normally.
	resp, body := fetch(t, "GET", "http://"+s.svcAddr+"/hello")
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "hello" {
		t.Fatalf("service /hello: %d %q", resp.StatusCode, body)
	}
	client.CloseIdleConnections()
	// init() runs before main(), so the refusal is already on stderr.
	if e := s.stderr.String(); !strings.Contains(e, "leakgate agent: refusing") {
		t.Errorf("stderr lacks refusal message: %q", e)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "agent-addr")); err == nil {
		t.Errorf("agent address file written despite refusal")
	}
}

// get sends GET path to addr with exactly this Host header and, unless
// empty, this token; it returns the status and body.
func get(t *testing.T, addr, path, host, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if token != "" {
		req.Header.Set("X-Leakgate-Token", token)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s (Host %q): %v", path, host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// A page in a browser that rebinds its own name to 127.0.0.1 sends its own
// name as Host: the agent must refuse it, whatever the path.
func TestAgentRefusesNonLoopbackHost(t *testing.T) {
	s := startService(t, "127.0.0.1:0", true)
	_, port, _ := strings.Cut(s.agentAddr, ":")
	paths := []string{"/leakgate/health", "/leakgate/metrics", "/leakgate/checkpoint",
		"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/pprof/heap",
		"/debug/pprof/trace?seconds=0.1", "/debug/pprof/profile?seconds=1"}
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1.evil.example:" + port,
		"localhost.evil.example", "10.0.0.1:" + port, "0.0.0.0:" + port, "[::ffff:10.0.0.1]:" + port,
		"127.0.0.1:notaport", "::1"} {
		for _, path := range paths {
			code, body := get(t, s.agentAddr, path, host, testToken)
			if code != http.StatusForbidden {
				t.Errorf("Host %q %s: status %d, want 403 (%.100q)", host, path, code, body)
			}
			if strings.Contains(body, "goroutine ") {
				t.Errorf("Host %q %s: a goroutine dump was served", host, path)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port,
		"[::1]:" + port, "127.0.0.1", "localhost", "[::1]", "127.1.2.3:" + port} {
		if code, body := get(t, s.agentAddr, "/debug/pprof/goroutine?debug=1", host, testToken); code != 200 || !strings.Contains(body, "goroutine profile:") {
			t.Errorf("loopback Host %q: status %d, want 200 with the profile (%.100q)", host, code, body)
		}
	}
	client.CloseIdleConnections()
}

// rawGet sends request, a whole raw HTTP request, on a new connection to
// addr and returns the response's status and body.
func rawGet(t *testing.T, addr, request string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%q: %v", request, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// An HTTP/1.0 request may carry no Host header at all (net/http then gives
// the handler an empty Host); one without a Host names no loopback address
// and is refused, token or not. An empty Host header is refused too.
func TestAgentRefusesARequestWithoutHost(t *testing.T) {
	s := startService(t, "127.0.0.1:0", true)
	token := "X-Leakgate-Token: " + testToken + "\r\n"
	for _, path := range []string{"/debug/pprof/goroutine?debug=2", "/leakgate/metrics", "/debug/pprof/heap"} {
		for _, req := range []string{
			"GET " + path + " HTTP/1.0\r\n" + token + "\r\n",
			"GET " + path + " HTTP/1.0\r\n\r\n",
			"GET " + path + " HTTP/1.0\r\nHost:\r\n" + token + "\r\n",
			"GET " + path + " HTTP/1.1\r\nHost:\r\n" + token + "Connection: close\r\n\r\n",
		} {
			code, body := rawGet(t, s.agentAddr, req)
			if code != http.StatusForbidden {
				t.Errorf("%q: status %d, want 403 (%.100q)", req, code, body)
			}
			if strings.Contains(body, "goroutine ") {
				t.Errorf("%q: a goroutine dump was served", req)
			}
		}
	}
	// The same raw request with a loopback Host is served: the refusals above
	// are the agent's, not a request net/http could not parse.
	req := "GET /debug/pprof/goroutine?debug=1 HTTP/1.0\r\nHost: " + s.agentAddr + "\r\n" + token + "\r\n"
	if code, body := rawGet(t, s.agentAddr, req); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("%q: status %d, want 200 with the profile (%.100q)", req, code, body)
	}
}

func TestAgentRequiresTheToken(t *testing.T) {
	s := startService(t, "127.0.0.1:0", true)
	host := s.agentAddr
	for _, token := range []string{"", "wrong", testToken + "x", testToken[:len(testToken)-1], strings.ToUpper(testToken)} {
		for _, path := range []string{"/leakgate/metrics", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2"} {
			if code, body := get(t, s.agentAddr, path, host, token); code != http.StatusForbidden {
				t.Errorf("token %q %s: status %d, want 403 (%.100q)", token, path, code, body)
			}
		}
	}
	// A token in the query string is not the header: still refused.
	if code, _ := get(t, s.agentAddr, "/leakgate/metrics?token="+testToken, host, ""); code != http.StatusForbidden {
		t.Errorf("token in the query: status %d, want 403", code)
	}
	if code, _ := get(t, s.agentAddr, "/leakgate/metrics", host, testToken); code != 200 {
		t.Errorf("right token: status %d, want 200", code)
	}
	client.CloseIdleConnections()
}

// Without a token the agent does not start: an agent anyone on the machine
// could read is not started by accident.
func TestAgentWithoutTokenDoesNotStart(t *testing.T) {
	s := startServiceWithToken(t, "127.0.0.1:0", "", false)
	resp, body := fetch(t, "GET", "http://"+s.svcAddr+"/hello")
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "hello" {
		t.Fatalf("service /hello: %d %q", resp.StatusCode, body)
	}
	client.CloseIdleConnections()
	if e := s.stderr.String(); !strings.Contains(e, "LEAKGATE_AGENT_TOKEN is unset") {
		t.Errorf("stderr lacks the refusal: %q", e)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "agent-addr")); err == nil {
		t.Errorf("agent address file written without a token")
	}
}
