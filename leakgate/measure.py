"""What a trial does to the service it runs: pick where its runtime is read, drive one load phase
while watching that the service stays up, and take the checkpoints with their profiles.

The runner decides the order of trials and phases; this module does each step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakgate import cpuclock
from leakgate.config import Config, ProbeConfig
from leakgate.errors import Interrupted, LoadError, ServiceStartError
from leakgate.load import LoadDriver, LoadPlan
from leakgate.load.builtin import LoadProcess
from leakgate.load.external import ExternalProcess
from leakgate.load.wrk import WrkProcess
from leakgate.model import Checkpoint, Counters, LoadResult, Series, WindowCost
from leakgate.probes import (
    AGENT_TOKEN_ENV,
    AgentSource,
    CpuProfilePlan,
    PprofSource,
    ProbeError,
    PrometheusSource,
    RuntimeSource,
    Sampler,
    TracePlan,
    quiet_goroutines,
    read_rss,
)
from leakgate.retention import save_symbols
from leakgate.service import Exit, ServiceUnderTest
from leakgate.units import format_duration, format_size
from leakgate.yamlnodes import printable

TRACE_SECONDS = 2.0
CPU_PROFILE_MARGIN = 1.5  # seconds the CPU profile ends before the measure window does
CPU_PROFILE_MAX_SECONDS = 60
DEFAULT_TRACE_GROWTH = 16.0
SHOWN_ADDRESS_CHARS = 80  # of an agent address refused, in the message
_AGENT_ADDRESS = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:]+)\]|(?P<v4>[0-9.]+)):(?P<port>[0-9]{1,5})")


class LoadInterrupted(Interrupted):
    """A signal ended a load phase early; `result` is what the driver measured until then
    (None when it could not say), over `elapsed` seconds."""

    def __init__(self, message: str, result: LoadResult | None, elapsed: float) -> None:
        super().__init__(message)
        self.result = result
        self.elapsed = elapsed


class ServiceDied(Exception):
    """The service ended (or, attached, stopped answering) during `phase`."""

    def __init__(self, phase: str, ended: Exit) -> None:
        super().__init__(phase)
        self.phase = phase
        self.ended = ended


def runtime_source(
    probes: ProbeConfig, inject_agent: bool, service: ServiceUnderTest, probe_url: str | None
) -> RuntimeSource:
    """Where the service's runtime is read: the agent, its own pprof+expvar, or /metrics.

    `probe_url` is set only when attached to a service running elsewhere: its pprof+expvar (or
    /metrics) are read there, since no agent can have been injected into it.
    """
    base = probe_url or service.base_url
    if probes.source == "prometheus":
        return PrometheusSource(base, probes.metrics_path)
    if probes.source == "pprof" or not inject_agent or probe_url:
        return PprofSource(base)
    addr = service.agent_address()
    if addr is None:
        _check_running(service, "start-up")
        raise ServiceStartError(
            "leakgate's debug agent did not start in the service (no address written); "
            "set service.inject_agent: false to use the service's own pprof endpoints",
            details=service.log_tail(),
        )
    checked = loopback_agent_address(addr)
    if checked is None:
        shown = addr if len(addr) <= SHOWN_ADDRESS_CHARS else addr[:SHOWN_ADDRESS_CHARS] + "..."
        raise ServiceStartError(
            f"leakgate's debug agent address {printable(shown, quote=True)} is not a loopback "
            "address with a numeric port (127.0.0.0/8 or [::1]): not used, and no token sent "
            "there; set service.inject_agent: false to use the service's own pprof endpoints",
            details=service.log_tail(),
        )
    return AgentSource(checked, service.env.get(AGENT_TOKEN_ENV, ""))


def loopback_agent_address(text: str) -> str | None:
    """The address the agent wrote (`127.0.0.1:PORT`, `[::1]:PORT`) as host:port for its base
    URL, or None unless it is an IP in 127.0.0.0/8 or ::1 with a port 1-65535: what the service
    writes there receives the agent token, so nothing else is accepted (no names, no userinfo,
    no path)."""
    m = _AGENT_ADDRESS.fullmatch(text)
    if m is None:
        return None
    port = int(m["port"])
    if not 0 < port < 65536 or m["port"] != str(port):
        return None
    try:
        ip = ipaddress.ip_address(m["v6"] if m["v6"] is not None else m["v4"])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        return f"[::1]:{port}" if ip == ipaddress.IPv6Address("::1") else None
    return f"{ip}:{port}" if ip in ipaddress.IPv4Network("127.0.0.0/8") else None


CAPACITY_MIN_SECONDS = 1.0
CAPACITY_MAX_SECONDS = 3.0


def capacity_probe_seconds(warmup: float) -> float:
    """How long the closed-loop capacity probe of `rate: auto` runs: half the warm-up, 1-3 s."""
    return min(max(CAPACITY_MIN_SECONDS, warmup / 2), CAPACITY_MAX_SECONDS)


def rate_from_capacity(capacity: float, share: float) -> float:
    """`rate: auto`'s offered rate: `share` of the capacity the closed-loop probe measured."""
    if capacity <= 0:
        raise LoadError("capacity probe served no request; is the load path right?")
    return max(1.0, capacity * share)


