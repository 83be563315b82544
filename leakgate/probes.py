"""Reading the Go runtime of the service under test: the injected agent, or the service's own
net/http/pprof + expvar endpoints, and /proc. Every read is size-capped and parsed defensively."""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakgate import pprof, prometheus, redirects
from leakgate.atomic import write_atomic
from leakgate.errors import EnvironmentProblem
from leakgate.model import Counters
from leakgate.procs import helper_thread

MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_PROFILE_BYTES = 64 * 1024 * 1024
# Seconds for two forced GCs and a dump of up to probes.heap_dump_max; under the agent's 80 s
# WriteTimeout, so a dump the agent finishes is always answered.
HEAP_DUMP_TIMEOUT = 75.0
MAX_METRICS_BYTES = 16 * 1024 * 1024
TRACE_FETCH_SLACK = 10.0  # seconds a trace request may take beyond the trace itself
# The agent answers only requests that carry the token leakgate gave the service at start-up
# (and only loopback Host headers): a web page that rebinds a name to 127.0.0.1 has neither.
AGENT_TOKEN_ENV = "LEAKGATE_AGENT_TOKEN"
AGENT_TOKEN_HEADER = "X-Leakgate-Token"

_opener = redirects.opener()


def new_agent_token() -> str:
    """A fresh secret for one service process's agent (256 bits, URL- and header-safe)."""
    return secrets.token_urlsafe(32)


class ProbeError(EnvironmentProblem):
    """A probe could not read what it asked for (the service may be gone or busy)."""

    kind = "could not read the service's runtime"


