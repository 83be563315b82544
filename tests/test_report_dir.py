"""A run clears what an earlier run left in its report directory, and only that."""

from __future__ import annotations

from pathlib import Path

from leakgate.report import REPORT_FILES, clear_previous


def test_clear_previous_removes_only_leakgates_own_outputs(tmp_path: Path) -> None:
    for name in (*REPORT_FILES, "notes.txt", "custom-junit.xml"):
        (tmp_path / name).write_text("old")
    for name in ("trial-1", "trial-12", "trial-x", "trials"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "service.log").write_text("old")
    baseline = tmp_path / "run.json"

    clear_previous(tmp_path, extra=[tmp_path / "custom-junit.xml"], keep=[baseline])

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["notes.txt", "run.json", "trial-x", "trials"]
    assert baseline.read_text() == "old"  # a baseline kept in the report directory survives


def test_clear_previous_on_an_empty_directory(tmp_path: Path) -> None:
    clear_previous(tmp_path)
    assert list(tmp_path.iterdir()) == []
