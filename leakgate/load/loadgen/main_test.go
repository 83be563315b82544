package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
