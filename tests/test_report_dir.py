"""A run clears what an earlier run left in its report directory, and only that: only in a
directory leakgate marked as its own, and there only leakgate's own names."""

from __future__ import annotations

from pathlib import Path

from leakgate.model import RunRecord
from leakgate.report import MARKER, REPORT_FILES, clear_previous, foreign_entries, mark

from .factories import trial


def test_clear_previous_removes_only_leakgates_own_outputs(tmp_path: Path) -> None:
    mark(tmp_path)
    for name in (*REPORT_FILES, "scenario.json", "notes.txt", "custom-junit.xml"):
        (tmp_path / name).write_text("old")
    for name in ("trial-1", "trial-12", "trial-x", "trials"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "service.log").write_text("old")
    baseline = tmp_path / "run.json"

    clear_previous(tmp_path, extra=[tmp_path / "custom-junit.xml"], keep=[baseline])

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [MARKER, "notes.txt", "run.json", "trial-x", "trials"]
    assert baseline.read_text() == "old"  # a baseline kept in the report directory survives


def test_clear_previous_leaves_an_unmarked_directory_alone(tmp_path: Path) -> None:
    for name in REPORT_FILES:
        (tmp_path / name).write_text("mine")
    (tmp_path / "trial-1").mkdir()
    (tmp_path / "custom.xml").write_text("given on the command line")

    clear_previous(tmp_path, extra=[tmp_path / "custom.xml"])

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*REPORT_FILES, "trial-1"])


def test_clear_previous_on_an_empty_directory(tmp_path: Path) -> None:
    clear_previous(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _earlier_run(directory: Path) -> None:
    """What an earlier leakgate (before the marker) left: its reports, a run record, trials."""
    for name in REPORT_FILES:
        (directory / name).write_text("old")
    (directory / "run.json").write_text(RunRecord(trials=(trial(),)).to_json())
    for name in ("scenario.json", "scenario.wrk.lua", ".summary.md.k2j3.tmp"):
        (directory / name).write_text("old")
    (directory / "trial-3").mkdir()
    for name in ("service.log", "load-warmup.json", "load-measure.log",
                 "load-measure.wrk-stderr.txt", "heap-warmup.pb.gz", "goroutine-drain.pb.gz",
                 "goroutine-drain.txt", "goroutineleak-drain.pb.gz", "trace-measure.out",
                 "heap-drain.pb.gz.tmp"):  # fmt: skip
        (directory / "trial-3" / name).write_text("old")


def test_foreign_entries_tell_an_earlier_leakgates_directory_from_a_users(tmp_path: Path) -> None:
    assert foreign_entries(tmp_path / "missing") == []
    assert foreign_entries(tmp_path) == []  # empty
    _earlier_run(tmp_path)
    assert foreign_entries(tmp_path) == []  # an earlier leakgate's: may be taken over

    (tmp_path / "base.json").write_text("{}")
    assert foreign_entries(tmp_path) == ["base.json"]
    assert foreign_entries(tmp_path, own=[tmp_path / "base.json"]) == []  # --baseline there

    (tmp_path / "trial-9").symlink_to(tmp_path / "trial-3")  # not a directory leakgate made
    (tmp_path / "notes").mkdir()
    assert foreign_entries(tmp_path) == ["base.json", "notes", "trial-9"]


def test_leakgates_names_alone_do_not_make_a_folder_leakgates(tmp_path: Path) -> None:
    """A user's results/ that happens to use leakgate's names is not taken over (and cleared):
    a trial-N/ holds only what a trial writes, and the run.json must be a run record."""
    (tmp_path / "trial-1").mkdir()
    (tmp_path / "trial-1" / "data.csv").write_text("a,b\n")
    (tmp_path / "summary.md").write_text("# mine\n")
    assert foreign_entries(tmp_path) == ["trial-1/data.csv"]

    (tmp_path / "trial-1" / "data.csv").unlink()
    (tmp_path / "trial-1" / "results").mkdir()  # a trial writes no directories
    assert foreign_entries(tmp_path) == ["trial-1/results"]

    (tmp_path / "trial-1" / "results").rmdir()
    assert foreign_entries(tmp_path) == ["summary.md, trial-1 without a run.json"]

    (tmp_path / "run.json").write_text('{"schema_version": 1, "command": "mine"}')
    assert foreign_entries(tmp_path) == ["a run.json that is not a leakgate run record"]

    (tmp_path / "run.json").write_text(RunRecord().to_json())
    assert foreign_entries(tmp_path) == []
    # only what this command names (a baseline kept there): nothing would be lost
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "base.json").write_text("{}")
    assert foreign_entries(tmp_path / "only", own=[tmp_path / "only" / "base.json"]) == []


def test_mark_creates_the_directory(tmp_path: Path) -> None:
    mark(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / MARKER).is_file()