def cpu_profile_plan(cfg: Config, trial_dir: Path) -> CpuProfilePlan | None:
    """A CPU profile of the measure window, ending a little before the load does (pprof's
    `seconds` is whole seconds; the agent serves up to 60)."""
    seconds = min(math.floor(cfg.load.duration - CPU_PROFILE_MARGIN), CPU_PROFILE_MAX_SECONDS)
    if seconds < 1:
        return None
    return CpuProfilePlan(dest=trial_dir / "cpu-measure.pb.gz", seconds=seconds)


class CostMeter:
    """Reads the service's cumulative CPU time, allocations and GC cycles, always from the same
    places, so two readings subtract: the runtime source's own counters, with the CPU time read
    locally instead where the source has none or counts it in clock ticks (cpuclock)."""

    def __init__(self, source: RuntimeSource, pid: int | None) -> None:
        self.source = source
        self.pid = pid or 0
        self.cpu_source, self.cpu_coarse = source.cpu_source, source.cpu_coarse
        self._local_cpu = False
        if (not source.cpu_source or source.cpu_coarse) and self.pid:
            local = cpuclock.read(self.pid)
            if local is not None:
                self.cpu_source, self.cpu_coarse, self._local_cpu = local[1], False, True

    def read(self) -> Counters:
        try:
            counters = self.source.counters()
        except ProbeError:
            counters = Counters()
        if self._local_cpu:
            local = cpuclock.read(self.pid)
            # the same counter as at the start, or none: two counters do not subtract
            same = local[0] if local is not None and local[1] == self.cpu_source else None
            counters = dataclasses.replace(counters, cpu_seconds=same)
        return counters

    def window(self, start: Counters, end: Counters, seconds: float) -> WindowCost:
        return WindowCost(
            start=start,
            end=end,
            seconds=seconds,
            cpu_source=self.cpu_source if start.cpu_seconds is not None else "",
            alloc_source=self.source.alloc_source if start.alloc_bytes is not None else "",
            cpu_coarse=self.cpu_coarse,
        )


def trace_plan(cfg: Config, trial_dir: Path) -> TracePlan | None:
    """While goroutines leak, trace the last seconds of the load for `go tool trace`."""
    duration = cfg.load.duration
    if duration < TRACE_SECONDS + 3:
        return None
    growth = cfg.threshold("goroutine_growth").max
    return TracePlan(
        after=duration - TRACE_SECONDS - 1,
        seconds=TRACE_SECONDS,
        growth=growth if growth is not None else DEFAULT_TRACE_GROWTH,
        dest=trial_dir / "trace-measure.out",
        slack=float(cfg.load.connections),
    )


@dataclass(frozen=True)
class LoadSetup:
    """What every load phase of a run shares."""

    config: Config
    loadgen: Path
    scenario: Path
    cpus: Sequence[int] | None
    progress: Callable[[str], None]
    progress_every: float

    def driver(self, plan: LoadPlan, phase: str) -> LoadDriver:
        """The configured tool for one phase. An external tool runs the measure window only:
        the warm-up and the capacity probe stay leakgate's own generator's."""
        load = self.config.load
        if load.tool == "external" and phase == "measure":
            return ExternalProcess(
                plan, command=load.command, results=[Path(r) for r in load.results]
            )
        tool = WrkProcess if load.tool == "wrk" else LoadProcess
        return tool(plan, binary=self.loadgen, scenario=self.scenario, connections=load.connections)


