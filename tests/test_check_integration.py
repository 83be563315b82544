"""`leakgate check` end to end: the real Go toolchain, the real sample service over loopback,
the real load generator. Each test asserts the exit code, the JUnit, and that nothing is left
running."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .gate import (
    GateRun,
    go_module,
    processes_with_env,
    run_gate,
    start_gate,
    wait_for,
    write_config,
)
from .sample_leaks import LEAK_HOLDERS

pytestmark = [pytest.mark.go, pytest.mark.slow]

LEAK_CHECKS = {
    "globalmap": {"retained_per_request"},
    "goroutine": {"goroutine_growth"},
    "keyedcache": {"retained_per_request"},
    "unclosed": {"goroutine_growth"},
    "context": {"retained_per_request"},
    "subslice": {"retained_per_request"},
    "queue": {"retained_per_request"},
    "timer": {"retained_per_request"},
}

# The function each leak is in, as the reports must name it first, and the check whose JUnit
# message must name it. An unclosed body's goroutines belong to net/http, so that check names
# the connection loop; the heap site still names the function.
LEAK_SITES = {
    "globalmap": ("main.leakGlobalMap", "retained_per_request", "main.leakGlobalMap"),
    "goroutine": ("main.leakBlockedGoroutine", "goroutine_growth", "main.leakBlockedGoroutine"),
    "keyedcache": ("main.leakKeyedCache", "retained_per_request", "main.leakKeyedCache"),
    "unclosed": ("main.leakUnclosedBody", "goroutine_growth", "persistConn"),
    "context": ("main.leakContext", "retained_per_request", "main.leakContext"),
    "subslice": ("main.leakSubslice", "retained_per_request", "main.leakSubslice"),
    "queue": ("main.leakQueue", "retained_per_request", "main.leakQueue"),
    "timer": ("main.leakTimer", "retained_per_request", "main.leakTimer"),
}


def _check(tmp_path: Path, marker: str, *env: str, config_extra: str = "") -> GateRun:
    config = write_config(tmp_path / "leakgate.yml", extra=config_extra)
    args = [str(SAMPLE), "--config", str(config), "--env", marker]
    for item in env:
        args += ["--env", item]
    return run_gate(args, tmp_path / "out")


@pytest.mark.parametrize("mode", ["", "boundedcache"])
def test_clean_and_bounded_cache_pass(go_bin: str, tmp_path: Path, marker: str, mode: str) -> None:
    run = _check(tmp_path, marker, f"LEAK={mode}")
    assert run.returncode == 0, run.output
    cases = run.junit_cases()
    assert cases["retained_per_request"] == "passed"
    assert cases["goroutine_growth"] == "passed"
    assert cases["service_alive"] == "passed"
    record = json.loads((run.out / "run.json").read_text())
    trial = record["trials"][0]
    assert trial["load"]["requests"] > 1000
    assert trial["checkpoints"]["drain"]["heap_alloc"] > 0
    assert len(trial["series"]["heap_live"]["points"]) >= 20
    assert (run.out / trial["checkpoints"]["drain"]["heap_profile"]).read_bytes()[:2] == b"\x1f\x8b"
    assert record["environment"]["go_version"].startswith("go")
    # the heap dumps were taken, then dropped: no leak failed, and a dump is heap-sized
    drain = trial["checkpoints"]["drain"]
    assert drain["heap_dump_pause"] > 0 and drain["heap_dump"] is None
    assert not list(run.out.rglob("*.heapdump")) and not list(run.out.rglob("symbols.txt"))


@pytest.mark.parametrize("mode", sorted(LEAK_CHECKS))
def test_each_leak_fails_the_gate(go_bin: str, tmp_path: Path, marker: str, mode: str) -> None:
    run = _check(tmp_path, marker, f"LEAK={mode}")
    assert run.returncode == 1, run.output
    cases = run.junit_cases()
    failing = {name for name, kind in cases.items() if kind == "failure"}
    assert LEAK_CHECKS[mode] <= failing, (failing, run.output)
    assert "FAIL" in run.stdout.splitlines()[0]
    function, check, in_message = LEAK_SITES[mode]
    message = run.junit_failures()[check]
    assert "top leak sites: 1) " in message and in_message in message, message
    summary = (run.out / "summary.md").read_text()
    where = summary.split("### Where it leaks", 1)[1]
    first_site = next(line for line in where.splitlines() if line.startswith("| 1 |"))
    assert function in first_site, where
    assert "go tool pprof -diff_base trial-1/" in where
    assert "top leak site: " in run.stdout
    kind, name, words = LEAK_HOLDERS[mode]
    verdict = json.loads((run.out / "verdict.json").read_text())
    first = verdict["leak_sites"]["holders"][0]
    assert (first["kind"], first["name"][: len(name)]) == (kind, name), first
    assert first["growth"] > 256 * 1024 and first["trials"] == 1
    assert cases["service_alive"] == "passed"  # the dumps did not stop it
    assert words in first["description"], first["description"]
    assert "Kept alive by" in where and f"| 1 | {name}" in where.replace("\\", "")
    assert "held by: +" in run.stdout and "kept alive by" in message
    drain = json.loads((run.out / "run.json").read_text())["trials"][0]["checkpoints"]["drain"]
    dump = (run.out / drain["heap_dump"]).read_bytes()
    assert dump.startswith(b"go1.7 heap dump\n") and drain["heap_dump_pause"] > 0


def test_build_failure_exits_5_with_compiler_message(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    svc = go_module(tmp_path / "broken", "package main\n\nfunc main() {\n\tundefinedThing()\n}\n")
    run = run_gate([str(svc), "--env", marker], tmp_path / "out")
    assert run.returncode == 5, run.output
    assert "undefined: undefinedThing" in run.stderr
    cases = run.junit_cases()
    assert cases == {"build_failed": "error"}
    assert "undefined: undefinedThing" in (run.out / "junit.xml").read_text()


def test_service_exiting_before_ready_exits_5_with_code_and_log(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    svc = go_module(
        tmp_path / "dies",
        """\
        package main

        import (
        \t"fmt"
        \t"os"
        )

        func main() {
        \tfmt.Println("config error: DATABASE_URL is not set")
        \tos.Exit(3)
        }
        """,
    )
    run = run_gate([str(svc), "--env", marker], tmp_path / "out")
    assert run.returncode == 5, run.output
    assert "exited with code 3 before it became ready" in run.stderr
    assert "DATABASE_URL is not set" in run.stderr


def test_service_never_ready_exits_5_after_the_limit(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    svc = go_module(
        tmp_path / "unready",
        """\
        package main

        import (
        \t"net/http"
        \t"os"
        )

        func main() {
        \thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
        \t\thttp.Error(w, "warming up", http.StatusServiceUnavailable)
        \t})
        \t_ = http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
        }
        """,
    )
    (svc / "leakgate.yml").write_text("service:\n  ready_timeout: 2s\n")
    started = time.monotonic()
    run = run_gate([str(svc), "--env", marker], tmp_path / "out")
    assert run.returncode == 5, run.output
    assert "not ready after 2s" in run.stderr and "HTTP 503" in run.stderr
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("load:\n  duration: [5s\n", "leakgate.yml:2:"),
        ("load:\n  duraton: 5s\n", "leakgate.yml:2:3: load.duraton: unknown key"),
        ("load:\n  connections: lots\n", "leakgate.yml:2:16: load.connections: expected a whole"),
    ],
)
def test_bad_config_exits_4_and_starts_nothing(
    tmp_path: Path, marker: str, text: str, expected: str
) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text(text)
    run = run_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    assert run.returncode == 4, run.output
    assert expected in run.stderr
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_sigint_during_load_exits_2_with_reports(go_bin: str, tmp_path: Path, marker: str) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="30s")
    proc = start_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    try:
        wait_for(lambda: (tmp_path / "out/trial-1/heap-warmup.pb.gz").exists(), 120, "warm-up")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, stdout + stderr
    assert "INTERRUPTED" in stdout
    record = json.loads((tmp_path / "out/run.json").read_text())
    assert record["interrupted"] is True
    assert "interrupted" in GateRun(2, stdout, stderr, tmp_path / "out").junit_cases()
    assert processes_with_env(marker) == []


def test_service_killed_during_load_fails_service_alive(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="20s")
    proc = start_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    try:
        wait_for(lambda: (tmp_path / "out/trial-1/heap-warmup.pb.gz").exists(), 120, "warm-up")
        time.sleep(1.5)
        victims = processes_with_env(marker)
        assert victims, "the service is not running"
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    run = GateRun(proc.returncode, stdout, stderr, tmp_path / "out")
    assert run.returncode == 1, run.output
    assert run.junit_cases()["service_alive"] == "failure"
    assert "killed by SIGKILL during measure" in run.stdout


@pytest.mark.parametrize(
    ("mode", "expected", "probes", "source"),
    [
        ("", 0, "", "pprof+expvar"),
        ("globalmap", 1, "", "pprof+expvar"),
        ("", 0, "probes: {source: prometheus}\n", "prometheus"),
        ("globalmap", 1, "probes: {source: prometheus}\n", "prometheus"),
    ],
)
def test_without_agent_uses_the_services_own_endpoints(
    go_bin: str, tmp_path: Path, marker: str, mode: str, expected: int, probes: str, source: str
) -> None:
    """pprof + expvar by default; the Prometheus /metrics (client_golang names) on request."""
    config = write_config(tmp_path / "leakgate.yml")
    text = config.read_text().replace(
        "  ready_timeout: 20s\n", "  ready_timeout: 20s\n  inject_agent: false\n"
    )
    config.write_text(text.replace("probes:\n  interval: 250ms\n", "") + probes)
    run = run_gate(
        [str(SAMPLE), "--config", str(config), "--env", marker, "--env", f"LEAK={mode}"],
        tmp_path / "out2",
    )
    assert run.returncode == expected, run.output
    record = json.loads((run.out / "run.json").read_text())
    assert record["trials"][0]["checkpoints"]["drain"]["source"] == source
    assert record["environment"]["heap_live_source"] == source
    assert len(record["trials"][0]["series"]["heap_live"]["points"]) >= 5
    if expected:
        assert "retained_per_request" in run.junit_failures()


@pytest.mark.parametrize(("mode", "expected"), [("", 0), ("globalmap", 1)])
def test_check_with_wrk(
    go_bin: str, wrk: str, tmp_path: Path, marker: str, mode: str, expected: int
) -> None:
    config = write_config(tmp_path / "leakgate.yml", tool="wrk")
    run = run_gate(
        [str(SAMPLE), "--config", str(config), "--env", marker, "--env", f"LEAK={mode}"],
        tmp_path / "out",
    )
    assert run.returncode == expected, run.output
    record = json.loads((run.out / "run.json").read_text())
    assert record["trials"][0]["load"]["tool"] == "wrk"
    assert record["trials"][0]["load"]["requests"] > 1000


def test_wrk_missing_exits_5_with_install_hint(go_bin: str, tmp_path: Path, marker: str) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "go").symlink_to(go_bin)
    config = write_config(tmp_path / "leakgate.yml", tool="wrk")
    run = run_gate(
        [str(SAMPLE), "--config", str(config), "--env", marker],
        tmp_path / "out",
        timeout=120,
        env={**os.environ, "PATH": str(bindir)},
    )
    assert run.returncode == 5, run.output
    assert "wrk is not installed" in run.stderr and "apt-get install wrk" in run.stderr


def test_default_relative_report_dir(go_bin: str, tmp_path: Path, marker: str) -> None:
    """With no --out, reports go to ./.leakgate of the working directory, whichever directory
    the service runs in."""
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="3s")
    run = run_gate([str(SAMPLE), "--config", str(config), "--env", marker], None, cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert (tmp_path / ".leakgate" / "junit.xml").is_file()
    assert (tmp_path / ".leakgate" / "trial-1" / "heap-drain.pb.gz").is_file()
