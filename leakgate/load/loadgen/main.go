// Command loadgen is leakgate's bundled HTTP/1.1 load generator. It only
// loads services on this machine: the target must be a loopback address.
//
//	loadgen -target http://127.0.0.1:PORT -scenario scenario.json
//	        [-connections 16] [-duration 20s] [-rate 0] [-timeout 10s]
//	        [-out result.json] [-progress] [-seed 0] [-stop-grace 1s]
//
// The scenario is a JSON file:
//
//	{"requests": [{"method": "GET", "path": "/products/{seq}",
//	               "headers": {"X-A": "b"}, "body": "", "weight": 3,
//	               "expect_status": 0}, ...]}
//
// method defaults to GET, weight to 1 (must be > 0; requests are picked at
// random in proportion to it), expect_status 0 accepts any 2xx or 3xx,
// otherwise exactly that status. path (which may carry a ?query) is appended
// to the target's path. Path, header values and body may use templates,
// expanded per request: {seq} is a run-wide counter starting at 1, increased
// once per request that uses it (every {seq} of one request gets the same
// value); {rand:A-B} is a uniform integer in [A,B] (0 <= A <= B); {uuid} is a
// random version 4 UUID. A { followed by a letter must start one of these
// (anything else, e.g. {foo} or {rand:5-1}, is a usage error); {{ is a
// literal {, and so is a { not followed by a letter, so JSON bodies such as
// {"id": {seq}} need no escaping.
//
// The HTTP client is built in, for speed (net/http's Transport costs about
// twice the CPU per request, enough to make the load generator, not the
// service, the bottleneck): each of the -connections workers owns at most
// one keep-alive TCP connection, writes each request whole in one write
// (built once when the entry has no template) and reads the response with a
// small HTTP/1.x parser (Content-Length, chunked or until EOF; HEAD, 1xx,
// 204 and 304 without body; Connection: close honoured), discarding the
// body. So at most N requests are in flight on at most N connections; no
// proxy, no compression, no HTTP/2, no redirects followed. A keep-alive
// connection the server dropped while it sat idle for a second or more is
// retried once on a new connection (net/http does the same); a failure on a
// busy connection is counted. Headers sent: Host (the target's, or the
// scenario's), the scenario's headers, and Content-Length for a body (and for
// an empty POST/PUT/PATCH); nothing else, like wrk.
//
// Modes. -rate 0 is a closed loop: -connections workers each send the next
// request as soon as the previous one completed; latency runs from the send.
// -rate R > 0 is an open loop: request i is planned at start + i/R for every
// i/R < duration; workers take the next i, wait for its planned time and send
// it. A request taken after its planned time (all workers were busy, e.g.
// behind a stalled server) has its latency measured from the planned time, so
// queueing is counted as users would see it (no coordinated omission). A
// request taken ahead of time, whose worker then sleeps, has its latency
// measured from the actual send, so the Go timer's ~1 ms wake-up slack is not
// charged to the service. Nothing is sent after start+duration; in-flight
// requests finish (bounded by -timeout), then every connection is closed.
//
// Stopping early. SIGTERM or SIGINT ends the window at once: nothing more is
// sent, requests in flight may finish within -stop-grace (then their
// connections are cut, and a request cut that way is counted nowhere: it was
// neither served nor failed by the service), and the result of the window
// that ran is written as usual, with "interrupted": true; the exit status is
// 0. "window_s" is the window as run (the -duration, or the time of the
// signal), and everything that depends on the window follows it: planned,
// achieved_rate (open loop: sent / window_s) and seconds (whole seconds of
// window_s only). A signal after the window (requests still in flight, each
// bounded by -timeout) leaves the window as configured but gives those
// requests the same -stop-grace, then cuts them; "interrupted" is true when
// any was cut. A further signal changes nothing; SIGKILL loses the result.
//
// Every completed request is either ok (status as expected; its latency is
// recorded) or an error: connect (dial failure, connection refused), timeout
// (the -timeout deadline passed), status (unexpected status; the body is still
// read) or other (reset, EOF mid-response, ...). Errors carry no latency.
//
// Output (to -out, or stdout), one JSON object:
//
//	{"schema_version": 1, "tool": "leakgate-loadgen",
//	 "mode": "closed" | "open", "target": "http://127.0.0.1:8080",
//	 "connections": 16, "target_rate": 0 (req/s; 0 in closed mode),
//	 "duration_s": 20.0012 (start to last completion, measured),
//	 "requests": n (completed: ok + errors), "ok": n,
//	 "errors": {"connect": n, "timeout": n, "status": n, "other": n},
//	 "status_codes": {"200": n, ...} (every response received, by status),
//	 "achieved_rate": closed: requests/duration_s;
//	                  open: requests sent / the planned window (-duration),
//	 "planned": open: requests planned in the window; closed: = requests,
//	 "latency": {"unit": "ns", "growth": 1.02, "count": n, "min": n,
//	             "max": n, "sum": n, "buckets": [[index, count], ...]},
//	 "seconds": [{"t": 1, "requests": n, "errors": n, "p50_ns": n,
//	              "p95_ns": n, "p99_ns": n}, ...],
//	 "first_error": "text of the first error, or empty",
//	 "interrupted": false (true: a signal ended the window early or cut
//	                 requests in flight, see above),
//	 "window_s": 20.0 (the window as run)}
//
// latency.buckets is sparse and sorted by index: bucket i holds the latencies
// ns with floor(ln(ns)/ln(1.02)) = i (ns < 1 in bucket 0); read it back as
// 1.02^(i+0.5) ns (within 1%). min, max and sum are exact. seconds has one
// entry per whole second of the configured duration, t covering completions
// in [t-1, t) seconds after the start; its percentiles come from that
// second's histogram (0 when it had no ok request). Completions after the
// last whole second count in the totals only.
//
// -progress prints, once per second, a line to stderr:
//
//	{"t": 3, "requests": 12345, "errors": 0, "rate": 4100.0, "p95_ns": 812345}
//
// with cumulative requests and errors, and that second's rate and p95.
//
// Exit status: 0 when the run completed (whatever the responses were), 2 on a
// usage error (bad flag, target or scenario entry), 1 if the output could not
// be written.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() { os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr)) }

