"""`leakgate report RUN.json`: every report regenerated from a saved run, with the same verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .gate import GateRun, run_gate, write_config

REPORTS = ("junit.xml", "verdict.json", "summary.md")


@pytest.mark.go
@pytest.mark.slow
def test_report_regenerates_every_report_with_the_same_verdict(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="4s")
    out = tmp_path / "out"
    first = run_gate(
        [str(SAMPLE), "--config", str(config), "--env", marker, "--env", "LEAK=globalmap"], out
    )
    assert first.returncode == 1, first.output
    original = {name: (out / name).read_text() for name in REPORTS}
    for name in REPORTS:
        (out / name).unlink()

    again = run_gate(["report", str(out / "run.json")], None, command="report")
    assert again.returncode == 1, again.output
    assert {name: (out / name).read_text() for name in REPORTS} == original
    assert "top leak site: " in again.stdout and "main.leakGlobalMap" in again.stdout

    # Moved elsewhere with its profiles, written to another directory: the same reports.
    moved = tmp_path / "archive"
    shutil.copytree(out, moved)
    elsewhere = tmp_path / "elsewhere"
    third = run_gate(
        ["report", str(moved / "run.json"), "--out", str(elsewhere)], None, command="report"
    )
    assert third.returncode == 1, third.output
    assert (elsewhere / "summary.md").read_text() == original["summary.md"]
    verdict = json.loads((elsewhere / "verdict.json").read_text())
    assert verdict["status"] == "fail"
    assert verdict["leak_sites"]["heap"][0]["function"] == "main.leakGlobalMap"


def _report(args: list[str]) -> GateRun:
    return run_gate(["report", *args], None, timeout=60, command="report")


def test_report_of_a_missing_or_corrupt_run_exits_4_naming_the_file(tmp_path: Path) -> None:
    run = _report([str(tmp_path / "run.json")])
    assert run.returncode == 4 and "run.json: no run record there" in run.stderr

    bad = tmp_path / "run.json"
    bad.write_text('{"schema_version": 1, "trials": [')
    run = _report([str(bad)])
    assert run.returncode == 4 and "run.json: the run record is truncated" in run.stderr

    newer = tmp_path / "newer.json"
    newer.write_text('{"schema_version": 99}')
    run = _report([str(newer)])
    assert run.returncode == 4 and "newer leakgate" in run.stderr
    assert not (tmp_path / "summary.md").exists()
