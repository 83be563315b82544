"""Where a command writes, checked before anything starts.

leakgate writes only into its own report directory and the paths it was given, and never over
its inputs: every report path, and every file the run deletes without writing it (the load
results, removed before each trial), is compared with the inputs (baseline, config, program, the
run record `report` reads) and with every other such path, as the same file however it is
spelled (symlinks, hard links, `..`); an input inside a trial-N/ directory the run clears is
refused; each output's directory is created and proven writable with a probe (and removed again
if the command is then refused); and the report directory must be leakgate's own (marked), new,
empty, or recognisably an earlier leakgate's (report/__init__.py foreign_entries). All of it
raises UsageError (exit 4) naming the flags and paths.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from leakgate.errors import UsageError
from leakgate.report import (
    MARKER,
    REPORT_FILES,
    SCENARIO_FILE,
    foreign_entries,
    is_marked,
    is_trial_dir,
    mark,
)

# What a run writes into its report directory unless a flag puts it elsewhere.
_RUN_FILES = (*REPORT_FILES, SCENARIO_FILE, MARKER)
_MOVED_BY = {"--json": "run.json", "--junit": "junit.xml"}


@dataclass(frozen=True, slots=True)
class Place:
    """A path on the command line (or in the config), named the way the user gave it."""

    flag: str  # "--junit", "--baseline", "RUN.json", "report.dir", ...
    path: Path
    # for an input: what it is ("the baseline"); "" for a report; for a file the run deletes
    # without writing it (a load result): what it is
    what: str = ""
    within: str = ""  # for a file the report directory holds: its name there

    @property
    def file(self) -> Path:
        return self.path / self.within if self.within else self.path

    def __str__(self) -> str:
        if self.within:
            return f"{self.within} in {self.flag} {self.path}"
        return f"{self.flag} {self.path}"


@dataclass(frozen=True, slots=True)
class Outputs:
    """What one command writes: its report directory and the files it was given."""

    report_dir: Place
    files: tuple[Place, ...]  # every report file, those inside report_dir included
    inputs: tuple[Place, ...]
    clears: bool  # check/compare/record clear the directory; `report` only writes into it

    def check(self) -> None:
        """Raise UsageError for anything that would overwrite an input or another report,
        or that cannot be written. Every refusal that needs no directory comes first; the
        directories the write probes then create are removed again if one of them refuses, so
        a refused command leaves nothing behind."""
        for i, output in enumerate(self.files):
            for earlier in (*self.inputs, *self.files[:i]):
                if same_file(output.file, earlier.file):
                    raise UsageError(_clash(earlier, output))
        if self.clears:
            for place in self.inputs:
                trial = _trial_dir_holding(self.report_dir.path, place.file)
                if trial is not None:
                    raise UsageError(
                        f"{place} is inside {trial}, which the run clears and rewrites; "
                        f"keep {place.what} outside the report directory's trial-N/ folders"
                    )
        for output in self.files:
            if output.file.is_dir():
                raise UsageError(_is_a_directory(output))
        self._check_report_dir()
        created: list[Path] = []
        try:
            problem = "report directory is not writable"
            writable(self.report_dir, self.report_dir.path, problem, created)
            for output in self.files:
                if not output.within:
                    writable(output, output.path.parent, created=created)
        except UsageError:
            for directory in reversed(created):  # innermost first
                with contextlib.suppress(OSError):
                    directory.rmdir()
            raise

    def claim(self) -> None:
        """Mark the report directory as leakgate's, unless `report` is only adding files to a
        folder of the user's (then it is left unmarked, so that no later run clears it)."""
        directory = self.report_dir.path
        if self.clears or not foreign_entries(directory, self._named()):
            mark(directory)

    def _named(self) -> list[Path]:
        return [p.file for p in (*self.inputs, *self.files) if not p.within]

    def _check_report_dir(self) -> None:
        place = self.report_dir
        directory = place.path
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{place}: not a directory")
        if not is_marked(directory):
            foreign = foreign_entries(directory, self._named())
            replaced = [p.within for p in self.files if p.within and p.file.exists()]
            if foreign and (self.clears or replaced):
                raise UsageError(_not_ours(place, foreign, replaced, self.clears))


