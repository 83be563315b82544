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
//	{"t":3,"requests":12345,"errors":0,"rate":4100,"p95_ns":812345}
//
// with cumulative requests and errors, and that second's rate and p95.
//
// Exit status: 0 when the run completed (whatever the responses were), 2 on a
// usage error (bad flag, target or scenario entry), 1 if the output could not
// be written.
package main
