package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

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

func TestReadHead(t *testing.T) {
	manyHeaders := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-A: b\r\n", 1001) + "\r\n"
	for _, tc := range []struct {
		name, in string
		want     responseHead
		err      error // errors.Is; nil: no error
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
			responseHead{code: 200, length: 5, keep: true}, nil},
		{"no length", "HTTP/1.1 204\r\n\r\n", responseHead{code: 204, length: -1, keep: true}, nil},
		{"bare LF", "HTTP/1.1 200 OK\ncontent-length: 2\n\nhi", responseHead{code: 200, length: 2, keep: true}, nil},
		{"HTTP/1.0", "HTTP/1.0 200 OK\r\n\r\n", responseHead{code: 200, length: -1}, nil},
		{"HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
			responseHead{code: 200, length: 0, keep: true}, nil},
		{"close", "HTTP/1.1 503 Busy\r\nConnection: foo, close\r\n\r\n", responseHead{code: 503, length: -1}, nil},
		{"chunked over length", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
			responseHead{code: 200, length: -1, chunked: true, keep: true}, nil},
		{"coded to EOF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n",
			responseHead{code: 200, length: -1, keep: true}, nil},
		{"empty", "", responseHead{}, io.EOF},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", responseHead{}, errMalformed},
		{"not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", responseHead{}, errMalformed},
		// After the status line, a failure keeps the code: it is counted by status.
		{"bad length", "HTTP/1.1 500 Oops\r\nContent-Length: 1x\r\n\r\n", responseHead{code: 500}, errMalformed},
		{"empty length", "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", responseHead{code: 200}, errMalformed},
		{"no colon", "HTTP/1.1 200 OK\r\nnonsense\r\n\r\n", responseHead{code: 200}, errMalformed},
		{"too many headers", manyHeaders, responseHead{code: 200}, errMalformed},
		{"cut in the headers", "HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n", responseHead{code: 404}, io.EOF},
	} {
		w := &worker{br: bufio.NewReader(strings.NewReader(tc.in))}
		got, err := w.readHead()
		if got != tc.want || tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
			t.Errorf("%s: readHead = %+v, %v; want %+v, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}

var errNoDeadline = errors.New("no deadline for you")

// noDeadlineConn is a connection whose deadlines cannot be set; it records
// whether it was written to or closed. Nothing else of it may be used.
type noDeadlineConn struct {
	net.Conn
	wrote, closed atomic.Bool
}

func (c *noDeadlineConn) SetDeadline(time.Time) error { return errNoDeadline }
func (c *noDeadlineConn) Write(b []byte) (int, error) { c.wrote.Store(true); return len(b), nil }
func (c *noDeadlineConn) Close() error                { c.closed.Store(true); return nil }

// A keep-alive connection on which the deadline cannot be set fails like one
// whose write fails: closed, and counted unless it sat idle long enough to
// be retried once on a new connection.
func TestExchangeWhenTheDeadlineCannotBeSet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	for _, idle := range []bool{false, true} {
		r, err := newRunner(testConfig(srv.URL, simple("/")))
		if err != nil {
			t.Fatal(err)
		}
		sent := 2 * time.Second
		r.start = time.Now().Add(-sent)
		w := r.newWorker(0, 1)
		bad := new(noDeadlineConn)
		w.conn, w.idle = bad, sent // busy: last used just now
		if idle {
			w.idle = 0 // idle for 2 s
		}
		e := r.entries[0]
		code, err := w.exchange(e, e.raw, sent)
		if bad.wrote.Load() || !bad.closed.Load() {
			t.Errorf("idle %v: wrote %v closed %v; want the request unsent and the connection closed", idle, bad.wrote.Load(), bad.closed.Load())
		}
		if !idle && (code != 0 || !errors.Is(err, errNoDeadline) || classify(err) != errOther || w.conn != nil) {
			t.Errorf("busy: code %d err %v conn %v; want 0, the deadline error (other), no connection", code, err, w.conn)
		}
		if idle && (code != 200 || err != nil || w.conn == nil) {
			t.Errorf("idle: code %d err %v conn %v; want 200 on a new connection", code, err, w.conn)
		}
		w.closeConn()
	}
}
