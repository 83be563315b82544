"""One gate run: build, then for each trial start the service, warm it up, checkpoint, measure
under load with 1 Hz probes, drain, checkpoint, stop. Everything started is stopped on every path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leakgate import __version__
from leakgate.build import binary_go_version, build_loadgen, build_service, find_go
from leakgate.config import Config, environ_without_leakgate
from leakgate.environment import describe_environment
from leakgate.errors import LoadError, ServiceStartError
from leakgate.load.builtin import LoadProcess, write_scenario
from leakgate.load.external import ExternalProcess
from leakgate.load.wrk import WrkProcess, find_wrk
from leakgate.model import (
    Checkpoint,
    Environment,
    LoadResult,
    RunRecord,
    Series,
    ServiceStatus,
    Trial,
    to_plain,
)
from leakgate.probes import (
    AgentSource,
    PprofSource,
    ProbeError,
    PrometheusSource,
    RuntimeSource,
    Sampler,
    TracePlan,
    quiet_goroutines,
    read_rss,
)
from leakgate.remote import RemoteService, Target, restarted
from leakgate.service import Exit, Service
from leakgate.units import format_duration, format_size

PROBE_MIN_SECONDS = 1.0
PROBE_MAX_SECONDS = 3.0
PROGRESS_EVERY_TTY = 1.0
PROGRESS_EVERY_LOG = 5.0
TRACE_SECONDS = 2.0
AnyService = Service | RemoteService  # one the runner started, or one it attached to
DEFAULT_TRACE_GROWTH = 16.0


class _ServiceDied(Exception):
    def __init__(self, phase: str, ended: Exit) -> None:
        super().__init__(phase)
        self.phase = phase
        self.ended = ended


@dataclass
class Reporter:
    """How the runner talks to the person watching: a step line, and a live progress line."""

    say: Callable[[str], None] = lambda line: None
    progress: Callable[[str], None] = lambda line: None
    live: bool = False


@dataclass
class _TrialState:
    """What a trial has measured so far, kept so a trial cut short still reports it."""

    index: int
    side: str = "candidate"
    warmup_load: LoadResult | None = None
    load: LoadResult | None = None
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    series: dict[str, Series] = field(default_factory=dict)
    rss_peak: int | None = None
    measure_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    service: ServiceStatus = field(default_factory=ServiceStatus)
    trace: str | None = None

    def measured_anything(self) -> bool:
        return bool(self.warmup_load or self.load or self.checkpoints or self.service.died)

    def freeze(self, offered_rate: float | None) -> Trial:
        return Trial(
            index=self.index,
            side=self.side,
            warmup_load=self.warmup_load,
            load=self.load,
            series=dict(self.series),
            checkpoints=dict(self.checkpoints),
            rss_peak=self.rss_peak,
            service=self.service,
            measure_seconds=self.measure_seconds,
            offered_rate=offered_rate,
            notes=tuple(self.notes),
            trace=self.trace,
        )


@dataclass(frozen=True)
class _Prepared:
    """What every trial of a run shares once the builds are done."""

    binaries: dict[str, Path]
    loadgen: Path
    scenario: Path
    service_cpus: list[int] | None
    load_cpus: list[int] | None


def split_cpus(enabled: bool) -> tuple[list[int] | None, list[int] | None]:
    """Disjoint CPU sets for the service and the load generator (service gets the first half)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None, None
    half = len(cpus) // 2
    return cpus[:half], cpus[half:]


def trial_order(trials: int, sides: Sequence[str], seed: int) -> list[str]:
    """Which side runs when: `trials` rounds, each running every side once in a random order.

    Balanced (every side runs `trials` times) and randomised per round, so drift on a shared
    machine (thermal, neighbours) lands on both sides alike instead of on whichever ran last.
    """
    rng = random.Random(seed)
    order: list[str] = []
    for _ in range(trials):
        round_ = list(sides)
        rng.shuffle(round_)
        order.extend(round_)
    return order


