"""A stand-in for a Go service's HTTP surface, for fault tests in attach mode (--target).

It answers the load path and readiness like a healthy service, and serves valid expvar,
goroutine and heap profile data at the probe endpoints, unless a test replaces a route with
something broken (HTML, a truncated gzip, NaN, ...). Small on purpose: the point is what the
probes receive, not the service.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .factories import profile_bytes

# status, content type, body[, extra headers]
Response = tuple[int, str, bytes] | tuple[int, str, bytes, Mapping[str, str]]
Route = Callable[[], Response]


def redirect(location: str, status: int = 302) -> Route:
    """A route that answers a redirect to `location` (another address, to test that leakgate
    does not follow it off the target)."""
    return lambda: (status, "text/plain", b"moved\n", {"Location": location})


def goroutine_profile(goroutines: int = 6) -> bytes:
    """The goroutine profile: `goroutines` goroutines parked in one stack."""
    return profile_bytes(
        [(["runtime.gopark"], [goroutines])], ("goroutine",), file="main.go", line=12
    )


def expvar(heap_alloc: float = 4_000_000, next_gc: float = 8_000_000) -> bytes:
    memstats = {"HeapAlloc": heap_alloc, "HeapObjects": 1000, "NextGC": next_gc, "NumGC": 3}
    return json.dumps({"cmdline": ["fake"], "memstats": memstats}).encode()


def heap_profile() -> bytes:
    """The heap profile: 10 objects, 4 KiB, in one function."""
    return profile_bytes([(["main.h"], [10, 4096])], file="m.go", line=3)


def default_routes() -> dict[str, Route]:
    return {
        "/healthz": lambda: (200, "application/json", b'{"status":"ok"}'),
        "/products/": lambda: (200, "application/json", b'{"sku":"x"}'),
        "/debug/vars": lambda: (200, "application/json", expvar()),
        "/debug/pprof/heap": lambda: (200, "application/octet-stream", heap_profile()),
        "/debug/pprof/goroutine?debug=1": lambda: (
            200,
            "text/plain",
            b"goroutine profile: total 6\n",
        ),
        "/debug/pprof/goroutine": lambda: (
            200,
            "application/octet-stream",
            goroutine_profile(),
        ),
        "/metrics": lambda: (
            200,
            "text/plain; version=0.0.4",
            b"go_goroutines 6\ngo_memstats_heap_alloc_bytes 4e6\ngo_memstats_next_gc_bytes 8e6\n",
        ),
    }


_CONFIG = """\
service:
  ready_path: /healthz
  ready_timeout: {ready}
load:
  warmup: 1s
  duration: 2s
  rate: 100
  connections: 4
  timeout: 500ms
  requests:
    - {{method: GET, path: "/products/{{seq}}"}}
probes:
  interval: 250ms
  quiet_timeout: 1s
{extra}"""


def fake_config(ready: str = "5s", extra: str = "") -> str:
    """A leakgate.yml for checking the stand-in with --target: one-second warm-up, two-second
    trials at 100 requests/s; `extra` goes at the end (more probes keys, or a new section)."""
    return _CONFIG.format(ready=ready, extra=extra)


@contextmanager
def fake_service(overrides: Mapping[str, Route] | None = None) -> Iterator[str]:
    """Serve on a free 127.0.0.1 port; yields the base URL. `overrides` replace routes by path
    (a path with a query matches only that query; one ending in / matches what it prefixes)."""
    routes = {**default_routes(), **(overrides or {})}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path
            route = routes.get(path) or routes.get(path.split("?", 1)[0])
            if route is None:
                route = next(
                    (r for p, r in routes.items() if p.endswith("/") and path.startswith(p)), None
                )
            answer = route() if route else (404, "text/plain", b"404 page not found\n")
            status, kind, body = answer[:3]
            self.send_response(status)
            self.send_header("Content-Type", kind)
            for name, value in (answer[3] if len(answer) > 3 else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            pass  # a client that hung up (a load generator stopping) is not news

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