def fetch(
    url: str,
    *,
    method: str = "GET",
    timeout: float = 10.0,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    req = urllib.request.Request(
        url, method=method, data=b"" if method == "POST" else None, headers=dict(headers or {})
    )
    try:
        with _opener.open(req, timeout=timeout) as resp:
            body: bytes = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise ProbeError(f"{url}: {redirects.describe(e)}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ProbeError(f"{url}: {getattr(e, 'reason', e)}") from None
    if len(body) > max_bytes:
        raise ProbeError(f"{url}: answer larger than {max_bytes} bytes")
    return body


def fetch_json(
    url: str,
    *,
    method: str = "GET",
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    body = fetch(url, method=method, timeout=timeout, max_bytes=MAX_JSON_BYTES, headers=headers)
    return parse_json_object(body, url)


def parse_json_object(body: bytes, where: str) -> dict[str, Any]:
    """A JSON object from a service's endpoint; ProbeError for anything else."""
    try:
        data = json.loads(body, parse_constant=lambda c: None)  # NaN/Infinity -> None
    except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python goes
        raise ProbeError(f"{where}: not JSON ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(data, dict):
        raise ProbeError(f"{where}: expected a JSON object")
    return data


def expvar_sample(body: bytes, where: str) -> tuple[float | None, float | None]:
    """(heap series value, GC cycles) from an expvar /debug/vars body."""
    data = parse_json_object(body, where)
    return _heap_goal(data), _number(data, "memstats", "NumGC")


def _number(data: dict[str, Any], *path: str) -> float | None:
    value: Any = data
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class RuntimeSample:
    heap_live: float | None
    goroutines: float | None
    gc_cycles: float | None = None
    gc_cpu_seconds: float | None = None
    total_cpu_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class HeapCheckpoint:
    heap_alloc: int | None
    heap_objects: int | None
    goroutines: int | None


class RuntimeSource:
    """Where runtime numbers and profiles come from; implementations below."""

    name = "none"
    # Where counters() reads CPU time and allocations ("" where it cannot), and whether its
    # CPU time is counted in 10 ms clock ticks (too coarse for a handler of a few µs).
    cpu_source = ""
    cpu_coarse = False
    alloc_source = ""
    base_url = ""
    headers: Mapping[str, str] = {}  # sent with every request (the agent's token)
    forced_gc: bool | None = None  # whether the last checkpoint could force a GC

    def epoch(self) -> float | None:
        """A figure that only grows while one process lives (bytes allocated since start), to
        tell a restart behind a URL; None where the source has none."""
        return None

    def force_gc(self) -> None:
        """A GC through pprof's `?gc=1` (the profile itself is discarded). A service without
        pprof cannot be asked: the checkpoint then reads the heap as it is, and says so. Once
        a checkpoint could not force one, `forced_gc` stays False for the trial: warm-up and
        drain figures taken differently do not subtract."""
        try:
            body = fetch(
                f"{self.base_url}/debug/pprof/heap?gc=1",
                timeout=60.0,
                max_bytes=MAX_PROFILE_BYTES,
                headers=self.headers,
            )
            pprof.parse(body)  # a 200 from a proxy's error page is no GC
            forced = True
        except pprof.ProfileTooLarge as e:  # a profile too large to read: pprof did the GC,
            forced = e.recognised  # but a large error page is no proof of it
        except (ProbeError, pprof.ProfileError):
            forced = False
        self.forced_gc = forced and self.forced_gc is not False

    def sample(self) -> RuntimeSample:
        raise NotImplementedError

    def counters(self) -> Counters:
        """The process's cumulative CPU time, heap allocations and GC cycles, read now."""
        return Counters()

    def goroutines(self) -> int | None:
        return _int(self.sample().goroutines)

    def checkpoint(self) -> HeapCheckpoint:
        raise NotImplementedError

    def save_profile(self, name: str, dest: Path, query: str = "", timeout: float = 30.0) -> Path:
        body = fetch(
            f"{self.base_url}/debug/pprof/{name}{'?' + query if query else ''}",
            timeout=timeout,
            max_bytes=MAX_PROFILE_BYTES,
            headers=self.headers,
        )
        if not body:
            raise ProbeError(f"empty {name} profile")
        if "debug=" not in query:
            try:  # checked now, so a report says what the endpoint served instead
                pprof.parse(body)
            except pprof.ProfileError as e:
                raise ProbeError(f"{name} profile: {e}") from None
        write_atomic(dest, body)
        return dest

    def save_trace(self, dest: Path, seconds: float) -> Path:
        """A runtime/trace of the next `seconds`, for `go tool trace`."""
        body = fetch(
            f"{self.base_url}/debug/pprof/trace?seconds={seconds:g}",
            timeout=seconds + TRACE_FETCH_SLACK,
            max_bytes=MAX_PROFILE_BYTES,
            headers=self.headers,
        )
        if not body.startswith(b"go 1."):  # every Go execution trace starts "go 1.NN trace"
            raise ProbeError("the trace endpoint did not return a Go execution trace")
        write_atomic(dest, body)
        return dest


class AgentSource(RuntimeSource):
    """The debug agent leakgate injected: samples from runtime/metrics without stopping the
    world; the window counters from ReadMemStats, which stops it briefly."""

    name = "agent"
    cpu_source = "getrusage user + system (agent)"
    alloc_source = "runtime.ReadMemStats TotalAlloc and Mallocs, per-P caches flushed (agent)"

    def __init__(self, addr: str, token: str) -> None:
        self.base_url = f"http://{addr}"
        self.headers = {AGENT_TOKEN_HEADER: token}
        self.info: dict[str, Any] = {}

    def sample(self) -> RuntimeSample:
        data = fetch_json(f"{self.base_url}/leakgate/metrics", timeout=5.0, headers=self.headers)
        if not self.info:
            self.info = data
        return RuntimeSample(
            heap_live=_number(data, "heap_live_bytes"),
            # runtime.NumGoroutine(): /sched/goroutines also counts the runtime's own GC workers,
            # which appear at the first GC and would look like growth.
            goroutines=_number(data, "num_goroutine") or _number(data, "goroutines"),
            gc_cycles=_number(data, "gc_cycles"),
            gc_cpu_seconds=_number(data, "gc_cpu_seconds"),
            total_cpu_seconds=_number(data, "total_cpu_seconds"),
        )

    def counters(self) -> Counters:
        # /leakgate/counters stops the world to flush the per-P allocation caches: exact counts,
        # where runtime/metrics' are off by up to a span per size class (leakgate_agent.go)
        data = fetch_json(f"{self.base_url}/leakgate/counters", timeout=5.0, headers=self.headers)
        return Counters(
            cpu_seconds=_number(data, "process_cpu_seconds"),
            alloc_bytes=_number(data, "alloc_bytes"),
            alloc_objects=_number(data, "alloc_objects"),
            gc_cycles=_number(data, "gc_cycles"),
        )

    def checkpoint(self) -> HeapCheckpoint:
        data = fetch_json(
            f"{self.base_url}/leakgate/checkpoint",
            method="POST",
            timeout=60.0,
            headers=self.headers,
        )
        return HeapCheckpoint(
            heap_alloc=_int(_number(data, "heap_alloc")),
            heap_objects=_int(_number(data, "heap_objects")),
            goroutines=_int(_number(data, "goroutines")),
        )

    def heap_dump(self, name: str, max_heap: int) -> HeapDumpTaken:
        """A heap dump after the agent's forced GCs, written into the directory the service was
        started with (LEAKGATE_AGENT_DUMP_DIR); ProbeError when the agent refused or failed."""
        data = fetch_json(
            f"{self.base_url}/leakgate/heapdump?name={name}&max={max_heap}",
            method="POST",
            timeout=HEAP_DUMP_TIMEOUT,
            headers=self.headers,
        )
        if isinstance(data.get("refused"), str):
            raise ProbeError(f"heap dump refused: {data['refused']}")
        file, pause = data.get("file"), _number(data, "pause_seconds")
        if not isinstance(file, str) or pause is None:
            raise ProbeError("heap dump: the agent's answer names no file")
        return HeapDumpTaken(Path(file), float(pause))


@dataclass(frozen=True, slots=True)
class HeapDumpTaken:
    path: Path
    pause: float  # seconds the world was stopped


_GOROUTINE_TOTAL = re.compile(rb"goroutine profile: total (\d+)")


class PprofSource(RuntimeSource):
    """The service's own net/http/pprof and expvar endpoints (service.inject_agent: false).

    expvar's memstats stop the world briefly. expvar has no live-heap figure: HeapAlloc includes
    garbage not yet collected (a sawtooth), so the heap series is the GC's heap goal, NextGC,
    which the runtime sets from the live heap at the end of each cycle (live × (1 + GOGC/100),
    4 MiB at least): it rises and falls with the live heap, without the sawtooth.
    """

    name = "pprof+expvar"
    alloc_source = "expvar memstats TotalAlloc and Mallocs"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def goroutines(self) -> int | None:
        body = fetch(
            f"{self.base_url}/debug/pprof/goroutine?debug=1",
            timeout=10.0,
            max_bytes=MAX_PROFILE_BYTES,
        )
        m = _GOROUTINE_TOTAL.search(body[:200])
        return int(m.group(1)) if m else None

    def sample(self) -> RuntimeSample:
        url = f"{self.base_url}/debug/vars"
        heap, gc_cycles = expvar_sample(fetch(url, timeout=5.0, max_bytes=MAX_JSON_BYTES), url)
        return RuntimeSample(
            heap_live=heap,
            goroutines=float(g) if (g := self.goroutines()) is not None else None,
            gc_cycles=gc_cycles,
        )

    def epoch(self) -> float | None:
        try:
            data = fetch_json(f"{self.base_url}/debug/vars", timeout=10.0)
        except ProbeError:
            return None
        return _number(data, "memstats", "TotalAlloc")

    def counters(self) -> Counters:
        data = fetch_json(f"{self.base_url}/debug/vars", timeout=5.0)
        return Counters(
            alloc_bytes=_number(data, "memstats", "TotalAlloc"),
            alloc_objects=_number(data, "memstats", "Mallocs"),
            gc_cycles=_number(data, "memstats", "NumGC"),
        )

    def checkpoint(self) -> HeapCheckpoint:
        self.force_gc()
        data = fetch_json(f"{self.base_url}/debug/vars", timeout=10.0)
        return HeapCheckpoint(
            heap_alloc=_int(_number(data, "memstats", "HeapAlloc")),
            heap_objects=_int(_number(data, "memstats", "HeapObjects")),
            goroutines=self.goroutines(),
        )


class PrometheusSource(RuntimeSource):
    """The service's own Prometheus /metrics (client_golang's Go and process collectors).

    Checkpoints force a GC through `/debug/pprof/heap?gc=1` where the service also serves
    pprof and then read `go_memstats_heap_alloc_bytes`; without pprof there is no forced GC and
    the checkpoint's heap is the live-heap estimate (see prometheus.parse), which the run notes.
    """

    name = "prometheus"
    # client_golang's process collector reads /proc/self/stat: clock ticks.
    cpu_source = "process_cpu_seconds_total (/metrics)"
    cpu_coarse = True
    alloc_source = "go_memstats_alloc_bytes_total and go_memstats_mallocs_total (/metrics)"

    def __init__(self, base_url: str, metrics_path: str) -> None:
        self.base_url = base_url
        self.metrics_url = base_url + metrics_path

    def read(self) -> prometheus.GoRuntime:
        body = fetch(self.metrics_url, timeout=5.0, max_bytes=MAX_METRICS_BYTES)
        try:
            return prometheus.parse(body.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ProbeError(f"{self.metrics_url}: not UTF-8 text (byte {e.start})") from None
        except prometheus.MetricsError as e:
            raise ProbeError(f"{self.metrics_url}: {e}") from None

    def sample(self) -> RuntimeSample:
        g = self.read()
        return RuntimeSample(
            heap_live=g.heap_live,
            goroutines=g.goroutines,
            gc_cycles=g.gc_cycles,
            total_cpu_seconds=g.total_cpu_seconds,
        )

    def epoch(self) -> float | None:
        try:
            g = self.read()
        except ProbeError:
            return None
        if g.alloc_total is not None:
            return g.alloc_total
        return -g.start_time if g.start_time is not None else None  # a later start: smaller

    def counters(self) -> Counters:
        g = self.read()
        return Counters(
            cpu_seconds=g.total_cpu_seconds,
            alloc_bytes=g.alloc_total,
            alloc_objects=g.mallocs_total,
            gc_cycles=g.gc_cycles,
        )

    def checkpoint(self) -> HeapCheckpoint:
        self.force_gc()
        g = self.read()
        heap = g.heap_alloc if self.forced_gc and g.heap_alloc is not None else g.heap_live
        return HeapCheckpoint(
            heap_alloc=_int(heap),
            heap_objects=_int(g.heap_objects) if self.forced_gc else None,
            goroutines=_int(g.goroutines),
        )


def _heap_goal(data: dict[str, Any]) -> float | None:
    goal = _number(data, "memstats", "NextGC")
    if goal is None or goal >= 2**62:  # GOGC=off: no goal, fall back to the sawtooth
        return _number(data, "memstats", "HeapAlloc")
    return goal


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


_STATUS_FIELD = re.compile(r"^(VmRSS|VmHWM):\s+(\d+)\s+kB", re.MULTILINE)


def read_rss(pid: int) -> tuple[int | None, int | None]:
    """(current RSS, peak RSS) in bytes from /proc; (None, None) if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (OSError, UnicodeDecodeError):
        return None, None
    fields = {name: int(kb) * 1024 for name, kb in _STATUS_FIELD.findall(text)}
    return fields.get("VmRSS"), fields.get("VmHWM")


def quiet_goroutines(
    count: Callable[[], int | None], timeout: float, *, settle: int = 3
) -> tuple[int | None, bool]:
    """The goroutine count once it stops changing: `settle` equal readings in a row, with
    back-off, for at most `timeout` seconds. Returns (count, stable)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    last: int | None = None
    same = 0
    while True:
        try:
            value = count()
        except ProbeError:
            value = None
        if value is not None and value == last:
            same += 1
            if same >= settle - 1:
                return value, True
        else:
            same = 0
        last = value if value is not None else last
        if time.monotonic() + delay > deadline:
            return last, False
        time.sleep(delay)
        delay = min(delay * 1.6, 0.5)


@dataclass(frozen=True, slots=True)
class TracePlan:
    """Take a runtime/trace of `seconds` once `after` seconds have passed, if the goroutine
    count has grown by more than `growth` plus `slack` since the load settled.

    The reference is the lowest count from `settle` seconds into the window on: before that
    the generator is still connecting, and every connection (and request in flight) adds a
    goroutine, which `slack` (one per connection) also covers later on."""

    after: float
    seconds: float
    growth: float
    dest: Path
    slack: float = 0.0
    settle: float = 1.0

    def due(self, goroutines: Sequence[tuple[float, float]], t: float) -> bool:
        settled = [v for at, v in goroutines if at >= self.settle]
        if t < self.after or len(settled) < 2:
            return False
        return settled[-1] - min(settled) > self.growth + self.slack


@dataclass(frozen=True)
class CpuProfilePlan:
    """A CPU profile of most of the measure window: `seconds` from when the load started."""

    dest: Path
    seconds: int


CPU_PROFILE_SLACK = 15.0  # seconds the profile's request may take beyond the profile itself


class Sampler:
    """Samples the runtime and RSS at a fixed interval on a background thread; with a
    TracePlan, also captures an execution trace while goroutines leak, and with a
    CpuProfilePlan a CPU profile of the window."""

    def __init__(
        self,
        source: RuntimeSource,
        pid: int,
        interval: float,
        trace: TracePlan | None = None,
        cpu_profile: CpuProfilePlan | None = None,
    ) -> None:
        self.source = source
        self.pid = pid
        self.interval = interval
        self.heap: list[tuple[float, float]] = []
        self.goroutines: list[tuple[float, float]] = []
        self.rss: list[tuple[float, float]] = []
        self.gc_cycles: list[tuple[float, float]] = []
        self.gc_cpu: list[tuple[float, float]] = []
        self.total_cpu: list[tuple[float, float]] = []
        self.rss_peak: int | None = None
        self.errors = 0
        self.latest: RuntimeSample | None = None
        self.trace_plan = trace
        self.trace_path: Path | None = None
        self._tracer: threading.Thread | None = None
        self.cpu_plan = cpu_profile
        self.cpu_profile_path: Path | None = None
        self.cpu_profile_error = ""
        self._profiler: threading.Thread | None = None
        self._stop = threading.Event()
        self._thread = helper_thread(self._run, name="leakgate-sampler")
        self._t0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()
        plan = self.cpu_plan
        if plan is not None:
            self._profiler = helper_thread(
                self._cpu_profile, args=(plan,), name="leakgate-cpu-profile"
            )
            self._profiler.start()

    def _cpu_profile(self, plan: CpuProfilePlan) -> None:
        try:
            self.cpu_profile_path = self.source.save_profile(
                "profile", plan.dest, f"seconds={plan.seconds}", plan.seconds + CPU_PROFILE_SLACK
            )
        except (ProbeError, OSError) as e:
            self.cpu_profile_error = str(e).replace(self.source.base_url, "")

    def stop(self, *, cut: bool = False) -> None:
        """Stop sampling; wait for the CPU profile unless the window was `cut` short (it then
        finishes on its own, and is not used)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._profiler is not None and self._profiler.is_alive() and self.cpu_plan:
            self._profiler.join(timeout=0.5 if cut else self.cpu_plan.seconds + CPU_PROFILE_SLACK)
        if self._tracer is not None and self._tracer.is_alive() and self.trace_plan:
            # Longer than the fetch's own timeout, so the thread has ended before the next
            # trial forks a child.
            self._tracer.join(timeout=self.trace_plan.seconds + TRACE_FETCH_SLACK + 5.0)

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            t = time.monotonic() - self._t0
            self.sample_once(round(t, 3))
            self._maybe_trace(t)
            tick += 1
            # Schedule against the start so slow reads do not drift the series.
            next_at = self._t0 + tick * self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _maybe_trace(self, t: float) -> None:
        plan = self.trace_plan
        if plan is None or self._tracer is not None or t < plan.after:
            return
        if not plan.due(self.goroutines, t):
            self._tracer = helper_thread(lambda: None, name="leakgate-no-trace")  # never started
            return

        def capture() -> None:
            with contextlib.suppress(ProbeError, OSError):
                self.trace_path = self.source.save_trace(plan.dest, plan.seconds)

        self._tracer = helper_thread(capture, name="leakgate-trace")
        self._tracer.start()

    def sample_once(self, t: float) -> None:
        rss, hwm = read_rss(self.pid)
        if rss is not None:
            self.rss.append((t, float(rss)))
        if hwm is not None:
            self.rss_peak = max(self.rss_peak or 0, hwm)
        try:
            s = self.source.sample()
        except ProbeError:
            self.errors += 1
            return
        self.latest = s
        for series, value in (
            (self.heap, s.heap_live),
            (self.goroutines, s.goroutines),
            (self.gc_cycles, s.gc_cycles),
            (self.gc_cpu, s.gc_cpu_seconds),
            (self.total_cpu, s.total_cpu_seconds),
        ):
            if value is not None:
                series.append((t, value))
