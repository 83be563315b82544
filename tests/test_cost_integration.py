"""Cost per request end to end: the real sample service, its real counters and profiles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leakgate import pprof

from .conftest import SAMPLE
from .gate import git, run_gate, write_config

pytestmark = [pytest.mark.go, pytest.mark.slow]


def _cost(trial: dict[str, object]) -> dict[str, float]:
    cost = trial["cost"]
    load = trial["load"]
    assert isinstance(cost, dict) and isinstance(load, dict)
    requests = load["requests"]
    return {
        key: (cost["end"][key] - cost["start"][key]) / requests
        for key in ("cpu_seconds", "alloc_bytes", "alloc_objects")
    }


@pytest.mark.parametrize("agent", [True, False], ids=["agent", "pprof-expvar"])
def test_a_check_records_what_each_request_costs(
    go_bin: str, tmp_path: Path, marker: str, agent: bool
) -> None:
    extra = "" if agent else "  inject_agent: false\n"
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="4s")
    if extra:  # under service:
        config.write_text(config.read_text().replace("service:\n", "service:\n" + extra, 1))
    run = run_gate(["--config", str(config), str(SAMPLE), "--env", marker], tmp_path / "out")
    assert run.returncode == 0, run.output
    (trial,) = json.loads((run.out / "run.json").read_text())["trials"]
    cost = trial["cost"]
    if agent:
        assert cost["cpu_source"] == "getrusage user + system (agent)"
        # exact counts: ReadMemStats flushes the per-P caches runtime/metrics lags by
        assert cost["alloc_source"].startswith("runtime.ReadMemStats"), cost["alloc_source"]
    else:
        assert cost["cpu_source"] in (
            "cgroup cpu.stat usage_usec",
            "/proc/PID/task/*/schedstat (live threads)",
        )
        assert cost["alloc_source"] == "expvar memstats TotalAlloc and Mallocs"
    assert not cost["cpu_coarse"]
    per_request = _cost(trial)
    # 200 SHA-256 rounds and a JSON response: tens of µs, a few KB, tens of objects
    assert 5e-6 < per_request["cpu_seconds"] < 2e-3, per_request
    assert 1000 < per_request["alloc_bytes"] < 64_000, per_request
    assert 5 < per_request["alloc_objects"] < 1000, per_request
    # the CPU profile of the window, for "where the cost goes"
    profile = pprof.load(run.out / trial["cpu_profile"])
    assert profile.value_index("cpu") == 1 and profile.samples
    # the console names the costliest function (a syscall leaf can outweigh the pricing);
    # summary.md and report.html list the top ones
    assert "CPU per request" in run.stdout
    assert "go tool pprof -top trial-1/cpu-measure.pb.gz" in run.stdout
    summary = (run.out / "summary.md").read_text()
    assert "Where the cost goes" in summary and "main.priceWork" in summary
    html = (run.out / "report.html").read_text()
    assert "Where the cost goes" in html and 'id="flame-cpu"' in html


def test_compare_names_the_functions_a_cpu_and_an_allocation_regression_changed(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    """CPU=100 doubles the pricing work (main.priceWork) and ALLOC=16KiB adds garbage in
    main.renderAudit: both cost comparisons fail, and each diff names its function first."""
    repo = tmp_path / "repo"
    shutil.copytree(SAMPLE, repo / "svc")
    svc = repo / "svc"
    # latency of short trials is not gated here (see test_baseline_integration)
    extra = "trials: 5\ncompare: {block: 1s}\nthresholds:\n  p95_latency: {max_increase: null}\n"
    write_config(svc / "leakgate.yml", warmup="1s", duration="3s", extra=extra)
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    main_go = svc / "main.go"
    text = main_go.read_text()
    for old, new in (
        ('parseCPU(getenv("CPU"))', 'parseCPU("100")'),
        ('parseAlloc(getenv("ALLOC"))', 'parseAlloc("16KiB")'),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    main_go.write_text(text)
    run = run_gate(
        ["compare", "--base", "HEAD", str(svc), "--env", marker],
        tmp_path / "out",
        command="compare",
    )
    assert run.returncode == 1, run.output
    cases = run.junit_cases()
    assert cases["cpu_per_request_vs_baseline"] == "failure", run.output
    assert cases["alloc_bytes_per_request_vs_baseline"] == "failure", run.output
    verdict = json.loads((run.out / "verdict.json").read_text())
    profiles = {p["kind"]: p for p in verdict["costs"]["profiles"]}
    assert profiles["cpu"]["sites"][0]["function"] == "main.priceWork", profiles["cpu"]["sites"]
    assert profiles["alloc"]["sites"][0]["function"] == "main.renderAudit"
    renders = profiles["alloc"]["sites"][0]
    assert renders["candidate"] - (renders["baseline"] or 0) > 15 * 1024  # bytes per request
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["cpu_per_request_vs_baseline"]["evidence"][0].startswith("where: main.priceWork")
    assert checks["alloc_bytes_per_request_vs_baseline"]["evidence"][0].startswith(
        "where: main.renderAudit"
    )
    assert "go tool pprof -diff_base" in run.stdout
    html = (run.out / "report.html").read_text()
    assert 'id="flame-cpu"' in html and 'id="flame-alloc"' in html
