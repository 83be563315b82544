"""check, compare and baseline record: refuse bad input, measure, judge, report, save.

One run in steps, each a function below: `_plan` (config, package, baseline, target and the
report paths: exit 4 before anything starts), `_claim_outputs` (nothing written over an input
or another report; the report directory claimed and cleared), `_measure` (the Runner under
leakgate's signal handling, a confirmation round when a comparison is inconclusive),
`_verdict` (judged, with leak sites; a bug in judging still reports what was measured) and
`_finish` (every report, the baseline, the exit code).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from leakgate import analysis, costsites, leaksites, sequential
from leakgate.baseline import load_baseline, save_baseline
from leakgate.build import check_main_package, module_root
from leakgate.commands import options
from leakgate.config import Config, quick
from leakgate.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    ConfigError,
    EnvironmentProblem,
    Interrupted,
    LeakgateError,
    UsageError,
)
from leakgate.gitref import resolve as resolve_ref
from leakgate.gitref import worktree
from leakgate.judge import exit_code, inconclusive_metrics, judge, merge_confirmation
from leakgate.model import RunRecord, Verdict
from leakgate.procs import kill_all
from leakgate.remote import Target, parse_target
from leakgate.report import Judged, RunError, clear_previous, console, write_reports
from leakgate.runner import Reporter, Runner


class Signals:
    """First SIGINT/SIGTERM: stop gracefully (exit 2, reports written). A second SIGINT: kill
    everything and exit at once. A SIGTERM after the SIGINT (how CI cancels a job): kill
    everything, then still write the reports; a third signal exits at once."""

    def __init__(self) -> None:
        self.count = 0
        self.reporting = False  # once judging has begun, let the reports finish

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count > 1:
            kill_all()
            if signum == signal.SIGINT or self.count > 2:
                os._exit(EXIT_INTERRUPTED)
            # CI cancels with SIGINT then SIGTERM a few seconds later: everything leakgate
            # started is dead now, and the reports of what was measured still get written.
            print(f"\nleakgate: {name}: children killed; writing reports", file=sys.stderr)
            return
        if self.reporting:
            print(f"\nleakgate: {name}: writing reports (send again to stop now)", file=sys.stderr)
            return
        print(f"\nleakgate: {name}: stopping (send again to kill at once)", file=sys.stderr)
        raise Interrupted(f"interrupted by {name}")

    def install(self) -> None:
        signal.signal(signal.SIGINT, self)
        signal.signal(signal.SIGTERM, self)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one run will do, settled before anything starts."""

    command: str  # "check", "compare", "baseline record"
    cfg: Config
    package: Path
    baseline: RunRecord | None
    target: Target | None
    report_dir: Path
    junit_path: Path
    json_path: Path


@dataclass(frozen=True, slots=True)
class _Measured:
    record: RunRecord
    error: LeakgateError | None
    unconfirmed: Verdict | None  # the first verdict, when a confirmation round followed


def run(args: argparse.Namespace) -> int:
    """check, compare or baseline record, from the parsed command line; the exit code."""
    plan = _plan(args)
    _claim_outputs(plan, args)
    measured = _measure(plan, args)
    error = measured.error
    if isinstance(error, UsageError):  # input that only the build or the worktree looks at
        if not measured.record.trials:
            print_error(error)  # nothing was judged: refused like the others, no reports
            return error.exit_code
        error = LeakgateError(f"{error.kind} found after trials ran: {error.message}")
    verdict, error = _verdict(plan, measured, error)
    record = leaksites.drop_dumps(measured.record, plan.report_dir, verdict)
    return _finish(plan, args, record, verdict, error)


