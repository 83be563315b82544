"""Command line: argparse commands and the one place where errors become exit codes."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

from leakgate import __version__, leaksites, outputs
from leakgate.analysis import baseline_trials
from leakgate.baseline import load_baseline, load_run, save_baseline
from leakgate.build import check_main_package, module_root
from leakgate.config import Config, apply_overrides, find_config, load_config, quick
from leakgate.environment import redacted_config
from leakgate.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EnvironmentProblem,
    Interrupted,
    LeakgateError,
    UsageError,
)
from leakgate.gitref import resolve as resolve_ref
from leakgate.gitref import worktree
from leakgate.judge import exit_code, inconclusive_metrics, judge, merge_confirmation
from leakgate.model import LeakSites, RunRecord, Verdict, from_plain
from leakgate.procs import kill_all
from leakgate.remote import parse_target
from leakgate.report import Render, clear_previous, console, html, junit, markdown, write_all
from leakgate.report import openmetrics as om
from leakgate.runner import Reporter, Runner


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _run_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that runs the service shares."""
    parser.add_argument(
        "dir", nargs="?", help="Go main package to build (default: service.dir or .)"
    )
    parser.add_argument(
        "--config", help="config file (default: DIR/leakgate.yml, then ./leakgate.yml)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for the service (repeatable); values are <redacted> in "
        "run.json, the baseline and every report",
    )
    parser.add_argument(
        "--keep-env-values",
        action="store_true",
        help="write --env and service.env values into run.json and the reports as they are "
        "(default: redacted, names kept)",
    )
    parser.add_argument("--duration", help="measure window, e.g. 20s")
    parser.add_argument("--warmup", help="warm-up before the first checkpoint, e.g. 5s")
    parser.add_argument(
        "--trials",
        type=int,
        help="fresh service processes per side (default 1; 5 against a baseline)",
    )
    parser.add_argument(
        "--load-results",
        action="append",
        default=[],
        metavar="FILE",
        help="with load.tool external: a result file load.command writes (repeatable: one per "
        "load host); vegeta JSON lines or a leakgate/wrk result",
    )
    parser.add_argument("--out", help="report directory (default: report.dir or .leakgate)")
    parser.add_argument("--junit", help="JUnit XML path (default: OUT/junit.xml)")
    parser.add_argument("--json", help="RunRecord JSON path (default: OUT/run.json)")
    parser.add_argument(
        "--openmetrics",
        metavar="FILE",
        help="also write every judged metric and the verdict as OpenMetrics text",
    )