def same_file(a: Path, b: Path) -> bool:
    """Whether writing `a` would write `b`: the same path once symlinks and `..` are resolved,
    or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def writable(
    place: Place,
    directory: Path,
    problem: str = "cannot write there",
    created: list[Path] | None = None,
) -> None:
    """Create `directory` if needed and prove a file can be created in it; the directories
    it creates are appended to `created`, outermost first."""
    try:
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        directory.mkdir(parents=True, exist_ok=True)
        if created is not None:
            created.extend(reversed(missing))
        fd, probe = tempfile.mkstemp(prefix=".leakgate-write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        raise UsageError(f"{place}: {problem} ({directory}: {reason})") from None


def _is_a_directory(output: Place) -> str:
    if output.within:
        return (
            f"{output.file} is a directory; leakgate writes its {output.within} there: "
            f"remove it or give --out another directory"
        )
    return f"{output.flag} {output.file}: is a directory; give a file path"


def _clash(first: Place, second: Place) -> str:
    if second.what:  # a file leakgate deletes itself: a load result, before each trial
        harm = f"leakgate deletes {second.what} before each trial"
        harm += f", which would delete {first.what}" if first.what else ""
    elif first.what:
        harm = f"the report would overwrite {first.what}"
    else:
        harm = "one report would overwrite the other"
    fix = "--out another directory" if second.within else f"{second.flag} another path"
    return f"{first} and {second} are the same file: {harm}; give {fix}"


def _trial_dir_holding(report_dir: Path, path: Path) -> Path | None:
    try:
        relative = Path(os.path.realpath(path)).relative_to(os.path.realpath(report_dir))
    except ValueError:
        return None
    if len(relative.parts) > 1 and is_trial_dir(relative.parts[0]):
        return report_dir / relative.parts[0]
    return None


def _not_ours(place: Place, foreign: Sequence[str], replaced: Sequence[str], clears: bool) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    does = (
        "a run clears its report directory first"
        if clears
        else f"this would replace {', '.join(replaced)} there"
    )
    return (
        f"{place}: not a leakgate report directory (it holds {shown}: not what leakgate "
        f"writes there; and no {MARKER} file); {does}, so leakgate uses only a directory it "
        f"created: "
        f"give --out a new or empty directory (or, if this is an earlier leakgate's "
        f"report directory, delete it, or add an empty {MARKER} file to let leakgate clear "
        f"its own reports there)"
    )


def inputs(*given: tuple[str, str | Path | None, str]) -> tuple[Place, ...]:
    """Places of (flag, path or None when not given, what it is)."""
    return tuple(Place(flag, Path(path), what) for flag, path, what in given if path)


def run_outputs(
    report_dir: Place,
    given: Mapping[str, str | None],
    read: Iterable[Place],
    deleted: Iterable[Place] = (),
) -> Outputs:
    """What check, compare and baseline record write: `given` maps --junit, --json,
    --openmetrics and -o to their paths (None when not given); `deleted` are files the run
    removes although it does not write them (the load results, before each trial), checked
    against every input and every report like the reports are."""
    moved = {_MOVED_BY[flag] for flag, path in given.items() if path and flag in _MOVED_BY}
    names = [name for name in _RUN_FILES if name not in moved]
    return Outputs(
        report_dir,
        (
            *_in(report_dir, names),
            *deleted,
            *inputs(*((f, p, "") for f, p in given.items())),
        ),
        tuple(read),
        clears=True,
    )


def report_outputs(report_dir: Place, openmetrics: str | None, read: Iterable[Place]) -> Outputs:
    """What `leakgate report` writes: every report but run.json, which it reads."""
    names = [name for name in _RUN_FILES if name not in ("run.json", SCENARIO_FILE)]
    files = (*_in(report_dir, names), *inputs(("--openmetrics", openmetrics, "")))
    return Outputs(report_dir, files, tuple(read), clears=False)


def _in(report_dir: Place, names: Sequence[str]) -> tuple[Place, ...]:
    return tuple(Place(report_dir.flag, report_dir.path, within=name) for name in names)