def _plan(args: argparse.Namespace) -> _Plan:
    cfg, package = options.load(args)
    command = "baseline record" if args.command == "baseline" else args.command
    baseline = None
    if getattr(args, "quick", False):
        if args.baseline or args.trials:
            raise UsageError("--quick runs one short trial; it takes no --baseline or --trials")
        cfg = quick(cfg)
    target = None
    if getattr(args, "target", None):
        target = parse_target(args.target, args.probe_url)
        if cfg.probes.source == "agent":
            raise UsageError("--target attaches to a running service: no agent can be injected")
    elif getattr(args, "probe_url", None):
        raise UsageError("--probe-url goes with --target")
    if not (target or cfg.service.prebuilt):
        check_main_package(package)  # a library as DIR: exit 4 before anything is built
        module_root(package)  # no go.mod: exit 4 before anything is built or written
    if command == "check" and args.baseline:
        baseline = load_baseline(Path(args.baseline))  # refused before anything starts
    against_baseline = baseline is not None or command in ("compare", "baseline record")
    configured_trials = cfg.trials
    cfg = dataclasses.replace(cfg, trials=cfg.trial_count(against_baseline))
    report_dir = Path(cfg.report_dir)
    if command == "compare":
        if cfg.service.prebuilt:
            raise UsageError("compare builds both sides: it cannot use service.binary/command")
        resolve_ref(package, args.base)  # a REF that does not exist is a usage error: exit 4
        if cfg.compare.design == "paired":
            if args.trials:
                raise UsageError(
                    "--trials sets fresh processes a side: it goes with --design trials "
                    "(a paired compare runs pairs of blocks until it is decided)"
                )
            if cfg.load.tool == "external":
                raise UsageError(
                    "load.tool external runs one measure window: a paired compare needs "
                    "leakgate's generator or wrk (or --design trials)"
                )
            _note_unused_trial_keys(cfg, configured_trials)
            _check_paired_plan(cfg)
    return _Plan(
        command=command,
        cfg=cfg,
        package=package,
        baseline=baseline,
        target=target,
        report_dir=report_dir,
        junit_path=Path(args.junit) if args.junit else report_dir / "junit.xml",
        json_path=Path(args.json) if args.json else report_dir / "run.json",
    )


def _note_unused_trial_keys(cfg: Config, trials: int | None) -> None:
    """`trials:` and `confirm:` in the config shape check --baseline, baseline record and a
    compare of design trials; a paired compare does not use them, and says so rather than
    leaving the user to believe they took effect."""
    unused = [f"trials: {trials}"] if trials is not None else []
    unused += [f"confirm: {cfg.confirm}"] if cfg.confirm else []
    if unused:
        where = f"{cfg.source}: " if cfg.source else ""
        print(
            f"leakgate: note: {where}{' and '.join(unused)} not used by a paired compare, which "
            f"runs pairs of blocks until decided (compare.min_pairs {cfg.compare.min_pairs}, "
            f"max_pairs {cfg.compare.max_pairs}); compare.design: trials uses them",
            file=sys.stderr,
        )


def _check_paired_plan(cfg: Config) -> None:
    """A paired compare whose looks could never fail a gated metric is refused: it would pass
    or end `~` whatever the change."""
    gated = [
        name
        for name, t in cfg.thresholds.items()
        if t.max_increase is not None and name in sequential.BLOCK_METRICS
    ]
    c = cfg.compare
    if gated and not sequential.can_fail(sequential.plan_of(c), len(gated)):
        where = f"{cfg.source}: " if cfg.source else ""
        raise ConfigError(
            f"{where}compare.max_pairs: {c.max_pairs} pairs (first look after {c.min_pairs}, "
            f"then every {c.look_every}) can never fail any of the {len(gated)} gated metrics "
            f"({', '.join(gated)}): an exact test of n pairs reaches p = 2^-n at best, and "
            "each look gets only part of alpha = 0.05; raise compare.min_pairs or max_pairs"
        )


def _claim_outputs(plan: _Plan, args: argparse.Namespace) -> None:
    places = options.run_outputs(args, plan.cfg, plan.report_dir)
    places.check()  # nothing written over an input or another report; all writable
    places.claim()
    # From here on the run writes reports; what an earlier run left must not pass for them.
    keep = [Path(p) for p in (getattr(args, "baseline", None), getattr(args, "output", None)) if p]
    previous = [
        plan.junit_path,
        plan.json_path,
        *([Path(args.openmetrics)] if args.openmetrics else []),
    ]
    clear_previous(plan.report_dir, previous, keep=keep)


def _reporter() -> Reporter:
    live = sys.stderr.isatty()

    def progress(line: str) -> None:
        if live:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif line:
            print("  " + line, file=sys.stderr, flush=True)

    return Reporter(
        say=lambda line: print(line, file=sys.stderr, flush=True), progress=progress, live=live
    )


