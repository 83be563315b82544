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
SCENARIO_FILE = "scenario.json"  # the runner's request scenario, beside the reports
# Written into every report directory leakgate uses: a directory is cleared only when it has one.
MARKER = ".leakgate-report"
MARKER_TEXT = (
    "leakgate writes its reports here and clears its earlier ones (run.json, verdict.json,\n"
    "junit.xml, summary.md, report.html, scenario.json, trial-N/) before each run.\n"
)
_TRIAL_DIR = re.compile(r"trial-\d+")
# Temporary files of an interrupted write_atomic (".run.json.x1y2.tmp"), and of a write probe.
_OWN_NAMES = "|".join(map(re.escape, (*REPORT_FILES, SCENARIO_FILE, MARKER)))
_LEFTOVER = re.compile(rf"\.(?:{_OWN_NAMES})\..+\.tmp|\.(?:leakgate-)?write-test-.*")


def is_trial_dir(name: str) -> bool:
    return _TRIAL_DIR.fullmatch(name) is not None


def is_marked(report_dir: Path) -> bool:
    return (report_dir / MARKER).is_file()


def foreign_entries(report_dir: Path, own: Iterable[Path] = ()) -> list[str]:
    """Names in `report_dir` that leakgate did not write, sorted; [] for a missing directory.

    Leakgate's own: the report files, scenario.json, trial-N/ directories, the marker, the
    leftovers of an interrupted write, and `own` (paths this run reads or writes, e.g. a
    baseline kept beside the reports). A directory of only these, without the marker, is an
    earlier leakgate's report directory (they had no marker) and may be taken over.
    """
    if not report_dir.is_dir():
        return []
    named = {p.name for p in own if p.parent.resolve() == report_dir.resolve()}
    known = {*REPORT_FILES, SCENARIO_FILE, MARKER, *named}
    foreign = []
    for child in report_dir.iterdir():
        name = child.name
        if child.is_dir() and not child.is_symlink():
            if is_trial_dir(name):
                continue
        elif name in known or _LEFTOVER.fullmatch(name):
            continue
        foreign.append(name)
    return sorted(foreign)


def mark(report_dir: Path) -> None:
    """Claim `report_dir` as leakgate's own (created if missing)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    if not is_marked(report_dir):
        write_atomic(report_dir / MARKER, MARKER_TEXT)


def clear_previous(report_dir: Path, extra: Iterable[Path] = (), keep: Iterable[Path] = ()) -> None:
    """Remove an earlier run's reports and trial directories, so that a run which stops early
    (or a CI wrapper reading verdict.json) never shows a previous verdict as its own. Only a
    directory carrying leakgate's marker is cleared, and there only leakgate's own file names,
    never a file in `keep` (a baseline stored as .leakgate/run.json stays); `extra` are report
    paths given on the command line, removed wherever they are."""
    kept = {p.resolve() for p in keep}
    marked = is_marked(report_dir)
    own = (*REPORT_FILES, SCENARIO_FILE) if marked else ()
    for path in (*(report_dir / name for name in own), *extra):
        if path.resolve() not in kept:
            path.unlink(missing_ok=True)
    if not marked:
        return
    for child in report_dir.iterdir():
        if (
            child.is_dir()
            and not child.is_symlink()
            and is_trial_dir(child.name)
            and not any(p.is_relative_to(child.resolve()) for p in kept)
        ):
            shutil.rmtree(child, ignore_errors=True)
