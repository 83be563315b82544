"""The fault catalogue: bad input and broken services never lose results or leave processes.

Every case runs the real `leakgate` command and asserts four things: the exit code DESIGN.md
documents, a message that names what is wrong, that the reports of what was judged were
written (or, for input refused before anything started, that nothing was), and that no
process it started is still running (tests/gate.py's assert_fault). Probe faults use a
stand-in service (tests/fakes.py, with its fake_config) in attach mode, so a broken endpoint is
exactly what the case says; process faults use the real sample service. More fault tests live
beside the features they exercise (build failure, exit before ready, SIGINT once, SIGKILL under
load: test_check_integration.py; wrk: test_wrk.py). The catalogue continues in
tests/test_faults_*.py, one module per kind of fault: report paths and the user's files
(paths), input validated up front (input), processes and leftovers (procs), interrupted load
and the agent's surface (load), parser limits and secrets (limits).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .factories import profile_bytes
from .fakes import Route, fake_config, fake_service
from .gate import (
    GateRun,
    assert_fault,
    processes_with_env,
    run_gate,
    start_gate,
    started_by,
    wait_for,
    write_config,
)

# -- input refused before anything starts: exit 4, nothing written --------------------------


CONFIG_CASES = {
    "malformed-yaml": (
        "load:\n  duration: [5s\n",
        r"leakgate.yml:2:13: invalid YAML: .*\n\s*duration: \[5s\n\s*\^",
    ),
    "python-tag": (
        "load: !!python/object/apply:os.system ['touch {marker}']\n",
        r"leakgate.yml:1:7: load: rejected: the YAML tag !!python/object/apply:os.system",
    ),
    "duplicate-key": ("load:\n  duration: 5s\n  duration: 6s\n", r"leakgate.yml:3:3: .*duplicate"),
    "unknown-key": (
        "load:\n  duraton: 5s\n",
        r"leakgate.yml:2:3: load.duraton: unknown key.*duration",
    ),
    "unknown-metric": (
        "thresholds:\n  p96_latency: {max: 1s}\n",
        r"leakgate.yml:2:3: thresholds.p96_latency: unknown key.*p95_latency",
    ),
    "wrong-type": (
        "load:\n  connections: lots\n",
        r"leakgate.yml:2:16: load.connections: expected",
    ),
    "out-of-range": ("load:\n  connections: 0\n", r"leakgate.yml:2:16: load.connections"),
    "alias-bomb": (
        "service:\n  args: &a [x, x, x, x, x, x, x, x, x, x]\n"
        "  build_flags: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "  env: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        r"leakgate.yml:2:9: service.build_flags\[0\]: expected a single value",
    ),
    "oversized": ("# " + "x" * (1024 * 1024 + 10) + "\n", r"leakgate.yml: .*(too large|over|MiB)"),
    "nul-character": ("load:\n  duration: 5s\x00\n", r"leakgate.yml: invalid YAML: unacceptable"),
    "null-duration": (
        "load:\n  duration:\n",
        r"leakgate.yml:2:12: load.duration: expected a value",
    ),
    "external-without-command": (
        "load:\n  tool: external\n",
        r"leakgate.yml:2:9: load.command: load.tool external needs the command",
    ),
    "binary-and-command": (
        "service:\n  binary: ./svc\n  command: [svc]\n",
        r"leakgate.yml:3:12: service.command: give binary or command, not both",
    ),
    "agent-into-a-prebuilt-binary": (
        "service:\n  binary: ./svc\n  inject_agent: true\n",
        r"service.inject_agent: cannot be true for a prebuilt binary",
    ),
    "agent-without-agent": (
        "service:\n  inject_agent: false\nprobes:\n  source: agent\n",
        r"probes.source: is agent, but service.inject_agent is false",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_config_is_refused_before_anything_starts(
    case: str, tmp_path: Path, marker: str
) -> None:
    text, message = CONFIG_CASES[case]
    touched = tmp_path / "executed"
    config = tmp_path / "leakgate.yml"
    config.write_text(text.replace("{marker}", str(touched)))
    run = run_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    assert_fault(run, 4, message, judged=False)
    assert not touched.exists()  # a YAML tag is refused, never executed


def test_missing_config_file(tmp_path: Path) -> None:
    run = run_gate([str(SAMPLE), "--config", str(tmp_path / "nope.yml")], tmp_path / "out")
    assert_fault(run, 4, r"nope.yml: config file not found", judged=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"base.json: no baseline there; record one with `leakgate baseline record"),
        ('{"schema_version": 1}}', r"base.json: not a baseline: invalid JSON at line 1"),
        ('{"schema_version": 1, "trials": [', r"base.json: the baseline is truncated"),
        ('{"schema_version": 99, "trials": []}', r"base.json: was written by a newer leakgate"),
    ],
    ids=["missing", "corrupt", "truncated", "newer-schema"],
)
def test_unusable_baseline_is_refused_and_left_alone(
    tmp_path: Path, content: str | None, message: str
) -> None:
    baseline = tmp_path / "base.json"
    if content is not None:
        baseline.write_text(content)
    run = run_gate([str(SAMPLE), "--baseline", str(baseline)], tmp_path / "out", timeout=60)
    assert_fault(run, 4, message, judged=False)
    if content is not None:
        assert baseline.read_text() == content  # never rewritten


def test_unwritable_report_directory_fails_before_the_load(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the report directory should go")
    run = run_gate([str(SAMPLE)], blocker / "out", timeout=60)
    assert run.returncode == 4 and "report directory is not writable" in run.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--load-results", "r.json"], r"--load-results goes with load.tool: external"),
        (["--target", "ftp://x"], r"--target 'ftp://x': want an http\(s\) URL"),
        (["--quick", "--trials", "3"], r"--quick runs one short trial"),
    ],
    ids=["load-results-without-external", "bad-target", "quick-with-trials"],
)
def test_contradictory_flags_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = run_gate([str(SAMPLE), *args], tmp_path / "out", timeout=60)
    assert_fault(run, 4, message, judged=False)


def test_report_of_a_corrupt_run_record(tmp_path: Path) -> None:
    record = tmp_path / "run.json"
    record.write_text('{"schema_version": 1, "trials": [{"index": "one"}]}')
    run = run_gate(["report", str(record)], None, timeout=60, command="report")
    assert run.returncode == 4 and "run.json: not a valid leakgate run record" in run.stderr


# -- broken probe endpoints and services (attach mode on a stand-in): reports always written --


def _body(kind: str, body: bytes, status: int = 200) -> Route:
    return lambda: (status, kind, body)


def _slow() -> tuple[int, str, bytes]:
    time.sleep(2)
    return 200, "application/json", b"{}"


@dataclass
class ProbeFault:
    routes: Mapping[str, Route]
    exit: int
    message: str
    extra: str = ""
    ready: str = "5s"
    judged: bool = True
    args: list[str] = field(default_factory=list)


def _restarting_vars() -> Route:
    """expvar whose TotalAlloc only falls: as if the process behind the URL kept restarting."""
    calls = iter(range(10**9))

    def route() -> tuple[int, str, bytes]:
        total = 10**12 - next(calls) * 10**6
        body = {"memstats": {"HeapAlloc": 4e6, "NextGC": 8e6, "NumGC": 1, "TotalAlloc": total}}
        return 200, "application/json", json.dumps(body).encode()

    return route


HEAP = "/debug/pprof/heap"
PROBE_FAULTS = {
    "heap-profile-html": ProbeFault(
        {HEAP: _body("text/html", b"<!DOCTYPE html><html>502 Bad Gateway</html>")},
        0,
        r"heap profile not taken: heap profile: got HTML",
    ),
    "heap-profile-404": ProbeFault(
        {HEAP: _body("text/plain", b"404 page not found\n", 404)},
        0,
        r"heap profile not taken.*404.*\n.*no pprof endpoint to force a GC",
    ),
    "heap-profile-empty": ProbeFault(
        {HEAP: _body("application/octet-stream", b"")}, 0, r"empty heap profile"
    ),
    "heap-profile-text": ProbeFault(
        {HEAP: _body("text/plain", b"heap profile: 1: 2 [3: 4] @ heap/1048576\n")},
        0,
        r"got a text profile",
    ),
    "heap-profile-truncated-gzip": ProbeFault(
        {
            HEAP: _body(
                "application/octet-stream", gzip.compress(random.Random(1).randbytes(20_000))[:300]
            )
        },
        0,
        r"truncated gzip",
    ),
    "heap-profile-corrupt-protobuf": ProbeFault(
        {HEAP: _body("application/octet-stream", gzip.compress(b"\x0a\xff\xff\xff\xff\x0f"))},
        0,
        r"corrupt protobuf",
    ),
    "goroutine-profile-wrong-type": ProbeFault(
        {
            "/debug/pprof/goroutine": _body(
                "application/octet-stream", profile_bytes([(["main.handle"], [1])], ("x",))
            )
        },
        0,
        # a valid profile of another kind: judged from the counts, its sites left out
        r"PASS(.|\n)*goroutine profile not used: .*no 'goroutine' values",
    ),
    "expvar-nan": ProbeFault(
        {"/debug/vars": _body("application/json", b'{"memstats": {"HeapAlloc": NaN, "NumGC": 1}}')},
        5,
        r"could not judge retained_per_request: no data is never a pass",
    ),
    "expvar-html": ProbeFault(
        {"/debug/vars": _body("text/html", b"<html>login</html>")}, 5, r"/debug/vars: not JSON"
    ),
    "goroutine-count-missing": ProbeFault(
        {"/debug/pprof/goroutine?debug=1": _body("text/plain", b"nothing here\n")},
        5,
        r"could not judge goroutine_growth",
    ),
    "prometheus-malformed-line": ProbeFault(
        {"/metrics": _body("text/plain", b"go_goroutines 6\ngo_memstats_heap_alloc_bytes{ 4\n")},
        5,
        r"/metrics: malformed line 2",
        extra="  source: prometheus\n",
    ),
    "all-responses-5xx": ProbeFault(
        {"/products/": _body("text/plain", b"boom", 503)},
        1,
        r"FAIL\s+error_rate\s+100.00%.*\n.*status",
    ),
    "every-request-times-out": ProbeFault(
        {"/products/": _slow}, 1, r"FAIL\s+error_rate\s+100.00%.*\n.*timeout"
    ),
    "restarted-behind-the-url": ProbeFault(
        {"/debug/vars": _restarting_vars()},
        1,
        r"service_alive\s+the service was restarted during the trial",
    ),
    "never-ready": ProbeFault(
        {"/healthz": _body("text/plain", b"starting", 503)},
        5,
        r"not ready after 2s: GET /healthz on .* gave HTTP 503",
        ready="2s",
        judged=False,
    ),
}


@pytest.mark.parametrize("case", sorted(PROBE_FAULTS))
def test_broken_probe_endpoint_or_service(case: str, tmp_path: Path) -> None:
    fault = PROBE_FAULTS[case]
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config(ready=fault.ready, extra=fault.extra))  # extra: probes
    with fake_service(fault.routes) as url:
        run = run_gate(["--config", str(config), "--target", url, *fault.args], tmp_path / "out")
    if fault.judged:
        assert_fault(run, fault.exit, fault.message, judged=True)
        verdict = json.loads((run.out / "verdict.json").read_text())
        assert verdict["status"] == {0: "pass", 1: "fail", 5: "error"}[fault.exit]
    else:
        assert run.returncode == fault.exit and re.search(fault.message, run.output), run.output
        assert started_by(run.out) == []


def test_service_gone_mid_load_fails_service_alive_with_reports(tmp_path: Path) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config().replace("2s\n", "6s\n", 1))
    with fake_service() as url:
        gate = start_gate(["--config", str(config), "--target", url], tmp_path / "out")
        wait_for((tmp_path / "out/trial-1/heap-warmup.pb.gz").exists, 30, "the warm-up checkpoint")
    out, err = gate.communicate(timeout=120)  # the stand-in is gone: connections refused
    run = GateRun(gate.returncode, out, err, tmp_path / "out")
    assert_fault(run, 1, r"stopped answering", judged=True)


# -- process faults on the real sample service ------------------------------------------------


def _sample_run(tmp_path: Path, marker: str, *env: str, duration: str = "4s") -> GateRun:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration=duration)
    args = [str(SAMPLE), "--config", str(config), "--env", marker]
    for item in env:
        args += ["--env", item]
    return run_gate(args, tmp_path / "out")


@pytest.mark.go
@pytest.mark.slow
def test_port_in_use(go_bin: str, tmp_path: Path, marker: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "leakgate.yml")
        config.write_text(
            config.read_text().replace(
                "  ready_timeout: 20s\n",
                f'  ready_timeout: 20s\n  args: ["-addr", "127.0.0.1:{port}"]\n',
            )
        )
        run = run_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    assert run.returncode == 5, run.output
    assert "address already in use" in run.output
    assert processes_with_env(marker) == []


@pytest.mark.go
@pytest.mark.slow
def test_panic_under_load_fails_service_alive_with_the_panic(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    run = _sample_run(tmp_path, marker, "CRASH_AFTER=15000", duration="8s")
    assert_fault(run, 1, r"service_alive.*exited with code 2 during", judged=True)
    assert "panic: CRASH_AFTER=15000 requests reached" in (run.out / "summary.md").read_text()
    assert "panic: CRASH_AFTER=15000 requests reached" in (run.out / "junit.xml").read_text()
    assert processes_with_env(marker) == []


@pytest.mark.go
@pytest.mark.slow
def test_the_services_children_are_stopped_with_it(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    run = _sample_run(tmp_path, marker, "CHILD=sleep")
    assert_fault(run, 0, r"PASS", judged=True)
    assert "CHILD=sleep: started pid" in (run.out / "trial-1" / "service.log").read_text()
    assert processes_with_env(marker) == []  # `sleep 600` inherited the marker


def _interrupt(
    tmp_path: Path, marker: str, signals: list[signal.Signals], *env: str
) -> tuple[GateRun, float]:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="60s")
    args = [str(SAMPLE), "--config", str(config), "--env", marker]
    for item in env:
        args += ["--env", item]
    gate = start_gate(args, tmp_path / "out")
    try:
        wait_for((tmp_path / "out/trial-1/heap-warmup.pb.gz").exists, 120, "warm-up")
        time.sleep(1)
        sent = time.monotonic()
        for sig in signals:
            gate.send_signal(sig)
            time.sleep(0.5)
        out, err = gate.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    return GateRun(gate.returncode, out, err, tmp_path / "out"), took


@pytest.mark.go
@pytest.mark.slow
def test_sigint_twice_stops_at_once_and_kills_the_children(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    # LEAK=unclosed: the sample's own graceful shutdown then waits 5 s on pinned connections,
    # so the second Ctrl-C lands while leakgate is still stopping it politely.
    run, took = _interrupt(tmp_path, marker, [signal.SIGINT, signal.SIGINT], "LEAK=unclosed")
    assert run.returncode == 2, run.output
    assert "SIGINT: stopping (send again to kill at once)" in run.stderr
    assert took < 5  # not the 5 s the sample's own shutdown would take
    assert processes_with_env(marker) == []


@pytest.mark.go
@pytest.mark.slow
def test_sigterm_cleans_up_within_5s_and_writes_reports(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    run, took = _interrupt(tmp_path, marker, [signal.SIGTERM])
    assert_fault(run, 2, r"INTERRUPTED", judged=True)
    assert took < 5, f"took {took:.1f}s"
    assert processes_with_env(marker) == []


@pytest.mark.go
@pytest.mark.slow
def test_leakgate_killed_takes_the_service_with_it(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="60s")
    gate = start_gate([str(SAMPLE), "--config", str(config), "--env", marker], tmp_path / "out")
    try:
        wait_for((tmp_path / "out/trial-1/heap-warmup.pb.gz").exists, 120, "warm-up")
        assert processes_with_env(marker), "the service is not running"
        os.kill(gate.pid, signal.SIGKILL)
        gate.communicate(timeout=30)
        wait_for(lambda: processes_with_env(marker) == [], 10, "the service to die with leakgate")
        wait_for(lambda: started_by(tmp_path / "out") == [], 10, "the load generator to die")
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()


@pytest.mark.go
@pytest.mark.slow
def test_out_of_memory_under_a_memory_limit_fails_service_alive(
    go_bin: str, prlimit: str, tmp_path: Path, marker: str
) -> None:
    """The service runs under an address-space limit (prlimit, as a container limit would
    cap it) and leaks 1 MiB a request until the Go runtime cannot allocate any more. Built
    without cgo: with it, every OS thread adds ~72 MiB of address space (glibc's malloc arena
    and a pthread stack), so a start that happened to make one thread more than usual ran out
    under the limit before it was ready (1 start in 20 measured); without, a start reserves the
    same 1.27 GB every time."""
    binary = tmp_path / "sample"
    subprocess.run(
        [go_bin, "build", "-o", str(binary), "."],
        cwd=SAMPLE,
        check=True,
        timeout=300,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="4s")
    limited = f'  command: ["{prlimit}", "--as=1500000000", "{binary}"]\n'
    config.write_text(
        config.read_text().replace("  ready_timeout: 20s\n", "  ready_timeout: 20s\n" + limited)
    )
    run = run_gate(
        ["--config", str(config), "--env", marker, "--env", "LEAK=globalmap", "--env",
         "LEAK_BYTES=1048576"],
        tmp_path / "out",
    )  # fmt: skip
    assert_fault(run, 1, r"service_alive\s+the service exited with code 2", judged=True)
    assert "fatal error: out of memory" in (run.out / "junit.xml").read_text()
    assert processes_with_env(marker) == []