def _measure(plan: _Plan, args: argparse.Namespace) -> _Measured:
    """The trials, under leakgate's signal handling; whatever stops them, what was measured
    is kept (interrupted, or with the error that stopped it)."""
    cfg, reporter = plan.cfg, _reporter()
    atexit.register(kill_all)
    signals = Signals()
    signals.install()
    with contextlib.ExitStack() as stack:
        base_rate = None
        if plan.baseline is not None and cfg.load.rate == "auto":
            base_rate = analysis.offered_rate(analysis.baseline_trials(plan.baseline))
        runner = Runner(
            cfg,
            plan.package,
            plan.report_dir,
            reporter,
            command=plan.command,
            offered_rate=base_rate,
            target=plan.target,
        )
        error: LeakgateError | None = None
        unconfirmed: Verdict | None = None
        try:
            if plan.command == "compare":
                base_dir, commit = stack.enter_context(worktree(plan.package, args.base))
                runner = Runner(
                    cfg,
                    plan.package,
                    plan.report_dir,
                    reporter,
                    base_dir=base_dir,
                    base_revision=commit,
                    command=plan.command,
                )
            record = runner.run()
            first = judge(record, cfg, plan.baseline)
            confirmable = plan.command != "baseline record" and not runner.paired_design
            if cfg.confirm and confirmable and inconclusive_metrics(first):
                record = runner.run_more(cfg.confirm)
                unconfirmed = first
        except Interrupted:
            record = runner.record(interrupted=True)
        except LeakgateError as e:
            error = e
            record = runner.record(error=f"{e.kind}: {e.message}")
        except Exception as e:  # a bug in leakgate: still report what was measured
            error = LeakgateError(f"{type(e).__name__}: {e}", details=traceback.format_exc())
            record = runner.record(error=f"internal error: {e!r}")
        finally:
            signals.reporting = True
            kill_all()
    return _Measured(record, error, unconfirmed)


def _verdict(
    plan: _Plan, measured: _Measured, error: LeakgateError | None
) -> tuple[Verdict, LeakgateError | None]:
    """The run judged, leak sites included; a bug in judging is an error beside a verdict
    that says so, and the measurements are still written."""
    record = measured.record
    try:
        sites = leaksites.find_or_note(record, plan.report_dir)
        costs = costsites.find_or_note(record, plan.report_dir)
        verdict = judge(record, plan.cfg, plan.baseline, sites, costs)
        if measured.unconfirmed is not None:
            verdict = merge_confirmation(measured.unconfirmed, verdict)
    except Exception as e:
        verdict = Verdict(status="error", notes=(f"judging failed: {type(e).__name__}: {e}",))
        error = error or LeakgateError(
            f"judging failed: {type(e).__name__}: {e}", details=traceback.format_exc()
        )
    return verdict, error


def _finish(
    plan: _Plan,
    args: argparse.Namespace,
    record: RunRecord,
    verdict: Verdict,
    error: LeakgateError | None,
) -> int:
    """Every report, then the baseline (baseline record), then the exit code."""
    run_error = RunError(error.kind, error.message, error.details) if error else None
    judged = Judged(verdict, record, plan.baseline, run_error)
    written, problems = write_reports(
        judged,
        plan.report_dir,
        junit_path=plan.junit_path,
        json_path=plan.json_path,
        openmetrics=args.openmetrics,
    )
    if plan.command == "baseline record" and error is None and not record.interrupted:
        try:
            save_baseline(record, Path(args.output))
            written.append(Path(args.output))
        except LeakgateError as e:  # learned from the run, whose reports are written: not exit 4
            error = EnvironmentProblem(e.message) if isinstance(e, UsageError) else e
    if error is None or verdict.checks:
        sys.stdout.write(console.render(dataclasses.replace(judged, written=tuple(written))))
    else:
        print("reports: " + ", ".join(map(str, written)))
    for problem in problems:
        print(f"leakgate: could not write a report: {problem}", file=sys.stderr)
    if error is not None:
        print_error(error)
        return error.exit_code
    if problems:
        return EXIT_INTERNAL
    if plan.command == "baseline record":
        # The baseline is recorded whatever it shows; a leak in it is reported, not gated.
        return EXIT_INTERRUPTED if record.interrupted else 0
    return exit_code(verdict)


def print_error(e: LeakgateError) -> None:
    """`leakgate: <kind>: <message>` on stderr, the details indented below it."""
    print(f"leakgate: {e.kind}: {e.message}", file=sys.stderr)
    if e.details:
        print("\n".join("  | " + line for line in e.details.splitlines()), file=sys.stderr)
