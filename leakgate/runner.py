"""One gate run: build, then for each trial start the service, warm it up, checkpoint, measure
under load with 1 Hz probes, drain, checkpoint, stop. Everything started is stopped on every path.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from leakgate import __version__
from leakgate.build import binary_go_version, build_loadgen, build_service, find_go
from leakgate.config import Config, environ_without_leakgate
from leakgate.environment import describe_environment, recorded_config
from leakgate.errors import LeakgateError, LoadError, ServiceStartError
from leakgate.gitref import remove_stale_worktrees
from leakgate.load.builtin import write_scenario
from leakgate.load.wrk import find_wrk
from leakgate.measure import (
    AnyService,
    LoadInterrupted,
    LoadSetup,
    ServiceDied,
    checkpoint,
    drive,
    rel,
    runtime_source,
    series,
    trace_plan,
)
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
    AGENT_TOKEN_ENV,
    AgentSource,
    ProbeError,
    RuntimeSource,
    Sampler,
    new_agent_token,
    read_rss,
)
from leakgate.procs import build_dir_prefix
from leakgate.remote import RemoteService, Target, restarted
from leakgate.service import Service
from leakgate.stale import clean_stale

PROBE_MIN_SECONDS = 1.0
PROBE_MAX_SECONDS = 3.0
PROGRESS_EVERY_TTY = 1.0
PROGRESS_EVERY_LOG = 5.0
# After a signal in the measure window: the drain checkpoint is taken only if it is quick.
INTERRUPTED_DRAIN_SECONDS = 2.5
INTERRUPTED_QUIET_SECONDS = 1.0


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
    service_cpus: list[int] | None
    load: LoadSetup


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
        self.leftovers: list[str] = []  # what runs killed with SIGKILL left, cleaned up now

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
            config=to_plain(recorded_config(self.config)),  # env values redacted
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
        self.leftovers = [*clean_stale(), *remove_stale_worktrees(self.package_dir)]
        for note in self.leftovers:
            self.reporter.say(note)
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
        every = PROGRESS_EVERY_TTY if self.reporter.live else PROGRESS_EVERY_LOG
        load = LoadSetup(cfg, loadgen, scenario, load_cpus, self.reporter.progress, every)
        self._prepared = _Prepared(binaries, service_cpus, load)
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
            self._run_trial(self.current, side, total, prepared)
            self.trials.append(self.current.freeze(self.offered_rate))
            died = self.current.service.died
            self.current = None
            if died:
                break

    def _run_trial(self, state: _TrialState, side: str, total: int, prepared: _Prepared) -> None:
        cfg = self.config
        service_cpus = prepared.service_cpus
        trial_dir = self.report_dir / f"trial-{state.index + 1}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        if state.index == 0:
            state.notes.extend(self.leftovers)
        env = {**environ_without_leakgate(), **cfg.service.env}
        if cfg.service.inject_agent:
            env[AGENT_TOKEN_ENV] = new_agent_token()  # per process: the agent's probes send it
        service: AnyService
        if self.target is not None:
            service = RemoteService(self.target, trial_dir / "service.log")
            state.notes.append(
                f"attached to {self.target.url}: no local process, so RSS is not measured"
            )
        else:
            service = Service(
                prepared.binaries[side],
                args=(*cfg.service.command[1:], *cfg.service.args),
                env=env,
                cwd=self.sides[side],
                log_path=trial_dir / "service.log",
                cpus=service_cpus,
                gomaxprocs=len(service_cpus) if service_cpus else None,
                agent=cfg.service.inject_agent,
                stop_timeout=cfg.service.stop_timeout,
                notes=state.notes,  # a daemon that escaped its process group, when stopped
            )
        say = self.reporter.say
        label = f"trial {state.index + 1}/{total}"
        if len(self.sides) > 1:
            label += f" ({state.side})"
        phase = "start-up"
        with service:
            service.start()
            state.service = ServiceStatus(
                pid=service.pid, log_file=rel(service.log_path, self.report_dir)
            )
            try:
                took = service.wait_ready(cfg.service.ready_path, cfg.service.ready_timeout)
                probe_url = self.target.probe_url if self.target else None
                source = runtime_source(cfg.probes, cfg.service.inject_agent, service, probe_url)
                pid = f" (pid {service.pid})" if service.pid else " (attached)"
                say(f"{label}: service ready on {service.addr} in {took:.2f}s{pid}")
                self._note_runtime(source)

                def load(
                    duration: float, rate: float, name: str, sampler: Sampler | None = None
                ) -> LoadResult:
                    out = trial_dir / f"load-{name}.json"
                    return drive(prepared.load, service, duration, rate, out, name, label, sampler)

                def take(
                    name: str,
                    quiet_timeout: float = cfg.probes.quiet_timeout,
                    into: Path | None = None,
                    notes: list[str] | None = None,
                ) -> Checkpoint:
                    return checkpoint(
                        name,
                        source,
                        service,
                        trial_dir if into is None else into,
                        self.report_dir,
                        quiet_timeout,
                        state.notes if notes is None else notes,
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
                    try:
                        state.warmup_load = load(warmup, rate, "warmup")
                    except LoadInterrupted as e:
                        state.warmup_load = e.result
                        raise
                phase = "checkpoint after warm-up"
                state.checkpoints["warmup"] = take("warmup")
                epoch = source.epoch() if isinstance(service, RemoteService) else None
                phase = "load"
                # Started by drive() once the generator is running: no thread may be alive
                # while a child is forked (preexec_fn is not safe beside other threads).
                sampler = Sampler(
                    source,
                    service.pid or 0,
                    cfg.probes.interval,
                    trace=trace_plan(cfg, trial_dir),
                )
                t0 = time.monotonic()
                cut: LoadInterrupted | None = None
                try:
                    state.load = load(cfg.load.duration, rate, "measure", sampler)
                except LoadInterrupted as e:
                    cut = e  # judged on what was measured: see _after_interrupt
                    state.load = e.result
                finally:
                    sampler.stop()
                    state.measure_seconds = time.monotonic() - t0
                    state.series = series(sampler)
                    state.rss_peak = sampler.rss_peak
                    if sampler.trace_path is not None:
                        state.trace = rel(sampler.trace_path, self.report_dir)
                    if sampler.errors:
                        state.notes.append(f"{sampler.errors} runtime samples could not be read")
                if cut is not None:
                    state.measure_seconds = cut.elapsed
                    _after_interrupt(state, cut, service, take, trial_dir, self.report_dir)
                    raise cut
                phase = "drain"
                state.checkpoints["drain"] = take("drain")
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
                    raise ServiceDied("drain", ended)
            except (ServiceDied, ProbeError, LoadError, ServiceStartError) as e:
                ended = service.exited()
                if ended is None and isinstance(e, ServiceDied):
                    ended = e.ended
                # Attached: gone, or just an error? Before the first trial it is not ready yet;
                # after one, a service that stopped answering died under the gate's watch.
                seen_up = phase != "start-up" or state.index > 0
                if ended is None and isinstance(service, RemoteService) and seen_up:
                    ended = service.still_up(cfg.service.ready_path)
                if ended is None:
                    raise
                where = e.phase if isinstance(e, ServiceDied) else phase
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


def _after_interrupt(
    state: _TrialState,
    cut: LoadInterrupted,
    service: AnyService,
    take: Callable[[str, float, Path, list[str]], Checkpoint],
    trial_dir: Path,
    report_dir: Path,
) -> None:
    """A signal ended the measure window: note it, and take the drain checkpoint if the
    service is still up and it comes quickly (bounded), so the leak checks judge the window
    that ran. The load result and the series are already kept.

    The checkpoint is taken in a thread with its own notes and its own directory (outside
    the report directory): only when it finished within the bound are its notes merged and
    its profiles moved into trial_dir. A thread that is late writes nothing the reports see,
    and removes its directory when it ends (a run killed first leaves it to the next run's
    cleanup: it is named like a build directory)."""
    where = f"interrupted {cut.elapsed:.1f} s into the measure window"
    if state.load is None:
        state.notes.append(f"{where}: the load generator's result was lost")
        return
    state.notes.append(f"{where}: judged on the {state.load.requests:,} requests measured")
    if service.exited() is not None:
        return
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f"{build_dir_prefix()}drain-"))
    except OSError as e:
        state.notes.append(f"no drain checkpoint after the interrupt (no scratch directory: {e})")
        return
    taken: list[Checkpoint] = []
    problem: list[str] = []
    notes: list[str] = []
    lock = threading.Lock()
    finished = False  # the thread is done (under lock)
    late = False  # the wait gave up on it (under lock): it cleans up after itself

    def drain() -> None:
        nonlocal finished
        try:
            taken.append(take("drain", INTERRUPTED_QUIET_SECONDS, scratch, notes))
        except (ServiceDied, LeakgateError, OSError) as e:
            problem.append(str(e))
        finally:
            with lock:
                finished = True
                abandoned = late
            if abandoned:
                shutil.rmtree(scratch, ignore_errors=True)

    # A thread, so a service that stops answering cannot hold the exit up (probe timeouts
    # are far longer); nothing is forked after an interrupt, so it may outlive the wait.
    thread = threading.Thread(target=drain, name="leakgate-drain", daemon=True)
    thread.start()
    thread.join(INTERRUPTED_DRAIN_SECONDS)
    with lock:
        on_time = finished
        late = not finished
    if not on_time:
        state.notes.append(
            f"no drain checkpoint after the interrupt (not done within "
            f"{INTERRUPTED_DRAIN_SECONDS:g}s; skipped)"
        )
        return
    try:
        if taken:
            state.checkpoints["drain"] = _moved_in(taken[0], scratch, trial_dir, report_dir)
            _, hwm = read_rss(service.pid or 0)
            state.rss_peak = max(state.rss_peak or 0, hwm or 0) or None
            state.notes.extend(notes)
        else:
            why = problem[0] if problem else "no reason given"
            state.notes.append(f"no drain checkpoint after the interrupt ({why})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _moved_in(cp: Checkpoint, scratch: Path, trial_dir: Path, report_dir: Path) -> Checkpoint:
    """`cp` with the profiles it saved under `scratch` moved into trial_dir (and its paths
    following them); a profile that cannot be moved is left out."""

    def move(value: str | None) -> str | None:
        if value is None:
            return None
        src = Path(value)
        if not src.is_absolute():
            src = report_dir / src
        if src.parent.resolve() != scratch.resolve():
            return value  # not one of the scratch directory's
        dest = trial_dir / src.name
        try:
            trial_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(src, dest)
        except OSError:
            return None
        return rel(dest, report_dir)

    return dataclasses.replace(
        cp,
        heap_profile=move(cp.heap_profile),
        goroutine_profile=move(cp.goroutine_profile),
        goroutine_text=move(cp.goroutine_text),
        goroutineleak_profile=move(cp.goroutineleak_profile),
    )
