"""Reporters: each renders a judged run (`Judged`: the Verdict and the RunRecord it judged) into
one format, with one signature: `render(judged) -> str`.

Every output is written atomically, and each is attempted even when an earlier one failed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from leakgate.atomic import write_atomic as write_atomic  # re-exported for the reporters
from leakgate.model import RunRecord, Verdict

Render = Callable[[], str]


@dataclass(frozen=True, slots=True)
class RunError:
    """What stopped a run before it could judge: junit.xml shows it as an error case."""

    kind: str  # "build failed", "load failed", ...
    message: str
    details: str = ""


@dataclass(frozen=True, slots=True)
class Judged:
    """What every reporter renders: the verdict, the run it judged and what else a reader of
    the report needs to place it."""

    verdict: Verdict
    record: RunRecord
    baseline: RunRecord | None = None  # the stored baseline of `check --baseline`
    error: RunError | None = None
    written: tuple[Path, ...] = ()  # the reports already written, for the console to list


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
    """What in an unmarked `report_dir` leakgate did not write, sorted; [] when leakgate may
    take the directory over (missing, empty, or an earlier leakgate's report directory).

    `own` are paths this run reads or writes (e.g. a baseline kept beside the reports): they are
    never cleared, so they may be there. Anything else makes the directory an earlier
    leakgate's only when recognised strictly: every top-level file is one of leakgate's names,
    every trial-N/ directory holds only the files a trial writes, and its run.json is a leakgate
    run record. A user's folder that merely uses the same names (trial-1/data.csv, their own
    summary.md) is foreign, and a run refuses to clear it.
    """
    if not report_dir.is_dir():
        return []
    named = {p.name for p in own if p.parent.resolve() == report_dir.resolve()}
    foreign: list[str] = []
    leakgates: list[str] = []  # leakgate's names, not given on this command line
    for child in report_dir.iterdir():
        name = child.name
        if name in named:
            continue
        if child.is_dir() and not child.is_symlink() and is_trial_dir(name):
            leakgates.append(name)
            foreign.extend(f"{name}/{entry}" for entry in _foreign_in_trial(child))
        elif child.is_file() and not child.is_symlink() and name in _TOP_LEVEL:
            leakgates.append(name)
        elif not _LEFTOVER.fullmatch(name):
            foreign.append(name)
    if foreign or not leakgates:
        return sorted(foreign)
    record = report_dir / "run.json"  # checked even when named: a run.json `report` reads
    if not record.is_file():
        return [f"{', '.join(sorted(leakgates))} without a run.json"]
    if not _is_run_record(record):
        return ["a run.json that is not a leakgate run record"]
    return []


# What a trial writes into its trial-N/ directory (runner.py, measure.py, the load drivers):
# the service log, each load phase's result, log and wrk stderr, the checkpoints' profiles, the
# execution trace; ".name.XXXX.tmp" is an interrupted profile write (write_atomic's temporary
# file), "name.tmp" an older leakgate's.
_TRIAL_NAME = (
    r"(?:service\.log"
    r"|load-[a-z]+\.(?:json|log|wrk-stderr\.txt)"
    r"|(?:heap|goroutine|goroutineleak)-[a-z]+\.pb\.gz"
    r"|goroutine-[a-z]+\.txt"
    r"|trace-[a-z]+\.out)"
)
_TRIAL_FILE = re.compile(rf"{_TRIAL_NAME}(?:\.tmp)?|\.{_TRIAL_NAME}\..+\.tmp")
# Top-level files a run writes: the reports, the scenario (and its wrk script), the marker.
_TOP_LEVEL = frozenset((*REPORT_FILES, SCENARIO_FILE, "scenario.wrk.lua", MARKER))
_RECORD_COMMANDS = ("check", "compare", "baseline record")
_MAX_RECORD_BYTES = 512 * 1024 * 1024


def _foreign_in_trial(trial_dir: Path) -> list[str]:
    return [
        child.name
        for child in trial_dir.iterdir()
        if child.is_symlink() or not child.is_file() or not _TRIAL_FILE.fullmatch(child.name)
    ]


def _is_run_record(path: Path) -> bool:
    """Whether `path` reads as a RunRecord leakgate wrote: a JSON object with its
    schema_version and command (the whole record is not built: cheap, and enough to tell)."""
    try:
        if path.stat().st_size > _MAX_RECORD_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("schema_version"), int)
        and data.get("command") in _RECORD_COMMANDS
        and isinstance(data.get("trials"), list)
    )


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


def write_reports(
    judged: Judged,
    report_dir: Path,
    *,
    junit_path: Path | None = None,
    json_path: Path | None = None,
    openmetrics: str | None = None,
) -> tuple[list[Path], list[str]]:
    """Every report of a judged run; run.json only when `json_path` is given (a re-render
    keeps the record). Returns (written paths, problems), like write_all."""
    # Imported here: each reporter imports Judged from this package.
    from leakgate.report import html, junit, markdown
    from leakgate.report import openmetrics as om

    reports: list[tuple[Path, Render]] = []
    if json_path is not None:
        reports.append((json_path, judged.record.to_json))
    reports += [
        (report_dir / "verdict.json", judged.verdict.to_json),
        (junit_path or report_dir / "junit.xml", lambda: junit.render(judged)),
        (report_dir / "summary.md", lambda: markdown.render(judged)),
        (report_dir / "report.html", lambda: html.render(judged)),
    ]
    if openmetrics:
        reports.append((Path(openmetrics), lambda: om.render(judged)))
    return write_all(reports)