class Runner:
    def __init__(
        self,
        config: Config,
        package_dir: Path,
        report_dir: Path,
        reporter: Reporter | None = None,
        *,
        base_dir: Path | None = None,
        base_revision: str = "",
        command: str = "check",
        seed: int | None = None,
        offered_rate: float | None = None,
        target: Target | None = None,
    ) -> None:
        self.config = config
        self.target = target  # attach mode: load and probe a running service, build nothing
        self.package_dir = package_dir
        self.sides: dict[str, Path] = {"candidate": package_dir}
        if base_dir is not None:
            self.sides["baseline"] = base_dir
        self.command = command
        self.base_revision = base_revision
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.report_dir = report_dir.resolve()
        self.reporter = reporter or Reporter()
        self.trials: list[Trial] = []
        self.current: _TrialState | None = None
        self._prepared: _Prepared | None = None
        # A stored baseline's rate: both sides of a comparison must see the same offered load.
        self.offered_rate: float | None = offered_rate
        self.environment = Environment(leakgate_version=__version__)
        self.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    # -- the record, complete or partial ---------------------------------------------------

    def record(self, *, interrupted: bool = False, error: str | None = None) -> RunRecord:
        trials = list(self.trials)
        if self.current is not None and self.current.measured_anything():
            # a trial cut short by an interrupt or an error, after it had measured something
            trials.append(self.current.freeze(self.offered_rate))
        return RunRecord(
            created=self.created,
            package=self.target.url if self.target else str(self.package_dir),
            command=self.command,
            config=to_plain(self.config),
            environment=self.environment,
            trials=tuple(trials),
            base_revision=self.base_revision,
            trial_order_seed=self.seed if len(self.sides) > 1 else None,
            interrupted=interrupted,
            error=error,
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> RunRecord:
        cfg = self.config
        go = find_go()
        if cfg.load.tool == "wrk":
            find_wrk()  # fail fast, before any build
        self.environment = describe_environment(go, self.package_dir)
        say = self.reporter.say
        started = time.monotonic()
        agent = ", agent injected" if cfg.service.inject_agent else ""
        binaries: dict[str, Path] = {}
        if self.target is not None:
            # Nothing here describes the service's build: its Go and revision are unknown.
            self.environment = dataclasses.replace(
                self.environment, go_version="", git_revision="", git_dirty=False, go_module=""
            )
            say(f"attaching to {self.target.url} (probes at {self.target.probe_url})")
        if cfg.service.prebuilt and self.target is None:
            program = Path(cfg.service.binary or cfg.service.command[0])
            binaries = {side: program for side in self.sides}
            self.environment = dataclasses.replace(
                self.environment,
                go_version=binary_go_version(go, program),
                git_revision="",
                git_dirty=False,
                go_module="",
            )
            say(f"running the prebuilt {program} (no build, so no agent)")
        for side, package_dir in self.sides.items() if not (self.target or binaries) else ():
            say(f"building {side} {package_dir} ({go.version}{agent})")
            binaries[side] = build_service(
                package_dir, cfg.service.build_flags, cfg.service.inject_agent, go
            )
        loadgen = Path(find_wrk()) if cfg.load.tool == "wrk" else build_loadgen(go)
        say(f"built in {time.monotonic() - started:.1f}s")
        # Attached, the service is not on this machine: the generator may use every CPU.
        service_cpus, load_cpus = split_cpus(cfg.load.cpu_split and self.target is None)
        self.environment = dataclasses.replace(
            self.environment,
            service_cpus=tuple(service_cpus or ()),
            loadgen_cpus=tuple(load_cpus or ()),
        )
        self.report_dir.mkdir(parents=True, exist_ok=True)
        scenario = self.report_dir / "scenario.json"
        write_scenario(cfg.load.requests, scenario)
        if isinstance(cfg.load.rate, float):
            self.offered_rate = cfg.load.rate
        elif cfg.load.rate == "max":
            self.offered_rate = None
        self._prepared = _Prepared(binaries, loadgen, scenario, service_cpus, load_cpus)
        self._run_rounds(cfg.trials or 1, self.seed)
        return self.record()

    def run_more(self, rounds: int) -> RunRecord:
        """`confirm`: more trials of every side with the same binaries and offered rate."""
        if self._prepared is None or rounds <= 0:
            return self.record()
        if any(t.service.died for t in self.trials):
            return self.record()
        self.reporter.say(f"confirming: {rounds} more trial(s) per side")
        self._run_rounds(rounds, self.seed + len(self.trials))
        return self.record()

    def _run_rounds(self, rounds: int, seed: int) -> None:
        prepared = self._prepared
        assert prepared is not None
        order = trial_order(rounds, sorted(self.sides), seed)
        first = len(self.trials)
        total = first + len(order)
        for offset, side in enumerate(order):
            self.current = _TrialState(index=first + offset, side=side)
            self._run_trial(
                self.current,
                prepared.binaries.get(side, Path()),
                self.sides[side],
                total,
                prepared.loadgen,
                prepared.scenario,
                prepared.service_cpus,
                prepared.load_cpus,
            )
            self.trials.append(self.current.freeze(self.offered_rate))
            died = self.current.service.died
            self.current = None
            if died:
                break

    def _run_trial(
        self,
        state: _TrialState,
        binary: Path,
        package_dir: Path,
        total: int,
        loadgen: Path,
        scenario: Path,
        service_cpus: list[int] | None,
        load_cpus: list[int] | None,
    ) -> None:
        cfg = self.config
        trial_dir = self.report_dir / f"trial-{state.index + 1}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        env = {**environ_without_leakgate(), **cfg.service.env}
        service: AnyService
        if self.target is not None:
            service = RemoteService(self.target, trial_dir / "service.log")
            state.notes.append(
                f"attached to {self.target.url}: no local process, so RSS is not measured"
            )
        else:
            service = Service(
                binary,
                args=(*cfg.service.command[1:], *cfg.service.args),
                env=env,
                cwd=package_dir,
                log_path=trial_dir / "service.log",
                cpus=service_cpus,
                gomaxprocs=len(service_cpus) if service_cpus else None,
                agent=cfg.service.inject_agent,
                stop_timeout=cfg.service.stop_timeout,
            )
        say = self.reporter.say
        label = f"trial {state.index + 1}/{total}"
        if len(self.sides) > 1:
            label += f" ({state.side})"
        phase = "start-up"
        with service:
            service.start()
            state.service = ServiceStatus(
                pid=service.pid, log_file=_rel(service.log_path, self.report_dir)
            )
            try:
                took = service.wait_ready(cfg.service.ready_path, cfg.service.ready_timeout)
                source = self._source(service)
                pid = f" (pid {service.pid})" if service.pid else " (attached)"
                say(f"{label}: service ready on {service.addr} in {took:.2f}s{pid}")
                self._note_runtime(source)

                def load(
                    duration: float, rate: float, name: str, sampler: Sampler | None = None
                ) -> LoadResult:
                    out = trial_dir / f"load-{name}.json"
                    return self._drive(
                        service,
                        loadgen,
                        scenario,
                        duration,
                        rate,
                        load_cpus,
                        out,
                        name,
                        label,
                        sampler,
                    )

                warmup = cfg.load.warmup
                phase = "warm-up"
                if cfg.load.rate == "auto" and self.offered_rate is None:
                    probe = min(max(PROBE_MIN_SECONDS, warmup / 2), PROBE_MAX_SECONDS)
                    capacity = load(probe, 0.0, "capacity").achieved_rate
                    if capacity <= 0:
                        raise LoadError("capacity probe served no request; is the load path right?")
                    self.offered_rate = max(1.0, capacity * cfg.load.rate_share)
                    warmup = max(0.0, warmup - probe)
                    say(
                        f"{label}: capacity {capacity:,.0f} req/s closed-loop; offering "
                        f"{self.offered_rate:,.0f} req/s ({cfg.load.rate_share:.0%})"
                    )
                rate = self.offered_rate or 0.0
                if warmup > 0:
                    state.warmup_load = load(warmup, rate, "warmup")
                phase = "checkpoint after warm-up"
                state.checkpoints["warmup"] = self._checkpoint("warmup", source, service, trial_dir)
                epoch = source.epoch() if isinstance(service, RemoteService) else None
                phase = "load"
                # Started by _drive once the generator is running: no thread may be alive
                # while a child is forked (preexec_fn is not safe beside other threads).
                sampler = Sampler(
                    source,
                    service.pid or 0,
                    cfg.probes.interval,
                    trace=self._trace_plan(trial_dir),
                )
                t0 = time.monotonic()
                try:
                    state.load = load(cfg.load.duration, rate, "measure", sampler)
                finally:
                    sampler.stop()
                    state.measure_seconds = time.monotonic() - t0
                    state.series = _series(sampler)
                    state.rss_peak = sampler.rss_peak
                    if sampler.trace_path is not None:
                        state.trace = _rel(sampler.trace_path, self.report_dir)
                    if sampler.errors:
                        state.notes.append(f"{sampler.errors} runtime samples could not be read")
                phase = "drain"
                state.checkpoints["drain"] = self._checkpoint("drain", source, service, trial_dir)
                if source.forced_gc is False:
                    state.notes.append(
                        "no pprof endpoint to force a GC at the checkpoints: the heap figures "
                        "include garbage not yet collected (or are /metrics' live-heap estimate)"
                    )
                _, hwm = read_rss(service.pid or 0)
                state.rss_peak = max(state.rss_peak or 0, hwm or 0) or None
                ended = service.exited()
                if isinstance(service, RemoteService):
                    ended = service.still_up(cfg.service.ready_path) or restarted(
                        epoch, source.epoch()
                    )
                if ended is not None:
                    raise _ServiceDied("drain", ended)
            except (_ServiceDied, ProbeError, LoadError, ServiceStartError) as e:
                ended = service.exited()
                if ended is None and isinstance(e, _ServiceDied):
                    ended = e.ended
                # Attached: gone, or just an error? Before the first trial it is not ready yet;
                # after one, a service that stopped answering died under the gate's watch.
                seen_up = phase != "start-up" or state.index > 0
                if ended is None and isinstance(service, RemoteService) and seen_up:
                    ended = service.still_up(cfg.service.ready_path)
                if ended is None:
                    raise
                where = e.phase if isinstance(e, _ServiceDied) else phase
                if phase == "start-up" and not (isinstance(service, RemoteService) and seen_up):
                    # never became ready: an environment problem, not a verdict on the code
                    if isinstance(e, ServiceStartError):
                        raise
                    raise ServiceStartError(
                        f"the service {ended.describe()} during start-up",
                        details=service.log_tail(),
                    ) from None
                state.service = dataclasses.replace(
                    state.service,
                    died=True,
                    exit_code=ended.code,
                    signal=ended.signal,
                    reason=ended.reason,
                    phase=where,
                    log_tail=service.log_tail(),
                )
                say(f"{label}: the service {ended.describe()} during {where}")
                return
        say(f"{label}: done")

    def _trace_plan(self, trial_dir: Path) -> TracePlan | None:
        """While goroutines leak, trace the last seconds of the load for `go tool trace`."""
        duration = self.config.load.duration
        if duration < TRACE_SECONDS + 3:
            return None
        growth = self.config.threshold("goroutine_growth").max
        return TracePlan(
            after=duration - TRACE_SECONDS - 1,
            seconds=TRACE_SECONDS,
            growth=growth if growth is not None else DEFAULT_TRACE_GROWTH,
            dest=trial_dir / "trace-measure.out",
            slack=float(self.config.load.connections),
        )

    def _source(self, service: AnyService) -> RuntimeSource:
        probes = self.config.probes
        base = self.target.probe_url if self.target else service.base_url
        if probes.source == "prometheus":
            return PrometheusSource(base, probes.metrics_path)
        if probes.source == "pprof" or not self.config.service.inject_agent or self.target:
            return PprofSource(base)
        addr = service.agent_address()
        if addr is None:
            ended = service.exited()
            if ended is not None:
                raise _ServiceDied("start-up", ended)
            raise ServiceStartError(
                "leakgate's debug agent did not start in the service (no address written); "
                "set service.inject_agent: false to use the service's own pprof endpoints",
                details=service.log_tail(),
            )
        return AgentSource(addr)

    def _note_runtime(self, source: RuntimeSource) -> None:
        try:
            source.sample()
        except ProbeError:
            return
        info = source.info if isinstance(source, AgentSource) else {}
        gomaxprocs = info.get("gomaxprocs")
        self.environment = dataclasses.replace(
            self.environment,
            gomaxprocs=gomaxprocs if isinstance(gomaxprocs, int) else self.environment.gomaxprocs,
            heap_live_source=str(info.get("heap_live_source") or source.name),
        )

    def _drive(
        self,
        service: AnyService,
        loadgen: Path,
        scenario: Path,
        duration: float,
        rate: float,
        cpus: Sequence[int] | None,
        out: Path,
        name: str,
        label: str,
        sampler: Sampler | None = None,
    ) -> LoadResult:
        cfg = self.config
        proc: LoadProcess | WrkProcess | ExternalProcess
        if cfg.load.tool == "external" and name == "measure":
            # The external tool measures; warm-up and the capacity probe stay leakgate's own.
            proc = ExternalProcess(
                cfg.load.command,
                results=[Path(r) for r in cfg.load.results],
                target=service.base_url,
                duration=duration,
                rate=rate,
                log_path=out.with_suffix(".log"),
                cpus=cpus,
                timeout=cfg.load.timeout,
            )
        else:
            driver = WrkProcess if cfg.load.tool == "wrk" else LoadProcess
            proc = driver(
                loadgen,
                target=service.base_url,
                scenario=scenario,
                connections=cfg.load.connections,
                duration=duration,
                rate=rate,
                timeout=cfg.load.timeout,
                out_path=out,
                cpus=cpus,
            )
        proc.start()
        if sampler is not None:
            sampler.start()
        start = time.monotonic()
        every = PROGRESS_EVERY_TTY if self.reporter.live else PROGRESS_EVERY_LOG
        next_progress = start + every
        try:
            while proc.poll() is None:
                ended = service.exited()
                if ended is not None:
                    raise _ServiceDied(name, ended)
                now = time.monotonic()
                if now - start > proc.deadline:
                    raise LoadError(
                        f"the load generator did not finish within {proc.deadline:.0f}s"
                    )
                if now >= next_progress:
                    line = _progress_line(label, name, now - start, duration, proc.progress)
                    if sampler is not None and sampler.latest is not None:
                        latest = sampler.latest
                        if latest.heap_live is not None:
                            line += f"  heap {format_size(latest.heap_live)}"
                        if latest.goroutines is not None:
                            line += f"  goroutines {latest.goroutines:,.0f}"
                    self.reporter.progress(line)
                    next_progress += every
                time.sleep(0.05)
            ended = service.exited()
            if ended is not None:
                raise _ServiceDied(name, ended)
            return proc.result()
        finally:
            proc.stop()
            self.reporter.progress("")

    def _checkpoint(
        self, label: str, source: RuntimeSource, service: AnyService, trial_dir: Path
    ) -> Checkpoint:
        cfg = self.config
        count, stable = quiet_goroutines(source.goroutines, cfg.probes.quiet_timeout)
        ended = service.exited()
        if ended is not None:
            raise _ServiceDied(label, ended)
        heap = source.checkpoint()
        profiles: dict[str, str | None] = {}
        for key, name, query, filename in (
            ("heap_profile", "heap", "gc=1", f"heap-{label}.pb.gz"),
            ("goroutine_profile", "goroutine", "", f"goroutine-{label}.pb.gz"),
            ("goroutine_text", "goroutine", "debug=1", f"goroutine-{label}.txt"),
        ):
            try:
                path = source.save_profile(name, trial_dir / filename, query)
                profiles[key] = _rel(path, self.report_dir)
            except ProbeError as e:
                profiles[key] = None
                if self.current is not None:
                    # without the URL: its port changes with every trial, the reason does not
                    reason = str(e).replace(source.base_url, "")
                    self.current.notes.append(f"{label}: {name} profile not taken: {reason}")
        leak_profile = None
        if isinstance(source, AgentSource):
            with contextlib.suppress(ProbeError):
                path = source.save_profile(
                    "goroutineleak", trial_dir / f"goroutineleak-{label}.pb.gz"
                )
                leak_profile = _rel(path, self.report_dir)
        sample = None
        with contextlib.suppress(ProbeError):
            sample = source.sample()
        rss, _ = read_rss(service.pid or 0)
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
            source=source.name,
        )


def _series(sampler: Sampler) -> dict[str, Series]:
    return {
        "heap_live": Series("heap_live", "bytes", tuple(sampler.heap)),
        "goroutines": Series("goroutines", "count", tuple(sampler.goroutines)),
        "rss": Series("rss", "bytes", tuple(sampler.rss)),
        "gc_cycles": Series("gc_cycles", "count", tuple(sampler.gc_cycles)),
        "gc_cpu_seconds": Series("gc_cpu_seconds", "seconds", tuple(sampler.gc_cpu)),
        "total_cpu_seconds": Series("total_cpu_seconds", "seconds", tuple(sampler.total_cpu)),
    }


def _progress_line(label: str, phase: str, elapsed: float, total: float, p: dict[str, Any]) -> str:
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


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
