package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// connectError marks a failure to establish the connection.
type connectError struct{ err error }

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// exchange sends req, a whole HTTP/1.1 request, on the worker's keep-alive
// connection (dialing one if needed), then reads the response and drains
// its body. It returns the final status code (0 if none arrived). Everything
// must be done by sent + timeout.
func (w *worker) exchange(e *entry, req []byte, sent time.Duration) (int, error) {
	deadline := w.r.start.Add(sent + w.r.cfg.Timeout)
	for attempt := 0; ; attempt++ {
		reused := w.conn != nil
		if !reused {
			d := net.Dialer{Deadline: deadline, Control: loopbackOnly}
			c, err := d.DialContext(w.r.abortCtx, "tcp", w.r.addr)
			if err != nil {
				return 0, &connectError{err}
			}
			w.mu.Lock()
			w.conn = c
			w.mu.Unlock()
			w.br.Reset(c)
		}
		// A deadline that cannot be set fails the connection like a write.
		err := w.conn.SetDeadline(deadline)
		if err == nil && w.r.aborted.Load() {
			err = w.conn.SetDeadline(longAgo) // stop() may have cut it before the line above
		}
		if err == nil {
			_, err = w.conn.Write(req)
		}
		if err == nil {
			_, err = w.br.Peek(1) // wait for the first byte of the response
		}
		if err != nil {
			w.closeConn()
			// A server may close a keep-alive connection that sat idle; the
			// request then never reached it: retry once on a new connection.
			// Errors on busy connections are the server's and are counted.
			if reused && attempt == 0 && sent-w.idle >= time.Second && !isTimeout(err) {
				continue
			}
			return 0, err
		}
		code, err := w.readResponse(e)
		if err != nil {
			w.closeConn()
		}
		w.idle = time.Since(w.r.start)
		return code, err
	}
}

// readResponse reads the response to e (after any interim 1xx ones) and
// discards its body. It closes the connection when the response says so or
// ends at EOF.
func (w *worker) readResponse(e *entry) (int, error) {
	for interim := 0; ; interim++ {
		head, err := w.readHead()
		code := head.code
		if err != nil {
			return code, err
		}
		switch {
		case e.method == http.MethodHead || code < 200 || code == 204 || code == 304:
			// no body
		case head.chunked:
			err = w.discardChunked()
		case head.length >= 0:
			err = w.discard(head.length)
		default: // the body runs to EOF
			_, err = io.Copy(io.Discard, w.br)
			head.keep = false
		}
		if err != nil {
			return code, err
		}
		if code < 200 && code != http.StatusSwitchingProtocols && interim < 10 {
			continue
		}
		if !head.keep || code == http.StatusSwitchingProtocols {
			w.closeConn()
		}
		return code, nil
	}
}

var errMalformed = errors.New("malformed HTTP response")

// responseHead is what readHead keeps of a status line and its headers: the
// status, and what frames the body.
type responseHead struct {
	code    int
	length  int64 // Content-Length; -1 when absent or a Transfer-Encoding overrides it
	chunked bool  // Transfer-Encoding: chunked
	keep    bool  // the connection may carry the next request
}

// readHead reads a status line and headers. An error after the status line
// still returns its code: the response is counted by its status.
func (w *worker) readHead() (responseHead, error) {
	line, err := w.br.ReadSlice('\n')
	if err != nil {
		return responseHead{}, err
	}
	// HTTP/1.x NNN reason
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return responseHead{}, fmt.Errorf("%w: status line %q", errMalformed, trimEOL(line))
	}
	code := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return responseHead{}, fmt.Errorf("%w: status line %q", errMalformed, trimEOL(line))
		}
		code = code*10 + int(c-'0')
	}
	h := responseHead{code: code, length: -1, keep: line[7] == '1'}
	badHeader := func(line []byte) (responseHead, error) {
		return responseHead{code: code}, fmt.Errorf("%w: header %q", errMalformed, line)
	}
	coded := false // a Transfer-Encoding: the body runs to EOF unless chunked
	for n := 0; ; n++ {
		if line, err = w.br.ReadSlice('\n'); err != nil {
			return responseHead{code: code}, err
		}
		line = trimEOL(line)
		if len(line) == 0 {
			if coded {
				h.length = -1
			}
			return h, nil
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 || n >= 1000 {
			return badHeader(line)
		}
		name, val := line[:i], bytes.TrimSpace(line[i+1:])
		switch {
		case asciiEqualFold(name, "Content-Length"):
			h.length = 0
			for k, c := range val {
				if c < '0' || c > '9' || k >= 18 {
					return badHeader(line)
				}
				h.length = h.length*10 + int64(c-'0')
			}
			if len(val) == 0 {
				return badHeader(line)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			coded, h.chunked = true, hasTokenFold(val, "chunked")
		case asciiEqualFold(name, "Connection"):
			if hasTokenFold(val, "close") {
				h.keep = false
			} else if hasTokenFold(val, "keep-alive") {
				h.keep = true
			}
		}
	}
}

// discardChunked reads a chunked body and its trailers.
func (w *worker) discardChunked() error {
	for {
		line, err := w.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = trimEOL(line)
		size, digits := int64(0), 0
		for ; digits < len(line); digits++ {
			v := strings.IndexByte(hexDigits, lower(line[digits]))
			if v < 0 {
				break
			}
			size = size<<4 | int64(v)
		}
		if digits == 0 || digits > 15 || digits < len(line) && strings.IndexByte("; \t", line[digits]) < 0 {
			return fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		if size == 0 {
			for n := 0; n < 1000; n++ { // trailers, up to an empty line
				if line, err = w.br.ReadSlice('\n'); err != nil || len(trimEOL(line)) == 0 {
					return err
				}
			}
			return fmt.Errorf("%w: too many trailers", errMalformed)
		}
		if err := w.discard(size); err != nil {
			return err
		}
		if line, err = w.br.ReadSlice('\n'); err != nil || len(trimEOL(line)) != 0 {
			if err == nil {
				err = fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
			}
			return err
		}
	}
}

func (w *worker) discard(n int64) error {
	for n > 0 {
		k, err := w.br.Discard(int(min(n, 1<<30)))
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// asciiEqualFold reports whether b equals s, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// hasTokenFold reports whether the comma-separated list v holds token t.
func hasTokenFold(v []byte, t string) bool {
	for len(v) > 0 {
		var item []byte
		item, v, _ = bytes.Cut(v, []byte(","))
		if asciiEqualFold(bytes.TrimSpace(item), t) {
			return true
		}
	}
	return false
}

// longAgo is a deadline in the past: set on a connection, it cuts the I/O in
// progress at once.
var longAgo = time.Unix(1, 0)

func (w *worker) closeConn() {
	if w.conn != nil {
		// The connection is dropped either way; an error closing it says
		// nothing about the request, which has already completed or failed.
		_ = w.conn.Close()
		w.mu.Lock()
		w.conn = nil
		w.mu.Unlock()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
