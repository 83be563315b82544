"""One gate run: build, then for each trial start the service, warm it up, checkpoint, measure
under load with 1 Hz probes, drain, checkpoint, stop. Everything started is stopped on every path.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from leakgate import __version__, analysis, interrupted, pairedrun, procs
from leakgate.build import binary_go_version, build_loadgen, build_service, find_go
from leakgate.config import Config, environ_without_leakgate
from leakgate.environment import describe_environment, recorded_config
from leakgate.errors import LoadError, ServiceStartError
from leakgate.gitref import remove_stale_worktrees
from leakgate.load.builtin import write_scenario
from leakgate.load.wrk import find_wrk
from leakgate.measure import (
    CostMeter,
    LoadInterrupted,
    LoadSetup,
    ServiceDied,
    capacity_probe_seconds,
    checkpoint,
    cpu_profile_plan,
    drive,
    rate_from_capacity,
    rel,
    runtime_source,
    series,
    trace_plan,
)
from leakgate.model import (
    Block,
    Checkpoint,
    Environment,
    LoadResult,
    RunRecord,
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
from leakgate.remote import RemoteService, Target, restarted
from leakgate.service import Service, ServiceUnderTest
from leakgate.stale import clean_stale

PROGRESS_EVERY_TTY = 1.0
PROGRESS_EVERY_LOG = 5.0


@dataclass
class Reporter:
    """How the runner talks to the person watching: a step line, and a live progress line."""

    say: Callable[[str], None] = lambda line: None
    progress: Callable[[str], None] = lambda line: None
    live: bool = False


class _TrialState:
    """A trial while it runs, kept so a trial cut short still reports what it measured: the
    Trial so far (each phase replaces the fields it measured), and the notes and checkpoints,
    which grow in place (the service adds to the notes when it is stopped)."""

    def __init__(self, index: int, side: str = "candidate") -> None:
        self.trial = Trial(index=index, side=side)
        self.notes: list[str] = []
        self.checkpoints: dict[str, Checkpoint] = {}

    def measured_anything(self) -> bool:
        t = self.trial
        return bool(t.warmup_load or t.load or self.checkpoints or t.service.died)

    def freeze(self, offered_rate: float | None) -> Trial:
        return dataclasses.replace(
            self.trial,
            checkpoints=dict(self.checkpoints),
            offered_rate=offered_rate,
            notes=tuple(self.notes),
        )


@dataclass(frozen=True)
class _Prepared:
    """What every trial of a run shares once the builds are done."""

    binaries: dict[str, Path]
    service_cpus: list[int] | None
    load: LoadSetup


@dataclass
class _TrialRun:
    """What one trial's phases share once its service is up: the state they fill in, where
    they write, the service, and where its runtime is read."""

    state: _TrialState
    trial_dir: Path
    label: str
    service: ServiceUnderTest
    source: RuntimeSource
    load_setup: LoadSetup
    report_dir: Path
    quiet_timeout: float
    heap_dump_max: int | None = None  # None: no heap dumps at the checkpoints
    epoch: float | None = None  # the source's epoch after warm-up (see ServiceUnderTest.epoch)

    def load(
        self, duration: float, rate: float, name: str, sampler: Sampler | None = None
    ) -> LoadResult:
        out = self.trial_dir / f"load-{name}.json"
        return drive(self.load_setup, self.service, duration, rate, out, name, self.label, sampler)

    def warm(self, seconds: float, rate: float) -> None:
        """The warm-up load, kept in the trial (what it measured, even when a signal cut it)."""
        try:
            warmed = self.load(seconds, rate, "warmup")
        except LoadInterrupted as e:
            self.state.trial = dataclasses.replace(self.state.trial, warmup_load=e.result)
            raise
        self.state.trial = dataclasses.replace(self.state.trial, warmup_load=warmed)

    def checkpoint(
        self,
        name: str,
        quiet_timeout: float | None = None,
        into: Path | None = None,
        notes: list[str] | None = None,
    ) -> Checkpoint:
        return checkpoint(
            name,
            self.source,
            self.service,
            self.trial_dir if into is None else into,
            self.report_dir,
            self.quiet_timeout if quiet_timeout is None else quiet_timeout,
            self.state.notes if notes is None else notes,
            # Not in a drain after an interrupt (`into` a scratch directory, bounded in time): a
            # dump it gave up on would land in the trial directory after the run moved on.
            self.heap_dump_max if into is None else None,
        )


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
        # compare.design paired: one process a side for the whole run (pairedrun.py)
        self.paired_design = len(self.sides) > 1 and config.compare.design == "paired"
        self.paired: dict[str, _TrialState] = {}
        self.blocks: list[Block] = []
        self.stopped_early = ""  # why a paired compare's blocks stopped before the decision

    # -- the record, complete or partial ---------------------------------------------------

    def record(self, *, interrupted: bool = False, error: str | None = None) -> RunRecord:
        trials = list(self.trials)
        for state in self.paired.values():
            if state.measured_anything():
                trials.append(state.freeze(self.offered_rate))
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
            design="paired" if self.paired_design else "trials",
            blocks=tuple(self.blocks),
            stopped_early=self.stopped_early,
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
        to_build = {} if self.target or binaries else dict(self.sides)
        for side, package_dir in to_build.items():
            say(f"building {side} {package_dir} ({go.version}{agent})")
        # One Go build cache: the sides and the generator build side by side.
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(to_build) + 1, initializer=procs.block_stop_signals
        ) as pool:
            builds = {
                side: pool.submit(
                    build_service,
                    package_dir,
                    cfg.service.build_flags,
                    cfg.service.inject_agent,
                    go,
                )
                for side, package_dir in to_build.items()
            }
            loadgen_build = None if cfg.load.tool == "wrk" else pool.submit(build_loadgen, go)
            try:
                binaries.update((side, future.result()) for side, future in builds.items())
                loadgen = Path(find_wrk()) if loadgen_build is None else loadgen_build.result()
            except BaseException:
                _stop_builds(pool, [*builds.values(), *([loadgen_build] if loadgen_build else [])])
                raise
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
        if self.paired_design:
            self.paired = {
                side: _TrialState(index=i, side=side) for i, side in enumerate(pairedrun.SIDES)
            }
            pairedrun.PairedRun(self, self._prepared).run()
        else:
            self._run_rounds(cfg.trials or 1, self.seed)
        return self.record()

    def run_more(self, rounds: int) -> RunRecord:
        """`confirm`: more trials of every side with the same binaries and offered rate."""
        if self._prepared is None or rounds <= 0 or self.paired_design:
            return self.record()  # a paired compare settles itself (sequential.py)
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
            self._run_trial(self.current, total, prepared)
            self.trials.append(self.current.freeze(self.offered_rate))
            died = self.current.trial.service.died
            self.current = None
            if died:
                break

    # -- one trial: start-up, then its phases in order, then stop ------------------------------

    def _run_trial(self, state: _TrialState, total: int, prepared: _Prepared) -> None:
        trial_dir = self.report_dir / f"trial-{state.trial.index + 1}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        if state.trial.index == 0:
            state.notes.extend(self.leftovers)
        service = self._service(state, trial_dir, prepared)
        label = f"trial {state.trial.index + 1}/{total}"
        if len(self.sides) > 1:
            label += f" ({state.trial.side})"
        phase = "start-up"
        with service:
            service.start()
            status = ServiceStatus(pid=service.pid, log_file=rel(service.log_path, self.report_dir))
            state.trial = dataclasses.replace(state.trial, service=status)
            try:
                trial = self._start_up(state, service, trial_dir, label, prepared.load)
                for name, step in (
                    ("warm-up", self._warm_up),
                    ("checkpoint after warm-up", self._checkpoint_after_warm_up),
                    ("load", self._measure),
                    ("drain", self._drain),
                ):
                    phase = name  # _note_died names it if the step fails
                    step(trial)
            except (ServiceDied, ProbeError, LoadError, ServiceStartError) as e:
                self._note_died(e, phase, state, service, label)
                return
        self.reporter.say(f"{label}: done")

    def _service(
        self, state: _TrialState, trial_dir: Path, prepared: _Prepared
    ) -> ServiceUnderTest:
        cfg = self.config
        log_path = trial_dir / "service.log"
        if self.target is not None:
            state.notes.append(
                f"attached to {self.target.url}: no local process, so RSS is not measured; "
                "cost per request counts every request the process served in the window, "
                "leakgate's and any others"
            )
            return RemoteService(self.target, log_path)
        env = {**environ_without_leakgate(), **cfg.service.env}
        if cfg.service.inject_agent:
            env[AGENT_TOKEN_ENV] = new_agent_token()  # per process: the agent's probes send it
        cpus = prepared.service_cpus
        return Service(
            prepared.binaries[state.trial.side],
            args=(*cfg.service.command[1:], *cfg.service.args),
            env=env,
            cwd=self.sides[state.trial.side],
            log_path=log_path,
            cpus=cpus,
            gomaxprocs=len(cpus) if cpus else None,
            agent=cfg.service.inject_agent,
            stop_timeout=cfg.service.stop_timeout,
            notes=state.notes,  # a daemon that escaped its process group, when stopped
        )

    def _start_up(
        self,
        state: _TrialState,
        service: ServiceUnderTest,
        trial_dir: Path,
        label: str,
        load_setup: LoadSetup,
    ) -> _TrialRun:
        """Wait until the service is ready and find where its runtime is read."""
        cfg = self.config
        took = service.wait_ready(cfg.service.ready_path, cfg.service.ready_timeout)
        probe_url = self.target.probe_url if self.target else None
        source = runtime_source(cfg.probes, cfg.service.inject_agent, service, probe_url)
        pid = f" (pid {service.pid})" if service.pid else " (attached)"
        self.reporter.say(f"{label}: service ready on {service.addr} in {took:.2f}s{pid}")
        self._note_runtime(source)
        return _TrialRun(
            state=state,
            trial_dir=trial_dir,
            label=label,
            service=service,
            source=source,
            load_setup=load_setup,
            report_dir=self.report_dir,
            quiet_timeout=cfg.probes.quiet_timeout,
            heap_dump_max=cfg.probes.heap_dump_max if cfg.probes.heap_dump else None,
        )

    def _warm_up(self, t: _TrialRun) -> None:
        """Load at the offered rate until warm; with rate: auto, the run's first trial measures
        the capacity first (closed loop) and offers a share of it from then on."""
        load = self.config.load
        warmup = load.warmup
        if load.rate == "auto" and self.offered_rate is None:
            probe = capacity_probe_seconds(warmup)
            capacity = t.load(probe, 0.0, "capacity").achieved_rate
            self.offered_rate = rate_from_capacity(capacity, load.rate_share)
            warmup = max(0.0, warmup - probe)
            self.reporter.say(
                f"{t.label}: capacity {capacity:,.0f} req/s closed-loop; offering "
                f"{self.offered_rate:,.0f} req/s ({load.rate_share:.0%})"
            )
        if warmup > 0:
            t.warm(warmup, self.offered_rate or 0.0)

    def _checkpoint_after_warm_up(self, t: _TrialRun) -> None:
        t.state.checkpoints["warmup"] = t.checkpoint("warmup")
        t.epoch = t.service.epoch(t.source)

    def _measure(self, t: _TrialRun) -> None:
        """The measure window: load at the offered rate, the runtime sampled at 1 Hz. A signal
        ends it early, and the trial is judged on what was measured (see _after_interrupt)."""
        cfg = self.config
        # Started by drive() once the generator is running: no thread may be alive
        # while a child is forked (preexec_fn is not safe beside other threads).
        sampler = Sampler(
            t.source,
            t.service.pid or 0,
            cfg.probes.interval,
            trace=trace_plan(cfg, t.trial_dir),
            cpu_profile=cpu_profile_plan(cfg, t.trial_dir),
        )
        # What the window's requests cost: cumulative counters read right before the load
        # starts and right after it ends (the checkpoints' forced GCs fall outside).
        meter = CostMeter(t.source, t.service.pid)
        start = meter.read()
        t0 = time.monotonic()
        cut: LoadInterrupted | None = None
        try:
            measured = t.load(cfg.load.duration, self.offered_rate or 0.0, "measure", sampler)
            t.state.trial = dataclasses.replace(t.state.trial, load=measured)
        except LoadInterrupted as e:
            cut = e
            t.state.trial = dataclasses.replace(t.state.trial, load=e.result)
        finally:
            end = meter.read() if t.service.exited() is None else None
            elapsed = time.monotonic() - t0
            sampler.stop(cut=cut is not None)
            trace, profile = sampler.trace_path, sampler.cpu_profile_path
            t.state.trial = dataclasses.replace(
                t.state.trial,
                measure_seconds=elapsed,
                series=series(sampler),
                rss_peak=sampler.rss_peak,
                trace=rel(trace, self.report_dir) if trace is not None else None,
                cost=meter.window(start, end, elapsed) if end is not None else None,
                cpu_profile=rel(profile, self.report_dir) if profile is not None else None,
            )
            if sampler.errors:
                t.state.notes.append(f"{sampler.errors} runtime samples could not be read")
            if sampler.cpu_profile_error:
                t.state.notes.append(f"no CPU profile of the window: {sampler.cpu_profile_error}")
            if note := analysis.coarse_cpu_note(t.state.trial):
                t.state.notes.append(note)
        if cut is not None:
            t.state.trial = dataclasses.replace(t.state.trial, measure_seconds=cut.elapsed)
            _after_interrupt(t.state, cut, t.service, t.checkpoint, t.trial_dir, self.report_dir)
            raise cut

    def _drain(self, t: _TrialRun) -> None:
        """The load stopped: the drain checkpoint, the peak RSS, and whether the service stayed
        up (attached: still answering, and not restarted since the warm-up checkpoint)."""
        t.state.checkpoints["drain"] = t.checkpoint("drain")
        if t.source.forced_gc is False:
            t.state.notes.append(
                "no pprof endpoint to force a GC at the checkpoints: the heap figures "
                "include garbage not yet collected (or are /metrics' live-heap estimate)"
            )
        rss_peak = _peak_rss(t.state.trial.rss_peak, t.service.pid)
        t.state.trial = dataclasses.replace(t.state.trial, rss_peak=rss_peak)
        ready_path = self.config.service.ready_path
        ended = t.service.still_up(ready_path) or restarted(t.epoch, t.service.epoch(t.source))
        if ended is not None:
            raise ServiceDied("drain", ended)

    def _note_died(
        self,
        e: ServiceDied | ProbeError | LoadError | ServiceStartError,
        phase: str,
        state: _TrialState,
        service: ServiceUnderTest,
        label: str,
    ) -> None:
        """`e` stopped the trial in `phase`. When the service ended, the trial records that it
        died (a result: the gate fails); if it never became ready, that is ServiceStartError (an
        environment problem, not a verdict on the code). When it did not end, `e` is raised."""
        # Attached, the one service outlives trials: seen up (past start-up, or in an earlier
        # trial), one that stopped answering died under the gate's watch.
        seen_up = service.attached and (phase != "start-up" or state.trial.index > 0)
        ended = service.exited() or (e.ended if isinstance(e, ServiceDied) else None)
        if ended is None and seen_up:
            ended = service.still_up(self.config.service.ready_path)
        if ended is None:
            raise e
        if phase == "start-up" and not seen_up:
            if isinstance(e, ServiceStartError):
                raise e
            raise ServiceStartError(
                f"the service {ended.describe()} during start-up", details=service.log_tail()
            ) from None
        where = e.phase if isinstance(e, ServiceDied) else phase
        died = dataclasses.replace(
            state.trial.service,
            died=True,
            exit_code=ended.code,
            signal=ended.signal,
            reason=ended.reason,
            phase=where,
            log_tail=service.log_tail(),
        )
        state.trial = dataclasses.replace(state.trial, service=died)
        self.reporter.say(f"{label}: the service {ended.describe()} during {where}")

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


def _peak_rss(peak: int | None, pid: int | None) -> int | None:
    """The larger of `peak` and the process's VmHWM now (None when neither is known)."""
    _, hwm = read_rss(pid or 0)
    return max(peak or 0, hwm or 0) or None


