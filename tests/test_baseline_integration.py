"""Baselines and `compare --base` end to end with the real sample service."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import statistics
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .gate import (
    GateRun,
    git,
    processes_with_env,
    run_gate,
    start_gate,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.go, pytest.mark.slow]

# 5 trials a side: with the cost metrics, four or five metrics are gated, and Holm needs
# 1/C(2n, n) times that under 0.05 (4 trials: 4/70 = 0.057 cannot fail anything).
FAST = "trials: 5\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of the sample service, one commit."""
    root = tmp_path / "repo"
    shutil.copytree(SAMPLE, root / "svc")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    return root


def test_missing_baseline_exits_4_with_the_record_command(tmp_path: Path, marker: str) -> None:
    run = run_gate(
        [str(SAMPLE), "--baseline", str(tmp_path / "nope.json"), "--env", marker], tmp_path / "out"
    )
    assert run.returncode == 4, run.output
    assert "nope.json" in run.stderr and "leakgate baseline record" in run.stderr
    assert not (tmp_path / "out").exists()


def test_corrupt_baseline_exits_4_and_is_not_overwritten(tmp_path: Path, marker: str) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text('{"schema_version": 1, "trials": [')
    run = run_gate([str(SAMPLE), "--baseline", str(bad), "--env", marker], tmp_path / "out")
    assert run.returncode == 4, run.output
    assert "baseline.json" in run.stderr
    assert bad.read_text() == '{"schema_version": 1, "trials": ['


def test_compare_against_a_ref_that_does_not_exist_exits_4(
    go_bin: str, repo: Path, tmp_path: Path, marker: str
) -> None:
    run = run_gate(
        ["compare", "--base", "no-such-branch", str(repo / "svc"), "--env", marker],
        tmp_path / "out",
        command="compare",
    )
    assert run.returncode == 4, run.output
    assert "no-such-branch" in run.stderr


def test_record_then_check_against_the_baseline(go_bin: str, tmp_path: Path, marker: str) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="3s", extra=FAST)
    baseline = tmp_path / "baseline.json"
    run = run_gate(
        ["--config", str(config), str(SAMPLE), "--env", marker, "-o", str(baseline)],
        tmp_path / "rec",
        command="baseline record",
    )
    assert run.returncode == 0, run.output
    stored = json.loads(baseline.read_text())
    assert len(stored["trials"]) == 5 and stored["schema_version"] == 1
    rate = stored["trials"][0]["offered_rate"]

    run = run_gate(
        [
            "--config",
            str(config),
            str(SAMPLE),
            "--env",
            marker,
            "--env",
            "LEAK=globalmap",
            "--baseline",
            str(baseline),
        ],
        tmp_path / "out",
    )
    assert run.returncode == 1, run.output
    cases = run.junit_cases()
    assert cases["retained_per_request_vs_baseline"] == "failure", run.output
    assert "retained_per_request" in {n for n, k in cases.items() if k == "failure"}
    record = json.loads((run.out / "run.json").read_text())
    assert {t["offered_rate"] for t in record["trials"]} == {rate}  # the baseline's load
    assert "retained bytes per request" in run.stdout and "✗" in run.stdout
    assert json.loads(baseline.read_text()) == stored  # a check never rewrites the baseline