// cli runs the command line and returns the exit status.
func cli(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "base URL of the service, on a loopback address (required)")
	scenarioPath := fs.String("scenario", "", "scenario JSON file (required)")
	conns := fs.Int("connections", 16, "concurrent requests and keep-alive connections")
	duration := fs.Duration("duration", 20*time.Second, "how long to send requests")
	rate := fs.Float64("rate", 0, "open-loop request rate in req/s; 0 = closed loop")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request timeout")
	out := fs.String("out", "", "write the result JSON here instead of stdout")
	progress := fs.Bool("progress", false, "print a JSON progress line to stderr every second")
	seed := fs.Int64("seed", 0, "random seed; 0 = from the clock")
	stopGrace := fs.Duration("stop-grace", time.Second, "after SIGTERM/SIGINT, how long requests in flight may take to finish")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(stderr, "loadgen:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if fs.NArg() > 0 {
		return fail(usagef("unexpected argument %q", fs.Arg(0)))
	}
	if *scenarioPath == "" {
		return fail(usagef("-scenario is required"))
	}
	sc, err := loadScenario(*scenarioPath)
	if err != nil {
		return fail(err)
	}
	cfg := config{Target: *target, Scenario: sc, Connections: *conns, Duration: *duration,
		Rate: *rate, Timeout: *timeout, Seed: *seed, StopGrace: *stopGrace}
	if *progress {
		cfg.Progress = stderr
	}
	// The first SIGTERM or SIGINT ends the window early; the result of what
	// ran is still written.
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	stop := make(chan struct{})
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		select {
		case <-signals:
			close(stop)
		case <-finished:
		}
	}()
	cfg.Stop = stop
	res, err := run(cfg)
	if err != nil {
		return fail(err)
	}
	data, err := json.Marshal(res)
	if err != nil {
		return fail(err)
	}
	data = append(data, '\n')
	if *out == "" {
		_, err = stdout.Write(data)
	} else {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// usageError marks a bad flag, target or scenario: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

type config struct {
	Target      string
	Scenario    scenario
	Connections int
	Duration    time.Duration
	Rate        float64 // req/s; 0 = closed loop
	Timeout     time.Duration
	Seed        int64     // 0 = from the clock
	Progress    io.Writer // nil = no progress lines
	// Stop, when closed, ends the window early (nil: never); requests in
	// flight then have StopGrace to finish.
	Stop      <-chan struct{}
	StopGrace time.Duration
}

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

type result struct {
	SchemaVersion int               `json:"schema_version"`
	Tool          string            `json:"tool"`
	Mode          string            `json:"mode"`
	Target        string            `json:"target"`
	Connections   int               `json:"connections"`
	TargetRate    float64           `json:"target_rate"`
	DurationS     float64           `json:"duration_s"`
	Requests      uint64            `json:"requests"`
	OK            uint64            `json:"ok"`
	Errors        errorCounts       `json:"errors"`
	StatusCodes   map[string]uint64 `json:"status_codes"`
	AchievedRate  float64           `json:"achieved_rate"`
	Planned       uint64            `json:"planned"`
	Latency       latencyResult     `json:"latency"`
	Seconds       []secondResult    `json:"seconds"`
	FirstError    string            `json:"first_error"`
	Interrupted   bool              `json:"interrupted"`
	WindowS       float64           `json:"window_s"`
}

type errorCounts struct {
	Connect uint64 `json:"connect"`
	Timeout uint64 `json:"timeout"`
	Status  uint64 `json:"status"`
	Other   uint64 `json:"other"`
}

type latencyResult struct {
	Unit    string      `json:"unit"`
	Growth  float64     `json:"growth"`
	Count   uint64      `json:"count"`
	Min     int64       `json:"min"`
	Max     int64       `json:"max"`
	Sum     uint64      `json:"sum"`
	Buckets [][2]uint64 `json:"buckets"`
}

type secondResult struct {
	T        int    `json:"t"`
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	P50      int64  `json:"p50_ns"`
	P95      int64  `json:"p95_ns"`
	P99      int64  `json:"p99_ns"`
}

// ---- templates ----

type segKind uint8

const (
	segLit segKind = iota
	segSeq
	segRand
	segUUID
)

type segment struct {
	kind   segKind
	lit    string
	lo, hi int64 // segRand
}

// tmpl is a string pre-parsed into literal and template segments.
type tmpl struct {
	segs    []segment
	lit     string // the whole value when !dynamic
	dynamic bool
}

func parseTemplate(s string) (tmpl, error) {
	var t tmpl
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			t.segs = append(t.segs, segment{kind: segLit, lit: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '{' {
			lit = append(lit, s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '{' {
			lit = append(lit, '{')
			i += 2
			continue
		}
		if i+1 == len(s) || !isLetter(s[i+1]) {
			// Not a template (JSON bodies: {"id": {seq}}): a literal {.
			lit = append(lit, '{')
			i++
			continue
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unterminated template %q (write {{ for a literal {)", s[i:])
		}
		seg, err := parseDirective(s[i+1 : i+j])
		if err != nil {
			return t, fmt.Errorf("invalid template %q: %v", s[i:i+j+1], err)
		}
		flush()
		t.segs = append(t.segs, seg)
		t.dynamic = true
		i += j + 1
	}
	flush()
	if !t.dynamic {
		for _, sg := range t.segs {
			t.lit += sg.lit
		}
	}
	return t, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func parseDirective(d string) (segment, error) {
	switch {
	case d == "seq":
		return segment{kind: segSeq}, nil
	case d == "uuid":
		return segment{kind: segUUID}, nil
	case strings.HasPrefix(d, "rand:"):
		a, b, ok := strings.Cut(d[len("rand:"):], "-")
		if !ok {
			return segment{}, errors.New("want {rand:A-B}")
		}
		lo, err1 := parseNonNeg(a)
		hi, err2 := parseNonNeg(b)
		if err1 != nil || err2 != nil {
			return segment{}, errors.New("want {rand:A-B} with integers 0 <= A <= B")
		}
		if lo > hi {
			return segment{}, errors.New("lower bound greater than upper bound")
		}
		if hi-lo == math.MaxInt64 {
			return segment{}, errors.New("range too large")
		}
		return segment{kind: segRand, lo: lo, hi: hi}, nil
	}
	return segment{}, errors.New("unknown template (known: {seq}, {rand:A-B}, {uuid}; write {{ for a literal {)")
}

func parseNonNeg(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a digit")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// expander expands templates for one worker, one request at a time.
type expander struct {
	rng    *rand.Rand
	seqSrc *atomic.Uint64
	seq    uint64 // this request's {seq}; 0 = not drawn yet
}

const hexDigits = "0123456789abcdef"

func (x *expander) appendTo(dst []byte, t *tmpl) []byte {
	if !t.dynamic {
		return append(dst, t.lit...)
	}
	for i := range t.segs {
		sg := &t.segs[i]
		switch sg.kind {
		case segLit:
			dst = append(dst, sg.lit...)
		case segSeq:
			if x.seq == 0 {
				x.seq = x.seqSrc.Add(1)
			}
			dst = strconv.AppendUint(dst, x.seq, 10)
		case segRand:
			dst = strconv.AppendInt(dst, sg.lo+x.rng.Int63n(sg.hi-sg.lo+1), 10)
		case segUUID:
			var b [16]byte
			hi, lo := x.rng.Uint64(), x.rng.Uint64()
			for k := 0; k < 8; k++ {
				b[k], b[8+k] = byte(hi>>(8*k)), byte(lo>>(8*k))
			}
			b[6] = b[6]&0x0f | 0x40 // version 4
			b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
			for k, c := range b {
				if k == 4 || k == 6 || k == 8 || k == 10 {
					dst = append(dst, '-')
				}
				dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
			}
		}
	}
	return dst
}

// ---- compiled scenario ----

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

const (
	errConnect = iota
	errTimeout
	errStatus
	errOther
	kindOK = -1
)

type runner struct {
	cfg      config
	addr     string // host:port to dial
	entries  []*entry
	cum      []float64 // cumulative weights
	open     bool
	planned  uint64 // open loop: requests planned in the window
	start    time.Time
	next     atomic.Uint64 // open loop: next request index
	seq      atomic.Uint64 // {seq}
	secs     []atomic.Pointer[secHist]
	errOnce  atomic.Bool
	errMu    sync.Mutex
	firstErr string

	stopped  chan struct{} // closed when the window ends early
	stopAt   atomic.Int64  // ns after start at which it ended early; 0: it did not
	aborted  atomic.Bool   // the stop grace is over: connections in flight are cut
	abortCtx context.Context
	abort    context.CancelFunc
}

// run performs one load run as configured; a *usageError reports a bad
// configuration.
func run(cfg config) (*result, error) {
	r, err := newRunner(cfg)
	if err != nil {
		return nil, err
	}
	return r.run(), nil
}

func newRunner(cfg config) (*runner, error) {
	if cfg.Connections < 1 {
		return nil, usagef("-connections must be >= 1, got %d", cfg.Connections)
	}
	if cfg.Duration <= 0 {
		return nil, usagef("-duration must be > 0, got %v", cfg.Duration)
	}
	if cfg.Timeout <= 0 {
		return nil, usagef("-timeout must be > 0, got %v", cfg.Timeout)
	}
	if cfg.Rate < 0 || math.IsNaN(cfg.Rate) || math.IsInf(cfg.Rate, 0) {
		return nil, usagef("-rate must be a finite number >= 0, got %v", cfg.Rate)
	}
	u, err := url.Parse(cfg.Target)
	if err != nil || cfg.Target == "" {
		return nil, usagef("-target %q: want a URL like http://127.0.0.1:8080", cfg.Target)
	}
	if u.Scheme != "http" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, usagef("-target %q: want http://HOST[:PORT][/prefix] without user, query or fragment", cfg.Target)
	}
	if !isLoopbackHost(u.Hostname()) {
		return nil, usagef("-target %q: host %q is not a loopback address (127.0.0.0/8, ::1, localhost); loadgen only loads services on this machine", cfg.Target, u.Hostname())
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	r := &runner{cfg: cfg, addr: net.JoinHostPort(u.Hostname(), port), open: cfg.Rate > 0,
		stopped: make(chan struct{})}
	r.abortCtx, r.abort = context.WithCancel(context.Background())
	prefix := strings.TrimRight(u.EscapedPath(), "/")
	if len(cfg.Scenario.Requests) == 0 {
		return nil, usagef("scenario: \"requests\" is empty")
	}
	var total float64
	for i, spec := range cfg.Scenario.Requests {
		e, err := compileEntry(i, spec, prefix, u.Host)
		if err != nil {
			return nil, usagef("scenario requests[%d] (%s %s): %v", i, spec.Method, spec.Path, err)
		}
		w := 1.0
		if spec.Weight != nil {
			w = *spec.Weight
		}
		if !(w > 0) || math.IsInf(w, 0) {
			return nil, usagef("scenario requests[%d] (%s %s): weight must be > 0, got %v", i, spec.Method, spec.Path, w)
		}
		total += w
		r.entries = append(r.entries, e)
		r.cum = append(r.cum, total)
	}
	if r.open {
		if math.Ceil(cfg.Duration.Seconds()*cfg.Rate) > 1e12 {
			return nil, usagef("-rate %v for %v plans too many requests", cfg.Rate, cfg.Duration)
		}
		r.planned = r.plannedBefore(cfg.Duration)
	}
	r.secs = make([]atomic.Pointer[secHist], int(cfg.Duration/time.Second))
	return r, nil
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// loopbackOnly refuses to connect anywhere but loopback, whatever a name
// resolved to.
func loopbackOnly(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to connect to non-loopback address %s", address)
	}
	return nil
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

// plannedAt is the open-loop send time of request i, from the start.
func (r *runner) plannedAt(i uint64) time.Duration {
	return time.Duration(float64(i) * 1e9 / r.cfg.Rate)
}

// plannedBefore is the number of open-loop requests planned before d.
func (r *runner) plannedBefore(d time.Duration) uint64 {
	p := uint64(math.Ceil(d.Seconds() * r.cfg.Rate))
	for r.plannedAt(p) < d {
		p++
	}
	for p > 0 && r.plannedAt(p-1) >= d {
		p--
	}
	return p
}

// window is how long the run sends: -duration, or until it was stopped.
func (r *runner) window() time.Duration {
	if at := r.stopAt.Load(); at > 0 {
		return time.Duration(at)
	}
	return r.cfg.Duration
}

// isStopped reports whether the window was ended early.
func (r *runner) isStopped() bool { return r.stopAt.Load() > 0 }

// stop ends the window now, and cuts the connections still busy after the
// grace. A stop after the window (nothing more is sent, but requests may be
// in flight until their -timeout) leaves the window as it was and still cuts
// what is busy after the grace, so the result is written promptly.
func (r *runner) stop(workers []*worker) {
	at := max(int64(time.Since(r.start)), 1)
	if time.Duration(at) < r.cfg.Duration && r.stopAt.CompareAndSwap(0, at) {
		close(r.stopped)
	}
	t := time.NewTimer(r.cfg.StopGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.abortCtx.Done():
		return // every worker finished within the grace
	}
	r.aborted.Store(true)
	r.abort()
	for _, w := range workers {
		w.mu.Lock()
		if w.conn != nil {
			w.conn.SetDeadline(time.Unix(1, 0))
		}
		w.mu.Unlock()
	}
}

func (r *runner) second(k int) *secHist {
	p := &r.secs[k]
	if s := p.Load(); s != nil {
		return s
	}
	p.CompareAndSwap(nil, new(secHist))
	return p.Load()
}

func (r *runner) noteError(msg func() string) {
	if r.errOnce.Load() {
		return
	}
	r.errMu.Lock()
	if r.firstErr == "" {
		r.firstErr = msg()
		r.errOnce.Store(true)
	}
	r.errMu.Unlock()
}

// ---- workers ----

type worker struct {
	r       *runner
	x       expander
	out     []byte // the request being sent, when templated
	scratch []byte // its body
	conn    net.Conn
	br      *bufio.Reader
	mu      sync.Mutex    // guards conn against stop(), which cuts it
	idle    time.Duration // when conn last completed a request, from the start
	h       hist
	ok      uint64
	sent    uint64
	errs    [4]uint64
	codes   [1000]uint64
	last    time.Duration // last completion, from the start
}

func (r *runner) newWorker(i int, seed int64) *worker {
	return &worker{
		r:  r,
		x:  expander{rng: rand.New(rand.NewSource(seed + int64(i)*0x5851F42D4C957F2D)), seqSrc: &r.seq},
		br: bufio.NewReaderSize(nil, 16<<10),
	}
}

func (w *worker) pick() *entry {
	es := w.r.entries
	if len(es) == 1 {
		return es[0]
	}
	cum := w.r.cum
	x := w.x.rng.Float64() * cum[len(cum)-1]
	for i, c := range cum {
		if x < c {
			return es[i]
		}
	}
	return es[len(es)-1]
}

func (w *worker) closedLoop() {
	defer w.closeConn()
	for !w.r.isStopped() && time.Since(w.r.start) < w.r.cfg.Duration {
		w.do(w.pick(), 0, false)
	}
}

func (w *worker) openLoop() {
	defer w.closeConn()
	r := w.r
	for {
		i := r.next.Add(1) - 1
		if i >= r.planned {
			return
		}
		planned := r.plannedAt(i)
		now := time.Since(r.start)
		if now >= r.window() {
			return // the window is over: planned but never sent
		}
		late := now >= planned
		if !late {
			t := time.NewTimer(planned - now)
			select {
			case <-t.C:
			case <-r.stopped:
				t.Stop()
				return
			}
		}
		w.do(w.pick(), planned, late)
	}
}

// do sends one request and records its outcome. Latency runs from planned
// when fromPlanned, else from the send.
func (w *worker) do(e *entry, planned time.Duration, fromPlanned bool) {
	r := w.r
	req := e.raw
	if req == nil {
		w.x.seq = 0
		w.out, w.scratch = e.appendRequest(w.out[:0], w.scratch, &w.x)
		req = w.out
	}
	sent := time.Since(r.start)
	w.sent++
	code, err := w.exchange(e, req, sent)
	if err != nil && r.aborted.Load() {
		w.sent-- // cut by stop(): neither served nor failed by the service
		return
	}
	done := time.Since(r.start)
	w.last = done

	kind := kindOK
	if err != nil {
		kind = classify(err)
	} else if !e.accepts(code) {
		kind = errStatus
	}
	if code > 0 && code < len(w.codes) {
		w.codes[code]++
	}
	var sh *secHist
	if k := int(done / time.Second); k < len(r.secs) {
		sh = r.second(k)
		sh.requests.Add(1)
	}
	if kind == kindOK {
		begin := sent
		if fromPlanned {
			begin = planned
		}
		lat := int64(done - begin)
		b := bucketOf(lat)
		w.h.add(b, lat)
		w.ok++
		if sh != nil {
			sh.counts[b].Add(1)
		}
		return
	}
	w.errs[kind]++
	if sh != nil {
		sh.errors.Add(1)
	}
	r.noteError(func() string {
		line := strings.TrimSuffix(string(req[:bytes.IndexByte(req, '\r')]), " HTTP/1.1")
		if kind == errStatus {
			return fmt.Sprintf("%s: unexpected status %d", line, code)
		}
		return fmt.Sprintf("%s: %v", line, err)
	})
}

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
		w.conn.SetDeadline(deadline)
		if w.r.aborted.Load() {
			w.conn.SetDeadline(time.Unix(1, 0)) // stop() may have cut it before the line above
		}
		_, err := w.conn.Write(req)
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
		code, length, chunked, keep, err := w.readHead()
		if err != nil {
			return code, err
		}
		switch {
		case e.method == http.MethodHead || code < 200 || code == 204 || code == 304:
			// no body
		case chunked:
			err = w.discardChunked()
		case length >= 0:
			err = w.discard(length)
		default: // the body runs to EOF
			_, err = io.Copy(io.Discard, w.br)
			keep = false
		}
		if err != nil {
			return code, err
		}
		if code < 200 && code != http.StatusSwitchingProtocols && interim < 10 {
			continue
		}
		if !keep || code == http.StatusSwitchingProtocols {
			w.closeConn()
		}
		return code, nil
	}
}

var errMalformed = errors.New("malformed HTTP response")

// readHead reads a status line and headers, keeping what frames the body.
func (w *worker) readHead() (code int, length int64, chunked, keep bool, err error) {
	line, err := w.br.ReadSlice('\n')
	if err != nil {
		return 0, 0, false, false, err
	}
	// HTTP/1.x NNN reason
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return 0, 0, false, false, fmt.Errorf("%w: status line %q", errMalformed, trimEOL(line))
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, 0, false, false, fmt.Errorf("%w: status line %q", errMalformed, trimEOL(line))
		}
		code = code*10 + int(c-'0')
	}
	keep, length = line[7] == '1', -1
	coded := false // a Transfer-Encoding: the body runs to EOF unless chunked
	for n := 0; ; n++ {
		if line, err = w.br.ReadSlice('\n'); err != nil {
			return code, 0, false, false, err
		}
		line = trimEOL(line)
		if len(line) == 0 {
			if coded {
				length = -1
			}
			return code, length, chunked, keep, nil
		}
		i := bytes.IndexByte(line, ':')
		if i <= 0 || n >= 1000 {
			return code, 0, false, false, fmt.Errorf("%w: header %q", errMalformed, line)
		}
		name, val := line[:i], bytes.TrimSpace(line[i+1:])
		switch {
		case asciiEqualFold(name, "Content-Length"):
			length = 0
			for k, c := range val {
				if c < '0' || c > '9' || k >= 18 {
					return code, 0, false, false, fmt.Errorf("%w: header %q", errMalformed, line)
				}
				length = length*10 + int64(c-'0')
			}
			if len(val) == 0 {
				return code, 0, false, false, fmt.Errorf("%w: header %q", errMalformed, line)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			coded, chunked = true, hasTokenFold(val, "chunked")
		case asciiEqualFold(name, "Connection"):
			if hasTokenFold(val, "close") {
				keep = false
			} else if hasTokenFold(val, "keep-alive") {
				keep = true
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

func (w *worker) closeConn() {
	if w.conn != nil {
		w.conn.Close()
		w.mu.Lock()
		w.conn = nil
		w.mu.Unlock()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

func classify(err error) int {
	var ce *connectError
	switch {
	case errors.As(err, &ce):
		return errConnect
	case isTimeout(err):
		return errTimeout
	}
	return errOther
}

// ---- the run ----

func (r *runner) run() *result {
	seed := r.cfg.Seed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	workers := make([]*worker, r.cfg.Connections)
	for i := range workers {
		workers[i] = r.newWorker(i, seed)
	}
	r.start = time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			if r.open {
				w.openLoop()
			} else {
				w.closedLoop()
			}
		}(w)
	}
	done := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		if r.cfg.Progress != nil {
			r.progress(done)
		}
	}()
	stopDone := make(chan struct{})
	go func() {
		defer close(stopDone)
		select {
		case <-r.cfg.Stop: // nil: never
			r.stop(workers)
		case <-done:
		}
	}()
	wg.Wait() // each worker closed its connection on the way out
	elapsed := time.Since(r.start)
	r.abort() // ends stop()'s grace: nothing is in flight any more
	close(done)
	<-progressDone
	<-stopDone
	return r.collect(workers, elapsed)
}

// seconds is the number of whole seconds in the window as run.
func (r *runner) seconds() int { return min(len(r.secs), int(r.window()/time.Second)) }

// progress prints second k's line shortly after it ended (or at once when
// the run is over).
func (r *runner) progress(done <-chan struct{}) {
	var reqs, errs uint64
	over := false
	for k := 1; k <= len(r.secs); k++ {
		if wait := time.Duration(k)*time.Second + 50*time.Millisecond - time.Since(r.start); wait > 0 && !over {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				over = true
			}
		}
		if over && k > r.seconds() {
			return // stopped early: no lines for seconds never run
		}
		n, e, _, p95, _ := r.secs[k-1].Load().summary()
		reqs += n
		errs += e
		fmt.Fprintf(r.cfg.Progress, "{\"t\": %d, \"requests\": %d, \"errors\": %d, \"rate\": %.1f, \"p95_ns\": %d}\n",
			k, reqs, errs, float64(n), p95)
	}
}

func (r *runner) collect(workers []*worker, elapsed time.Duration) *result {
	res := &result{
		SchemaVersion: 1,
		Tool:          "leakgate-loadgen",
		Mode:          "closed",
		Target:        r.cfg.Target,
		Connections:   r.cfg.Connections,
		TargetRate:    r.cfg.Rate,
		StatusCodes:   map[string]uint64{},
		Seconds:       []secondResult{},
		FirstError:    r.firstErr,
	}
	h := new(hist)
	var sent uint64
	var last time.Duration
	codes := make([]uint64, len(workers[0].codes))
	for _, w := range workers {
		h.merge(&w.h)
		res.OK += w.ok
		sent += w.sent
		res.Errors.Connect += w.errs[errConnect]
		res.Errors.Timeout += w.errs[errTimeout]
		res.Errors.Status += w.errs[errStatus]
		res.Errors.Other += w.errs[errOther]
		for c, n := range w.codes {
			codes[c] += n
		}
		last = max(last, w.last)
	}
	for c, n := range codes {
		if n > 0 {
			res.StatusCodes[strconv.Itoa(c)] = n
		}
	}
	e := res.Errors
	res.Requests = res.OK + e.Connect + e.Timeout + e.Status + e.Other
	if res.Requests == 0 {
		last = elapsed
	}
	res.DurationS = last.Seconds()
	window := r.window()
	res.Interrupted = r.isStopped() || r.aborted.Load() // ended early, or requests in flight were cut
	res.WindowS = window.Seconds()
	if r.open {
		res.Mode = "open"
		res.Planned = r.planned
		if res.Interrupted {
			res.Planned = min(r.planned, r.plannedBefore(window))
		}
		res.AchievedRate = float64(sent) / window.Seconds()
	} else {
		res.Planned = res.Requests
		if res.DurationS > 0 {
			res.AchievedRate = float64(res.Requests) / res.DurationS
		}
	}
	res.Latency = latencyResult{Unit: "ns", Growth: growth, Count: h.n, Min: h.min, Max: h.max,
		Sum: h.sum, Buckets: h.sparse()}
	for k := 0; k < r.seconds(); k++ {
		n, e, p50, p95, p99 := r.secs[k].Load().summary()
		res.Seconds = append(res.Seconds, secondResult{T: k + 1, Requests: n, Errors: e, P50: p50, P95: p95, P99: p99})
	}
	return res
}