def drive(
    setup: LoadSetup,
    service: ServiceUnderTest,
    duration: float,
    rate: float,
    out: Path,
    name: str,
    label: str,
    sampler: Sampler | None = None,
) -> LoadResult:
    """One load phase: `duration` seconds at `rate` (0: closed loop), the service watched."""
    plan = LoadPlan(
        target=service.base_url,
        duration=duration,
        rate=rate,
        timeout=setup.config.load.timeout,
        out_path=out,
        cpus=setup.cpus,
    )
    proc = setup.driver(plan, name)
    proc.start()
    if sampler is not None:
        sampler.start()
    start = time.monotonic()
    next_progress = start + setup.progress_every
    try:
        while proc.poll() is None:
            _check_running(service, name)
            now = time.monotonic()
            if now - start > proc.deadline:
                raise LoadError(f"the load generator did not finish within {proc.deadline:.0f}s")
            if now >= next_progress:
                line = progress_line(label, name, now - start, duration, proc.progress)
                setup.progress(line + _runtime_progress(sampler))
                next_progress += setup.progress_every
            time.sleep(0.05)
        _check_running(service, name)
        return proc.result()
    except Interrupted as e:
        # The first Ctrl-C or SIGTERM: stop the driver gracefully and keep what it measured
        # (a second signal still kills everything at once: see commands.run.Signals).
        elapsed = time.monotonic() - start
        raise LoadInterrupted(e.message, proc.interrupt(), elapsed) from None
    finally:
        proc.stop()
        setup.progress("")


def _check_running(service: ServiceUnderTest, phase: str) -> None:
    """ServiceDied if the service's process has ended (attached: never, see still_up)."""
    ended = service.exited()
    if ended is not None:
        raise ServiceDied(phase, ended)


def _runtime_progress(sampler: Sampler | None) -> str:
    """The live heap and goroutines for the progress line, when the sampler has read them."""
    latest = sampler.latest if sampler is not None else None
    if latest is None:
        return ""
    text = ""
    if latest.heap_live is not None:
        text += f"  heap {format_size(latest.heap_live)}"
    if latest.goroutines is not None:
        text += f"  goroutines {latest.goroutines:,.0f}"
    return text


def checkpoint(
    label: str,
    source: RuntimeSource,
    service: ServiceUnderTest,
    trial_dir: Path,
    report_dir: Path,
    quiet_timeout: float,
    notes: list[str],
    heap_dump_max: int | None = None,
) -> Checkpoint:
    """Goroutines settled, the heap read (after a GC where the source can force one), and the
    heap and goroutine profiles saved under trial_dir; with the agent and a `heap_dump_max`, a
    heap dump last (its forced GCs and its pause then disturb none of the figures).

    A profile that cannot be taken is noted in `notes` and left out; the checkpoint stands.
    """
    count, stable = quiet_goroutines(source.goroutines, quiet_timeout)
    _check_running(service, label)
    heap = source.checkpoint()
    profiles: dict[str, str | None] = {}
    for key, name, query, filename in (
        ("heap_profile", "heap", "gc=1", f"heap-{label}.pb.gz"),
        ("goroutine_profile", "goroutine", "", f"goroutine-{label}.pb.gz"),
        ("goroutine_text", "goroutine", "debug=1", f"goroutine-{label}.txt"),
    ):
        try:
            path = source.save_profile(name, trial_dir / filename, query)
            profiles[key] = rel(path, report_dir)
        except ProbeError as e:
            profiles[key] = None
            # without the URL: its port changes with every trial, the reason does not
            reason = str(e).replace(source.base_url, "")
            notes.append(f"{label}: {name} profile not taken: {reason}")
    sample = None
    with contextlib.suppress(ProbeError):
        sample = source.sample()
    rss, _ = read_rss(service.pid or 0)
    dump = None
    if isinstance(source, AgentSource) and heap_dump_max:
        dump = _heap_dump(label, source, service, trial_dir, heap_dump_max, notes)
    # Only at drain (the analysis reads no other), and after the dump: the runtime keeps the
    # goroutines it finds leaked in a status WriteHeapDump aborts the process on (Go 1.26).
    leak_profile = None
    if isinstance(source, AgentSource) and label != "warmup":
        with contextlib.suppress(ProbeError):
            path = source.save_profile("goroutineleak", trial_dir / f"goroutineleak-{label}.pb.gz")
            leak_profile = rel(path, report_dir)
    return Checkpoint(
        label=label,
        heap_alloc=heap.heap_alloc,
        heap_objects=heap.heap_objects,
        goroutines=count if count is not None else heap.goroutines,
        goroutines_stable=stable,
        gc_cycles=int(sample.gc_cycles) if sample and sample.gc_cycles is not None else None,
        gc_cpu_seconds=sample.gc_cpu_seconds if sample else None,
        rss=rss,
        heap_profile=profiles["heap_profile"],
        goroutine_profile=profiles["goroutine_profile"],
        goroutine_text=profiles["goroutine_text"],
        goroutineleak_profile=leak_profile,
        heap_dump=rel(dump[0], report_dir) if dump else None,
        heap_dump_pause=dump[1] if dump else None,
        symbols=rel(dump[2], report_dir) if dump and dump[2] else None,
        source=source.name,
    )


