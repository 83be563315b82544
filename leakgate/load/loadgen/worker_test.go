package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

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
