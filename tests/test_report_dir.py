"""A run clears what an earlier run left in its report directory, and only that: only in a
directory leakgate marked as its own, and there only leakgate's own names."""

from __future__ import annotations

from pathlib import Path

from leakgate.report import MARKER, REPORT_FILES, clear_previous, foreign_entries, mark


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


def test_foreign_entries_tell_an_earlier_leakgates_directory_from_a_users(tmp_path: Path) -> None:
    assert foreign_entries(tmp_path / "missing") == []
    for name in (*REPORT_FILES, "scenario.json", ".summary.md.k2j3.tmp"):
        (tmp_path / name).write_text("old")
    (tmp_path / "trial-3").mkdir()
    assert foreign_entries(tmp_path) == []  # an earlier leakgate's: may be taken over

    (tmp_path / "base.json").write_text("{}")
    assert foreign_entries(tmp_path) == ["base.json"]
    assert foreign_entries(tmp_path, own=[tmp_path / "base.json"]) == []  # --baseline there

    (tmp_path / "trial-9").symlink_to(tmp_path / "trial-3")  # not a directory leakgate made
    (tmp_path / "notes").mkdir()
    assert foreign_entries(tmp_path) == ["base.json", "notes", "trial-9"]


def test_mark_creates_the_directory(tmp_path: Path) -> None:
    mark(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / MARKER).is_file()