def _attach_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        metavar="URL",
        help="attach to a service already running there: build and start nothing, load and "
        "probe it over HTTP (DIR is not used)",
    )
    parser.add_argument(
        "--probe-url",
        metavar="URL",
        help="with --target: where its pprof/expvar or /metrics answer (default: the target)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="leakgate",
        description="A release gate for Go HTTP services: builds the service, loads it, watches "
        "its runtime and fails on leaks, breached limits and regressions against a baseline.",
    )
    parser.add_argument("--version", action="version", version=f"leakgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = sub.add_parser(
        "check",
        help="build, load and judge a Go service; exit 1 on a leak, a breached limit "
        "or a regression against --baseline",
    )
    _run_options(check)
    check.add_argument(
        "--baseline",
        metavar="FILE",
        help="a RunRecord saved by `leakgate baseline record` to compare against",
    )
    _attach_options(check)
    check.add_argument(
        "--quick",
        action="store_true",
        help="one short trial, leak checks only (for a pre-push hook; under a minute)",
    )
    baseline = sub.add_parser("baseline", help="record a baseline to compare later runs against")
    baseline_sub = baseline.add_subparsers(
        dest="baseline_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    record = baseline_sub.add_parser("record", help="run trials and store them as the baseline")
    _run_options(record)
    _attach_options(record)
    record.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="FILE",
        help="where to write the baseline (atomically)",
    )
    compare = sub.add_parser(
        "compare",
        help="build --base REF and the working tree, run their trials interleaved, "
        "judge the change",
    )
    _run_options(compare)
    compare.add_argument(
        "--base",
        required=True,
        metavar="GIT_REF",
        help="the commit to compare against (e.g. origin/main)",
    )
    report = sub.add_parser(
        "report",
        help="judge a saved run.json again and regenerate every report from it",
    )
    report.add_argument("run", metavar="RUN.json", help="a run.json written by check or compare")
    report.add_argument(
        "--baseline", metavar="FILE", help="the stored baseline the run was checked against"
    )
    report.add_argument(
        "--out", help="where to write the reports (default: the directory of RUN.json)"
    )
    report.add_argument(
        "--openmetrics", metavar="FILE", help="also write the judged metrics as OpenMetrics text"
    )
    report.add_argument(
        "--keep-env-values",
        action="store_true",
        help="show the service's environment values the run.json holds (default: redacted, "
        "also for a run.json written before leakgate redacted them or with --keep-env-values)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in ("check", "compare", "baseline"):
            return _run(args)
        if args.command == "report":
            return _report(args)
        build_parser().print_help(sys.stderr)  # no command: a usage error like any other
        return EXIT_USAGE
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except LeakgateError as e:
        _print_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `leakgate check | head`: the reports are already written
        return EXIT_INTERNAL
    except Exception:  # a bug in leakgate: say so with exit 3, never as a gate verdict
        traceback.print_exc()
        print("leakgate: internal error (a bug in leakgate; please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def main_entry() -> NoReturn:
    raise SystemExit(main())


def _print_error(e: LeakgateError) -> None:
    print(f"leakgate: {e.kind}: {e.message}", file=sys.stderr)
    if e.details:
        print(_indent(e.details), file=sys.stderr)


def _indent(text: str, prefix: str = "  | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """--env NAME=VALUE: the name ends at the first '=' (A=B=C is A, "B=C")."""
    from leakgate.config import env_problem
    from leakgate.yamlnodes import printable

    env = {}
    for pair in pairs:  # a message names the variable, never its value (often a secret)
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(
                "--env: expected NAME=VALUE, got an argument without '=' (not shown: it may be "
                "a secret)"
            )
        if not name:
            raise UsageError("--env =...: expected NAME=VALUE, the name before '=' is empty")
        problem = env_problem(name, value)
        if problem is not None:
            raise UsageError(f"--env {printable(name, quote=True)}: {problem}")
        env[name] = value
    return env


def _load(args: argparse.Namespace) -> tuple[Config, Path]:
    config_path = find_config(args.config, args.dir)
    cfg = load_config(config_path)
    if args.trials is not None and not 1 <= args.trials <= 100:
        raise UsageError(f"--trials must be between 1 and 100, got {args.trials}")
    from leakgate.config import flag_duration  # checked like load.duration, 24 h cap included

    duration = flag_duration("--duration", "duration", args.duration)
    warmup = flag_duration("--warmup", "warmup", args.warmup)
    if args.load_results:
        if cfg.load.tool != "external":
            raise UsageError("--load-results goes with load.tool: external and a load.command")
        cfg = dataclasses.replace(
            cfg, load=dataclasses.replace(cfg.load, results=tuple(args.load_results))
        )
    if cfg.load.tool == "external" and not cfg.load.results:
        raise UsageError("load.tool external reads its results: give --load-results FILE")
    cfg = apply_overrides(
        cfg,
        duration=duration,
        warmup=warmup,
        trials=args.trials,
        env=_parse_env(args.env),
        report_dir=args.out,
    )
    if args.keep_env_values:
        cfg = dataclasses.replace(cfg, keep_env_values=True)
    if not getattr(args, "target", None):  # attached, nothing is run here
        cfg = _resolve_prebuilt(cfg, config_path)
    if getattr(args, "target", None) or cfg.service.prebuilt:
        package = Path(".")  # attach mode and prebuilt binaries build nothing
    elif args.dir:
        package = Path(args.dir)
    elif config_path is not None and cfg.service.dir:
        package = config_path.parent / cfg.service.dir
    else:
        package = Path(".")
    if not package.is_dir():
        raise UsageError(f"{package}: no such directory (the Go main package to build)")
    return cfg, package.resolve()


def _resolve_prebuilt(cfg: Config, config_path: Path | None) -> Config:
    """service.binary / service.command made absolute (relative paths are the config file's
    directory's; a bare command name is looked up on PATH) and checked to be runnable."""
    service = cfg.service
    if not service.prebuilt:
        return cfg
    base = config_path.parent if config_path is not None else Path(".")
    key = "service.binary" if service.binary is not None else "service.command"
    name = service.binary if service.binary is not None else service.command[0]
    if "/" not in name and service.binary is None:
        found = shutil.which(name)
        if found is None:
            raise UsageError(f"{key}: {name!r} is not on PATH")
        program = Path(found)
    else:
        program = (base / name).resolve()
    if not (program.is_file() and os.access(program, os.X_OK)):
        raise UsageError(f"{key}: {program} is not an executable file")
    if service.binary is not None:
        service = dataclasses.replace(service, binary=str(program))
    else:
        service = dataclasses.replace(service, command=(str(program), *service.command[1:]))
    return dataclasses.replace(cfg, service=service)


def _run_outputs(args: argparse.Namespace, cfg: Config, report_dir: Path) -> outputs.Outputs:
    """What a run reads and writes, as the user named them."""
    config = find_config(args.config, args.dir)
    service = cfg.service
    program = service.binary or (service.command[0] if service.command else None)
    results = "--load-results" if args.load_results else "load.results"
    read = outputs.inputs(
        ("--config" if args.config else "config", config, "the config file"),
        ("--baseline", getattr(args, "baseline", None), "the baseline"),
        ("service.binary" if service.binary else "service.command", program, "the program"),
    )
    # Deleted before each trial (a stale result must not pass for this trial's), so they are
    # checked like reports: none may be an input or a report.
    deleted = outputs.inputs(*((results, path, "a load result") for path in cfg.load.results))
    given = {"--junit": args.junit, "--json": args.json, "--openmetrics": args.openmetrics}
    given["-o"] = getattr(args, "output", None)
    where = outputs.Place("--out" if args.out else "report.dir", report_dir)
    return outputs.run_outputs(where, given, read, deleted)


class _Signals:
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


def _run(args: argparse.Namespace) -> int:
    cfg, package = _load(args)
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
    cfg = dataclasses.replace(cfg, trials=cfg.trial_count(against_baseline))
    report_dir = Path(cfg.report_dir)
    junit_path = Path(args.junit) if args.junit else report_dir / "junit.xml"
    json_path = Path(args.json) if args.json else report_dir / "run.json"
    if command == "compare":
        if cfg.service.prebuilt:
            raise UsageError("compare builds both sides: it cannot use service.binary/command")
        resolve_ref(package, args.base)  # a REF that does not exist is a usage error: exit 4
    places = _run_outputs(args, cfg, report_dir)
    places.check()  # nothing written over an input or another report; all writable
    places.claim()
    # From here on the run writes reports; what an earlier run left must not pass for them.
    keep = [Path(p) for p in (getattr(args, "baseline", None), getattr(args, "output", None)) if p]
    previous = [junit_path, json_path, *([Path(args.openmetrics)] if args.openmetrics else [])]
    clear_previous(report_dir, previous, keep=keep)
    live = sys.stderr.isatty()

    def progress(line: str) -> None:
        if live:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif line:
            print("  " + line, file=sys.stderr, flush=True)

    reporter = Reporter(
        say=lambda line: print(line, file=sys.stderr, flush=True), progress=progress, live=live
    )
    atexit.register(kill_all)
    signals = _Signals()
    signals.install()
    with contextlib.ExitStack() as stack:
        base_rate = None
        if baseline is not None and cfg.load.rate == "auto":
            base_rate = next(
                (t.offered_rate for t in baseline_trials(baseline) if t.offered_rate), None
            )
        runner = Runner(
            cfg,
            package,
            report_dir,
            reporter,
            command=command,
            offered_rate=base_rate,
            target=target,
        )
        error: LeakgateError | None = None
        unconfirmed: Verdict | None = None
        try:
            if command == "compare":
                base_dir, commit = stack.enter_context(worktree(package, args.base))
                runner = Runner(
                    cfg,
                    package,
                    report_dir,
                    reporter,
                    base_dir=base_dir,
                    base_revision=commit,
                    command=command,
                )
            record = runner.run()
            first = judge(record, cfg, baseline)
            if cfg.confirm and command != "baseline record" and inconclusive_metrics(first):
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
    if isinstance(error, UsageError):  # input that only the build or the worktree looks at
        if not record.trials:
            _print_error(error)  # nothing was judged: refused like the others, no reports
            return error.exit_code
        error = LeakgateError(f"{error.kind} found after trials ran: {error.message}")
    try:
        verdict = judge(record, cfg, baseline, _leak_sites(record, report_dir))
        if unconfirmed is not None:
            verdict = merge_confirmation(unconfirmed, verdict)
    except Exception as e:  # a bug in judging: the measurements are still written
        verdict = Verdict(status="error", notes=(f"judging failed: {type(e).__name__}: {e}",))
        error = error or LeakgateError(
            f"judging failed: {type(e).__name__}: {e}", details=traceback.format_exc()
        )
    written, problems = _write_reports(
        verdict,
        record,
        report_dir,
        error,
        baseline=baseline,
        junit_path=junit_path,
        json_path=json_path,
        openmetrics=args.openmetrics,
    )
    if command == "baseline record" and error is None and not record.interrupted:
        try:
            save_baseline(record, Path(args.output))
            written.append(Path(args.output))
        except LeakgateError as e:  # learned from the run, whose reports are written: not exit 4
            error = EnvironmentProblem(e.message) if isinstance(e, UsageError) else e
    if error is None or verdict.checks:
        sys.stdout.write(console.render(verdict, record, written))
    else:
        print("reports: " + ", ".join(map(str, written)))
    for problem in problems:
        print(f"leakgate: could not write a report: {problem}", file=sys.stderr)
    if error is not None:
        _print_error(error)
        return error.exit_code
    if problems:
        return EXIT_INTERNAL
    if command == "baseline record":
        # The baseline is recorded whatever it shows; a leak in it is reported, not gated.
        return EXIT_INTERRUPTED if record.interrupted else 0
    return exit_code(verdict)


def _report(args: argparse.Namespace) -> int:
    """`leakgate report RUN.json`: the saved record judged again by the config it ran with."""
    run_path = Path(args.run)
    record = load_run(run_path)
    if not args.keep_env_values:  # an older run.json may hold them: never re-published
        record = dataclasses.replace(record, config=redacted_config(record.config))
    baseline = load_baseline(Path(args.baseline)) if args.baseline else None
    try:
        cfg = from_plain(Config, dict(record.config))
    except (TypeError, ValueError) as e:
        raise UsageError(f"{run_path}: the run's config cannot be read back: {e}") from None
    out = Path(args.out) if args.out else run_path.parent
    read = outputs.inputs(
        ("RUN.json", run_path, "the run record"), ("--baseline", args.baseline, "the baseline")
    )
    where = outputs.Place("--out" if args.out else "the directory of RUN.json", out)
    places = outputs.report_outputs(where, args.openmetrics, read)
    places.check()
    places.claim()
    verdict = judge(record, cfg, baseline, _leak_sites(record, run_path.parent))
    written, problems = _write_reports(
        verdict, record, out, None, baseline=baseline, openmetrics=args.openmetrics
    )
    sys.stdout.write(console.render(verdict, record, written))
    for problem in problems:
        print(f"leakgate: could not write a report: {problem}", file=sys.stderr)
    return EXIT_INTERNAL if problems else exit_code(verdict)


def _leak_sites(record: RunRecord, profile_dir: Path) -> LeakSites:
    """Where it leaks, from the profiles under `profile_dir`; a failure here costs a section of
    the reports, never the verdict."""
    try:
        return leaksites.find(record, profile_dir)
    except Exception as e:  # a bug in the profile analysis must not lose the judged run
        return LeakSites(notes=(f"leak sites could not be computed: {type(e).__name__}: {e}",))


def _write_reports(
    verdict: Verdict,
    record: RunRecord,
    report_dir: Path,
    error: LeakgateError | None,
    *,
    baseline: RunRecord | None = None,
    junit_path: Path | None = None,
    json_path: Path | None = None,
    openmetrics: str | None = None,
) -> tuple[list[Path], list[str]]:
    """Every report; run.json only when `json_path` is given (a re-render keeps the record)."""
    junit_error = None
    if error is not None:
        junit_error = (
            error.kind.replace(" ", "_"),
            f"{error.kind}: {error.message}",
            error.details,
        )
    outputs: list[tuple[Path, Render]] = []
    if json_path is not None:
        outputs.append((json_path, record.to_json))
    outputs += [
        (report_dir / "verdict.json", verdict.to_json),
        (
            junit_path or report_dir / "junit.xml",
            lambda: junit.render(verdict, record, error=junit_error),
        ),
        (report_dir / "summary.md", lambda: markdown.render(verdict, record)),
        (report_dir / "report.html", lambda: html.render(verdict, record, baseline)),
    ]
    if openmetrics:
        outputs.append((Path(openmetrics), lambda: om.render(verdict, record)))
    return write_all(outputs)