def _after_interrupt(
    state: _TrialState,
    cut: LoadInterrupted,
    service: ServiceUnderTest,
    take: interrupted.Take,
    trial_dir: Path,
    report_dir: Path,
) -> None:
    """A signal ended the measure window: note it, and take the drain checkpoint if the
    service is still up and it comes quickly (bounded), so the leak checks judge the window
    that ran. The load result and the series are already kept."""
    where = f"interrupted {cut.elapsed:.1f} s into the measure window"
    load = state.trial.load
    if load is None:
        state.notes.append(f"{where}: the load generator's result was lost")
        return
    state.notes.append(f"{where}: judged on the {load.requests:,} requests measured")
    if service.exited() is not None:
        return
    drained = interrupted.drain_in_time(take, trial_dir, report_dir)
    if isinstance(drained, str):
        state.notes.append(f"no drain checkpoint after the interrupt ({drained})")
        return
    taken, notes = drained
    state.checkpoints["drain"] = taken
    state.trial = dataclasses.replace(
        state.trial, rss_peak=_peak_rss(state.trial.rss_peak, service.pid)
    )
    state.notes.extend(notes)


# How long a stopped run waits for its build threads to see their compilers killed.
STOP_BUILDS_SECONDS = 10.0


def _stop_builds(
    pool: concurrent.futures.ThreadPoolExecutor, futures: list[concurrent.futures.Future[Path]]
) -> None:
    """A run stopped while building (Ctrl-C, SIGTERM, one side's build failing) does not wait
    for the other builds: builds not started are cancelled, and the compilers of those running
    are killed until every build thread has ended (a build may start its next go command after
    one kill), at most STOP_BUILDS_SECONDS."""
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_BUILDS_SECONDS
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        procs.kill_all()
        concurrent.futures.wait(futures, timeout=0.2)
