package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
)

// scenario is the -scenario file as written; compileEntry turns each of its
// requests into an entry.
type scenario struct {
	Requests []requestSpec `json:"requests"`
}

type requestSpec struct {
	Method       string            `json:"method"`
	Path         string            `json:"path"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	Weight       *float64          `json:"weight"`
	ExpectStatus int               `json:"expect_status"`
}

func loadScenario(path string) (scenario, error) {
	var sc scenario
	data, err := os.ReadFile(path)
	if err != nil {
		return sc, usagef("-scenario: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return sc, usagef("-scenario %s: %v", path, err)
	}
	if dec.More() {
		return sc, usagef("-scenario %s: trailing data after the JSON object", path)
	}
	return sc, nil
}

// entry is a compiled scenario request.
type entry struct {
	idx     int
	method  string
	path    tmpl     // the request-target, with the target's path prefix
	host    *tmpl    // the Host header: the scenario's, else the target's
	headers []header // the other headers, sorted by name
	body    tmpl
	expect  int
	raw     []byte // the whole request when nothing is templated
}

type header struct {
	key string // canonical
	val tmpl
}

func (e *entry) accepts(code int) bool {
	if e.expect == 0 {
		return code >= 200 && code < 400
	}
	return code == e.expect
}

func compileEntry(i int, spec requestSpec, prefix, defaultHost string) (*entry, error) {
	e := &entry{idx: i, method: spec.Method, expect: spec.ExpectStatus}
	if e.method == "" {
		e.method = http.MethodGet
	}
	if !validToken(e.method) {
		return nil, fmt.Errorf("invalid method %q", e.method)
	}
	if e.expect != 0 && (e.expect < 100 || e.expect > 999) {
		return nil, fmt.Errorf("expect_status must be 0 or 100..999, got %d", e.expect)
	}
	if !strings.HasPrefix(spec.Path, "/") {
		return nil, fmt.Errorf("path %q must start with /", spec.Path)
	}
	var err error
	if e.path, err = parseTemplate(prefix + spec.Path); err != nil {
		return nil, fmt.Errorf("path: %v", err)
	}
	for _, sg := range e.path.segs {
		for k := 0; k < len(sg.lit); k++ {
			if c := sg.lit[k]; c <= ' ' || c >= 0x7f || c == '#' {
				return nil, fmt.Errorf("path %q: byte %q must be percent-encoded", spec.Path, c)
			}
		}
	}
	hdrs := map[string]string{}
	for k, v := range spec.Headers {
		if !validToken(k) {
			return nil, fmt.Errorf("invalid header name %q", k)
		}
		k = http.CanonicalHeaderKey(k)
		if k == "Content-Length" || k == "Transfer-Encoding" {
			return nil, fmt.Errorf("header %s is set from the body; remove it", k)
		}
		hdrs[k] = v
	}
	keys := make([]string, 0, len(hdrs))
	for k := range hdrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h := header{key: k}
		if h.val, err = parseTemplate(hdrs[k]); err != nil {
			return nil, fmt.Errorf("header %s: %v", k, err)
		}
		for _, sg := range h.val.segs {
			for n := 0; n < len(sg.lit); n++ {
				if c := sg.lit[n]; (c < ' ' && c != '\t') || c == 0x7f {
					return nil, fmt.Errorf("header %s: control byte %q in value", k, c)
				}
			}
		}
		if k == "Host" {
			e.host = &h.val
		} else {
			e.headers = append(e.headers, h)
		}
	}
	if e.host == nil {
		e.host = &tmpl{lit: defaultHost}
	}
	if e.body, err = parseTemplate(spec.Body); err != nil {
		return nil, fmt.Errorf("body: %v", err)
	}
	dynamic := e.path.dynamic || e.host.dynamic || e.body.dynamic
	for _, h := range e.headers {
		dynamic = dynamic || h.val.dynamic
	}
	if !dynamic {
		e.raw, _ = e.appendRequest(nil, nil, nil)
	}
	return e, nil
}

// appendRequest appends the HTTP/1.1 request for e to dst, expanding its
// templates with x (unused when nothing is templated); scratch is reused
// for the body.
func (e *entry) appendRequest(dst, scratch []byte, x *expander) ([]byte, []byte) {
	dst = append(dst, e.method...)
	dst = append(dst, ' ')
	dst = x.appendTo(dst, &e.path)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = x.appendTo(dst, e.host)
	dst = append(dst, "\r\n"...)
	for i := range e.headers {
		h := &e.headers[i]
		dst = append(dst, h.key...)
		dst = append(dst, ": "...)
		dst = x.appendTo(dst, &h.val)
		dst = append(dst, "\r\n"...)
	}
	scratch = x.appendTo(scratch[:0], &e.body)
	if len(scratch) > 0 || e.method == "POST" || e.method == "PUT" || e.method == "PATCH" {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, int64(len(scratch)), 10)
		dst = append(dst, "\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, scratch...), scratch
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