def test_compare_base_ref_interleaves_and_judges(
    go_bin: str, repo: Path, tmp_path: Path, marker: str
) -> None:
    svc = repo / "svc"
    # Latency of short blocks is not gated here: the A/A false-fail rate is bench/accuracy.py's
    # to measure, not a test's to assert. What is asserted: both designs' order, one offered
    # rate, the base revision, and a leak caught against HEAD.
    extra = (
        FAST
        + "compare: {block: 1s, min_pairs: 8, max_pairs: 10}\n"
        + "thresholds:\n  p95_latency: {max_increase: null}\n"
    )
    write_config(svc / "leakgate.yml", warmup="1s", duration="3s", extra=extra)
    git(repo, "commit", "-qam", "short config")
    # A/A, paired (the default): one process a side, ABBA blocks, the same commit passes.
    run = run_gate(
        ["compare", "--base", "HEAD", str(svc), "--env", marker], tmp_path / "aa", command="compare"
    )
    assert run.returncode == 0, run.output
    record = json.loads((run.out / "run.json").read_text())
    assert record["design"] == "paired"
    assert [t["side"] for t in record["trials"]] == ["baseline", "candidate"]
    blocks = record["blocks"]
    assert len(blocks) in (16, 20), len(blocks)  # decided at the first look, or the second
    first = blocks[0]["side"]
    for b in blocks:  # ABBA: pair k runs `first` first when k is even
        pair, position = divmod(b["index"], 2)
        assert b["pair"] == pair
        assert (b["side"] == first) == ((pair % 2 == 0) == (position == 0)), blocks
    # one side under load at a time, in order
    for a, b in itertools.pairwise(blocks):
        assert a["started"] + a["seconds"] <= b["started"] + 1e-6
    assert all(
        t["load"]["requests"]
        == sum(b["load"]["requests"] for b in blocks if b["side"] == t["side"])
        for t in record["trials"]
    )
    # Each side settles (unmeasured) after its samplers start: those requests are counted
    # between the checkpoints, and no side's first block carries the profile start's 1 MiB
    # or the refill of pools the checkpoint's GCs emptied (it measured 2-7% above the rest).
    assert all(t["settle_requests"] > 0 for t in record["trials"]), record["trials"]
    for side in ("baseline", "candidate"):
        per_request = [
            (b["cost"]["end"]["alloc_bytes"] - b["cost"]["start"]["alloc_bytes"])
            / b["load"]["requests"]
            for b in blocks
            if b["side"] == side
        ]
        assert per_request[0] < 1.01 * statistics.median(per_request[1:]), (side, per_request)
    assert record["base_revision"] == git(repo, "rev-parse", "HEAD")
    assert len({t["offered_rate"] for t in record["trials"]}) == 1
    assert "pairs" in run.stdout and "95% interval" in run.stdout
    # The trials design stays: fresh processes a side, interleaved in random rounds.
    run = run_gate(
        ["compare", "--base", "HEAD", str(svc), "--env", marker, "--design", "trials"],
        tmp_path / "aa-trials",
        command="compare",
    )
    assert run.returncode == 0, run.output
    record = json.loads((run.out / "run.json").read_text())
    assert record["design"] == "trials" and record["blocks"] == []
    sides = [t["side"] for t in record["trials"]]
    assert sorted(sides) == ["baseline"] * 5 + ["candidate"] * 5
    assert all(sorted(sides[i : i + 2]) == ["baseline", "candidate"] for i in range(0, 10, 2))
    # A change that leaks in the working tree is caught against HEAD: the candidate's process
    # served every block, and its leak check judges all of them.
    main_go = svc / "main.go"
    main_go.write_text(
        main_go.read_text().replace('parseLeak(getenv("LEAK"))', 'parseLeak("globalmap")', 1)
    )
    run = run_gate(
        ["compare", "--base", "HEAD", str(svc), "--env", marker], tmp_path / "ab", command="compare"
    )
    assert run.returncode == 1, run.output
    assert run.junit_cases()["retained_per_request"] == "failure", run.output
    # A leak this plain (~350 B/request) stops the blocks at the first look, whatever the cost
    # metrics near their thresholds still leave open: the drain decides.
    record = json.loads((run.out / "run.json").read_text())
    assert len(record["blocks"]) == 16, (len(record["blocks"]), record["stopped_early"])
    assert record["stopped_early"] == "" or "live heap kept growing" in record["stopped_early"]
    # who holds it, from the candidate's heap dumps (the base's are not analysed)
    holders = json.loads((run.out / "verdict.json").read_text())["leak_sites"]["holders"]
    assert holders[0]["name"] == "main.auditLog", holders
    kept = sorted(p.name for p in run.out.rglob("*.heapdump"))
    assert kept == ["heap-drain.heapdump"] * 2 + ["heap-warmup.heapdump"] * 2, kept
    worktrees = git(repo, "worktree", "list")
    assert len(worktrees.splitlines()) == 1, worktrees  # the temporary worktree is gone


def _paired_repo(repo: Path) -> Path:
    svc = repo / "svc"
    extra = "compare: {block: 1s, min_pairs: 8, max_pairs: 16}\n"
    write_config(svc / "leakgate.yml", warmup="1s", duration="3s", extra=extra)
    git(repo, "commit", "-qam", "short config")
    return svc


def _blocks_started(out: Path, n: int) -> bool:
    return len(list(out.glob("trial-*/load-block-*.json"))) >= n


@pytest.mark.parametrize("how", ["sigint", "candidate-killed"])
def test_a_paired_compare_cut_short_reports_what_it_measured_and_leaves_nothing(
    go_bin: str, repo: Path, tmp_path: Path, marker: str, how: str
) -> None:
    """SIGINT in the blocks: exit 2, both sides' trials and the blocks so far in run.json. The
    candidate killed in the blocks: service_alive fails (exit 1). Either way no process and no
    worktree is left."""
    svc = _paired_repo(repo)
    out = tmp_path / "out"
    proc = start_gate(["compare", "--base", "HEAD", str(svc), "--env", marker], out, "compare")
    try:
        wait_for(lambda: _blocks_started(out, 3), 180, "three blocks")
        if how == "sigint":
            proc.send_signal(signal.SIGINT)
        else:
            record_pids = [pid for pid in processes_with_env(marker) if _is_candidate(pid, svc)]
            assert record_pids, "the candidate is not running"
            for pid in record_pids:
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run = GateRun(proc.returncode, stdout, stderr, out)
    record = json.loads((out / "run.json").read_text())
    assert record["design"] == "paired" and record["blocks"], run.output
    sides = {t["side"]: t for t in record["trials"]}
    assert set(sides) == {"baseline", "candidate"}, run.output
    if how == "sigint":
        assert run.returncode == 2, run.output
        assert record["interrupted"] is True
    else:
        assert run.returncode == 1, run.output
        assert sides["candidate"]["service"]["died"] is True
        assert run.junit_cases()["service_alive"] == "failure", run.output
    assert (out / "summary.md").exists() and (out / "report.html").exists()
    assert processes_with_env(marker) == []
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def _is_candidate(pid: int, svc: Path) -> bool:
    """Whether the process runs in the candidate's directory (the base runs in its worktree)."""
    try:
        return Path(f"/proc/{pid}/cwd").resolve() == svc.resolve()
    except OSError:
        return False
