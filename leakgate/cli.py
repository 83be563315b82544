"""Command line: argparse commands and the one place where errors become exit codes.

The work is in leakgate/commands/: run.py (check, compare, baseline record) and rerender.py
(report); this module parses the arguments, calls one of them and turns what it raises into
the exit code.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from leakgate import __version__
from leakgate.commands.rerender import rerender
from leakgate.commands.run import print_error, run
from leakgate.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, LeakgateError, UsageError


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
    compare.add_argument(
        "--design",
        choices=("paired", "trials"),
        help="paired (default): both builds warm, alternating short blocks, decided as the "
        "pairs come in; trials: fresh processes a side, one value per trial",
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
            return run(args)
        if args.command == "report":
            return rerender(args)
        build_parser().print_help(sys.stderr)  # no command: a usage error like any other
        return EXIT_USAGE
    except SystemExit as e:  # --help and --version
        return e.code if isinstance(e.code, int) else 0
    except LeakgateError as e:
        print_error(e)
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
