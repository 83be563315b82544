"""`leakgate report RUN.json`: a saved run judged again by the config it ran with, and every
report written again from it."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from leakgate import costsites, leaksites, outputs
from leakgate.baseline import load_baseline, load_run
from leakgate.config import Config, recorded_plain
from leakgate.environment import redacted_config
from leakgate.errors import EXIT_INTERNAL, UsageError
from leakgate.judge import exit_code, judge
from leakgate.model import from_plain
from leakgate.report import Judged, console, write_reports


def rerender(args: argparse.Namespace) -> int:
    run_path = Path(args.run)
    record = load_run(run_path)
    if not args.keep_env_values:  # an older run.json may hold them: never re-published
        record = dataclasses.replace(record, config=redacted_config(record.config))
    baseline = load_baseline(Path(args.baseline)) if args.baseline else None
    try:
        cfg = from_plain(Config, recorded_plain(record.config))
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
    sites = leaksites.find_or_note(record, run_path.parent)
    costs = costsites.find_or_note(record, run_path.parent)
    verdict = judge(record, cfg, baseline, sites, costs)
    judged = Judged(verdict, record, baseline)
    written, problems = write_reports(judged, out, openmetrics=args.openmetrics)
    sys.stdout.write(console.render(dataclasses.replace(judged, written=tuple(written))))
    for problem in problems:
        print(f"leakgate: could not write a report: {problem}", file=sys.stderr)
    return EXIT_INTERNAL if problems else exit_code(verdict)
