"""Reporters: each renders a Verdict (and the RunRecord it judged) into one format.

Every output is written atomically, and each is attempted even when an earlier one failed.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from leakgate.atomic import write_atomic as write_atomic  # re-exported for the reporters

Render = Callable[[], str]


def write_all(outputs: list[tuple[Path, Render]]) -> tuple[list[Path], list[str]]:
    """Render and write each output; returns (written paths, problems)."""
    written: list[Path] = []
    problems: list[str] = []
    for path, render in outputs:
        try:
            write_atomic(path, render())
            written.append(path)
        except Exception as e:  # one broken reporter must not cost the others
            problems.append(f"{path}: {type(e).__name__}: {e}")
    return written, problems


# What a run writes into its report directory, besides the trial-N/ directories.
REPORT_FILES = ("run.json", "verdict.json", "junit.xml", "summary.md", "report.html")
_TRIAL_DIR = re.compile(r"trial-\d+")


def clear_previous(report_dir: Path, extra: Iterable[Path] = (), keep: Iterable[Path] = ()) -> None:
    """Remove an earlier run's reports and trial directories, so that a run which stops early
    (or a CI wrapper reading verdict.json) never shows a previous verdict as its own. Only
    leakgate's own file names are touched, never a file in `keep` (a baseline stored as
    .leakgate/run.json stays)."""
    kept = {p.resolve() for p in keep}
    for path in (*(report_dir / name for name in REPORT_FILES), *extra):
        if path.resolve() not in kept:
            path.unlink(missing_ok=True)
    for child in report_dir.iterdir():
        if child.is_dir() and _TRIAL_DIR.fullmatch(child.name):
            shutil.rmtree(child, ignore_errors=True)