def _heap_dump(
    label: str,
    source: AgentSource,
    service: ServiceUnderTest,
    trial_dir: Path,
    heap_dump_max: int,
    notes: list[str],
) -> tuple[Path, float, Path | None] | None:
    """The agent's heap dump moved to trial_dir/heap-LABEL.heapdump, and the binary's data
    symbols beside it (once per trial directory), to name the package variables it holds."""
    binary = getattr(service, "binary", None)
    try:
        taken = source.heap_dump(f"heap-{label}", heap_dump_max)
    except ProbeError as e:
        notes.append(f"{label}: no heap dump: {str(e).replace(source.base_url, '')}")
        return None
    dest = trial_dir / f"heap-{label}.heapdump"
    dump_dir = service.env.get("LEAKGATE_AGENT_DUMP_DIR")
    expected = Path(dump_dir, f"heap-{label}.heapdump") if dump_dir else None
    if expected is None or taken.path != expected:
        notes.append(f"{label}: the agent wrote its heap dump to {taken.path}, not {expected}")
        return None
    try:
        if taken.path.resolve() != dest.resolve():
            os.replace(taken.path, dest)
    except OSError as e:
        notes.append(f"{label}: the heap dump could not be kept: {e}")
        return None
    symbols = trial_dir / "symbols.txt"
    if not symbols.exists() and isinstance(binary, Path):
        symbols = save_symbols(binary, symbols) or symbols
    return dest, taken.pause, symbols if symbols.exists() else None


def series(sampler: Sampler) -> dict[str, Series]:
    """The sampler's 1 Hz readings as the record's named series."""
    return {
        "heap_live": Series("heap_live", "bytes", tuple(sampler.heap)),
        "goroutines": Series("goroutines", "count", tuple(sampler.goroutines)),
        "rss": Series("rss", "bytes", tuple(sampler.rss)),
        "gc_cycles": Series("gc_cycles", "count", tuple(sampler.gc_cycles)),
        "gc_cpu_seconds": Series("gc_cpu_seconds", "seconds", tuple(sampler.gc_cpu)),
        "total_cpu_seconds": Series("total_cpu_seconds", "seconds", tuple(sampler.total_cpu)),
    }


def progress_line(
    label: str, phase: str, elapsed: float, total: float, p: Mapping[str, Any]
) -> str:
    parts = [f"{label} {phase:8} {min(elapsed, total):5.1f}/{total:.0f}s"]
    rate = p.get("rate")
    if isinstance(rate, (int, float)):
        parts.append(f"{rate:,.0f} req/s")
    p95 = p.get("p95_ns")
    if isinstance(p95, (int, float)) and p95 > 0:
        parts.append(f"p95 {format_duration(p95 / 1e9)}")
    errors = p.get("errors")
    if isinstance(errors, int) and errors:
        parts.append(f"{errors:,} errors")
    return "  ".join(parts)


def rel(path: Path, base: Path) -> str:
    """`path` relative to `base` (the report directory) when inside it: reports link by these."""
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
