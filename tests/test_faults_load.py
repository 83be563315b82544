"""The fault catalogue, continued: interrupted load, readiness and probes that would follow a
redirect off the target, and the agent's port answering a page in the developer's browser.

Same style as test_faults.py: the real `leakgate` command, its exit code, its message, the
reports, and no process left behind.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leakgate import interrupted, runner
from leakgate.build import build_service, find_go
from leakgate.measure import LoadInterrupted
from leakgate.model import Checkpoint, LoadResult
from leakgate.service import Service

from .conftest import REPO, SAMPLE
from .fakes import expvar, fake_config, fake_service, redirect
from .gate import (
    GateRun,
    assert_fault,
    gate_command,
    processes_with_env,
    run_gate,
    start_gate,
    started_by,
    wait_for,
    write_config,
)

# The agent's contract with leakgate's probes (leakgate/agent/leakgate_agent.go).
AGENT_TOKEN_ENV = "LEAKGATE_AGENT_TOKEN"
AGENT_TOKEN_HEADER = "X-Leakgate-Token"

# -- item 3: a signal in the measure window: judged on what was measured ---------------------


class _Lines:
    """A running gate's stderr, read line by line on a thread so a test can wait for one."""

    def __init__(self, gate: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert gate.stderr is not None
        stream = gate.stderr
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line)

    def has(self, pattern: str) -> bool:
        return any(re.search(pattern, line) for line in list(self.lines))

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def _interrupt_in_measure_window(
    tmp_path: Path, marker: str, sig: signal.Signals, *, tool: str = "builtin"
) -> tuple[GateRun, float]:
    # 23 h: the measure window only ends by the signal (the config caps it at 24 h).
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="23h", tool=tool)
    out = tmp_path / "out"
    gate = start_gate([str(SAMPLE), "--config", str(config), "--env", marker], out)
    stderr = _Lines(gate)
    try:
        # The first progress line of the measure window comes 5 s into it (not a terminal).
        wait_for(lambda: stderr.has(r"measure\s+\d"), 180, "the measure window's progress")
        assert processes_with_env(marker), "the service is not running"
        sent = time.monotonic()
        gate.send_signal(sig)
        gate.wait(timeout=30)
        took = time.monotonic() - sent
        assert gate.stdout is not None
        stdout = gate.stdout.read()
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.wait(timeout=10)
    return GateRun(gate.returncode, stdout, stderr.text(), out), took


def _assert_judged_what_was_measured(run: GateRun, took: float, tool: str) -> None:
    assert_fault(run, 2, r"INTERRUPTED", judged=True)
    record = json.loads((run.out / "run.json").read_text())
    assert record["interrupted"] is True
    (trial,) = record["trials"]
    load = trial["load"]
    assert load is not None, "the measured load was lost"
    assert load["tool"] == tool
    assert load["requests"] > 1000 and load["ok"] > 1000, load
    assert 4 < load["duration_s"] < 60, load["duration_s"]  # the window run, not 23 h
    assert load["achieved_rate"] > 0
    assert trial["series"]["heap_live"]["points"], "the heap series was lost"
    notes = " ".join(trial["notes"])
    assert re.search(r"interrupted \d+\.\d s into the measure window", notes), notes
    verdict = json.loads((run.out / "verdict.json").read_text())
    assert verdict["status"] == "interrupted"
    judged = {c["name"]: c["status"] for c in verdict["checks"]}
    # The drain checkpoint is taken only if it comes within 2.5 s, which a loaded 2-CPU runner
    # may miss: then the run says it skipped it (and the checks have no drain to judge).
    if "drain" in trial["checkpoints"]:
        # judged, not "no data": "warn" is a verdict too (a window too short to resolve it)
        assert judged.get("retained_per_request") in ("pass", "fail", "warn"), judged
        assert judged.get("goroutine_growth") in ("pass", "fail", "warn"), judged
        assert "no drain checkpoint" not in notes, notes
    else:
        assert re.search(r"no drain checkpoint after the interrupt \(.+\)", notes), notes
    for cp in trial["checkpoints"].values():  # every profile a checkpoint names is in place
        for key in ("heap_profile", "goroutine_profile", "goroutine_text"):
            if cp.get(key):
                assert (run.out / cp[key]).is_file(), (key, cp[key])
    assert "no request completed" not in run.output + (run.out / "summary.md").read_text()
    summary = (run.out / "summary.md").read_text()
    assert "into the measure window" in summary
    # Bounded: the generator's grace (1 s) and the drain checkpoint (2.5 s at most) add little;
    # the rest is writing reports, slow on a loaded 2-CPU runner (test_faults has the 5 s case).
    assert took < 15, f"took {took:.1f}s to stop"


@pytest.mark.go
@pytest.mark.slow
def test_sigterm_in_the_measure_window_judges_what_was_measured(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    run, took = _interrupt_in_measure_window(tmp_path, marker, signal.SIGTERM)
    _assert_judged_what_was_measured(run, took, "builtin")
    assert processes_with_env(marker) == []


@pytest.mark.go
@pytest.mark.slow
def test_sigint_in_the_measure_window_with_wrk_keeps_wrks_summary(
    go_bin: str, wrk: str, tmp_path: Path, marker: str
) -> None:
    run, took = _interrupt_in_measure_window(tmp_path, marker, signal.SIGINT, tool="wrk")
    _assert_judged_what_was_measured(run, took, "wrk")
    assert processes_with_env(marker) == []


class _UpService:
    """Stands in for a service that is still up after the interrupt."""

    pid = None

    def exited(self) -> None:
        return None


def _interrupted_state() -> tuple[runner._TrialState, LoadInterrupted]:
    load = LoadResult(
        tool="builtin", mode="closed", connections=1, target_rate=0, duration_s=5, requests=9, ok=9
    )
    state = runner._TrialState(index=0)
    state.trial = dataclasses.replace(state.trial, load=load)
    return state, LoadInterrupted("cut", load, 5.0)


def test_a_late_drain_checkpoint_writes_nothing_the_reports_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interrupted, "DRAIN_SECONDS", 0.2)
    report_dir, trial_dir = tmp_path / "out", tmp_path / "out" / "trial-1"
    trial_dir.mkdir(parents=True)
    state, cut = _interrupted_state()
    go_on, finished = threading.Event(), threading.Event()
    scratch: list[Path] = []

    def slow_take(name: str, quiet: float, into: Path, notes: list[str]) -> Checkpoint:
        scratch.append(into)
        go_on.wait(10)  # the wait has given up by now
        (into / f"heap-{name}.pb.gz").write_bytes(b"late")
        notes.append(f"{name}: heap profile not taken: late")
        finished.set()
        return Checkpoint(label=name, heap_profile=str(into / f"heap-{name}.pb.gz"))

    runner._after_interrupt(state, cut, _UpService(), slow_take, trial_dir, report_dir)  # type: ignore[arg-type]
    notes_then = list(state.notes)
    go_on.set()
    assert finished.wait(10)
    for thread in threading.enumerate():
        if thread.name == "leakgate-drain":
            thread.join(10)
    assert "drain" not in state.checkpoints
    assert state.notes == notes_then, "the late thread wrote to the trial's notes"
    assert any(
        re.search(r"no drain checkpoint after the interrupt \(.*skipped", n) for n in notes_then
    )
    assert list(trial_dir.iterdir()) == [], "the late thread wrote into the trial directory"
    (into,) = scratch
    assert not into.is_relative_to(report_dir)
    assert not into.exists(), "the late thread left its scratch directory behind"


def test_a_drain_checkpoint_in_time_is_moved_into_the_trial_directory(tmp_path: Path) -> None:
    report_dir, trial_dir = tmp_path / "out", tmp_path / "out" / "trial-1"
    trial_dir.mkdir(parents=True)
    state, cut = _interrupted_state()
    scratch: list[Path] = []

    def take(name: str, quiet: float, into: Path, notes: list[str]) -> Checkpoint:
        scratch.append(into)
        (into / f"heap-{name}.pb.gz").write_bytes(b"heap")
        (into / f"goroutine-{name}.txt").write_bytes(b"goroutine profile: total 3\n")
        notes.append(f"{name}: goroutine profile not taken: no such thing")
        return Checkpoint(
            label=name,
            heap_alloc=1,
            heap_profile=str(into / f"heap-{name}.pb.gz"),
            goroutine_text=str(into / f"goroutine-{name}.txt"),
        )

    runner._after_interrupt(state, cut, _UpService(), take, trial_dir, report_dir)  # type: ignore[arg-type]
    drain = state.checkpoints["drain"]
    assert drain.heap_alloc == 1
    assert (drain.heap_profile, drain.goroutine_text, drain.goroutine_profile) == (
        "trial-1/heap-drain.pb.gz",
        "trial-1/goroutine-drain.txt",
        None,
    )
    assert (report_dir / "trial-1" / "heap-drain.pb.gz").read_bytes() == b"heap"
    assert "drain: goroutine profile not taken: no such thing" in state.notes
    assert not any("no drain checkpoint" in n for n in state.notes), state.notes
    (into,) = scratch
    assert not into.exists()


# -- item 11: a redirect off the target is never followed -----------------------------------


def test_readiness_does_not_follow_a_redirect_off_the_target(tmp_path: Path) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config(ready="2s"))
    with fake_service() as elsewhere:  # healthy, but not the service under test
        routes = {"/healthz": redirect(elsewhere + "/healthz")}
        with fake_service(routes) as url:
            run = run_gate(["--config", str(config), "--target", url], tmp_path / "out")
    assert run.returncode == 5, run.output
    assert "ready on" not in run.output
    assert re.search(
        r"not ready after 2s: GET /healthz on .* gave HTTP 302 to http://127\.0\.0\.1:\d+/healthz "
        r"\(off the target: not followed\)",
        run.output,
    ), run.output
    assert started_by(run.out) == []


def test_readiness_follows_a_redirect_on_the_target_itself(tmp_path: Path) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config())
    with fake_service(
        {"/healthz": redirect("/ready"), "/ready": lambda: (200, "text/plain", b"ok")}
    ) as url:
        run = run_gate(["--config", str(config), "--target", url], tmp_path / "out")
    assert_fault(run, 0, r"PASS", judged=True)


def test_probes_do_not_follow_a_redirect_off_the_target(tmp_path: Path) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config())
    asked: list[str] = []

    def counted() -> tuple[int, str, bytes]:
        asked.append("/debug/vars")
        return 200, "application/json", expvar()

    with fake_service({"/debug/vars": counted}) as elsewhere:
        routes = {"/debug/vars": redirect(elsewhere + "/debug/vars")}
        with fake_service(routes) as url:
            run = run_gate(["--config", str(config), "--target", url], tmp_path / "out")
        assert asked == [], "leakgate followed the redirect off the target"
        # What it refused was valid expvar data: the redirect alone made it fail.
        conn = http.client.HTTPConnection(elsewhere.removeprefix("http://"), timeout=10)
        try:
            conn.request("GET", "/debug/vars")
            resp = conn.getresponse()
            status, body = resp.status, resp.read()
        finally:
            conn.close()
    assert status == 200 and "HeapAlloc" in json.loads(body)["memstats"], body[:200]
    assert_fault(
        run, 5, r"/debug/vars: HTTP 302 to http://127\.0\.0\.1:\d+/debug/vars", judged=True
    )


# -- item 12: the agent answers only loopback Host headers and leakgate's token -------------


@pytest.fixture(scope="module")
def agent_sample(go_bin: str) -> Path:
    return build_service(SAMPLE, (), True, find_go())


@pytest.fixture
def agent_service(agent_sample: Path, tmp_path: Path, marker: str) -> Iterator[tuple[str, str]]:
    """The sample built with the agent, started as leakgate starts it: (agent address, token)."""
    name, value = marker.split("=", 1)
    token = "t0k3n-" + os.urandom(8).hex()
    svc = Service(
        agent_sample,
        args=(),
        env={"PATH": "/usr/bin:/bin", name: value, AGENT_TOKEN_ENV: token, "STOCK_LATENCY": "0s"},
        cwd=tmp_path,
        log_path=tmp_path / "service.log",
        cpus=None,
        gomaxprocs=None,
        agent=True,
        stop_timeout=5.0,
    )
    with svc:
        svc.start()
        addr = svc.agent_address(timeout=20)
        assert addr is not None, svc.log_tail()
        yield addr, token


def _get(addr: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        for key, value in headers.items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.go
@pytest.mark.slow
def test_agent_refuses_a_rebound_host_and_a_missing_token(
    agent_service: tuple[str, str],
) -> None:
    addr, token = agent_service
    port = addr.rsplit(":", 1)[1]
    good = {AGENT_TOKEN_HEADER: token}
    for path in ("/debug/pprof/goroutine?debug=2", "/leakgate/metrics", "/debug/pprof/heap"):
        # a page at evil.example rebound to 127.0.0.1: the browser sends its own Host
        status, body = _get(addr, path, {"Host": f"evil.example:{port}", **good})
        assert status == 403, (path, status, body[:200])
        assert b"goroutine " not in body
        status, body = _get(addr, path, {"Host": f"127.0.0.1:{port}"})  # no token
        assert status == 403, (path, status, body[:200])
        status, _ = _get(addr, path, {"Host": f"127.0.0.1:{port}", AGENT_TOKEN_HEADER: "wrong"})
        assert status == 403
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        status, body = _get(addr, "/debug/pprof/goroutine?debug=2", {"Host": host, **good})
        assert status == 200 and b"goroutine " in body, (host, status)


@pytest.mark.go
@pytest.mark.slow
def test_a_gate_run_reads_the_agent_with_its_token(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="4s")
    out = tmp_path / "out"
    tokens = set()
    with (tmp_path / "stdout").open("w+") as stdout, (tmp_path / "stderr").open("w+") as stderr:
        gate = subprocess.Popen(
            gate_command(str(SAMPLE), "--config", str(config), "--env", marker, "--out", str(out)),
            stdout=stdout,
            stderr=stderr,
            text=True,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )
        try:
            # The token leakgate gives each service process, read from its environment.
            deadline = time.monotonic() + 240
            while gate.poll() is None and time.monotonic() < deadline:
                tokens.update(_env_values(processes_with_env(marker), AGENT_TOKEN_ENV))
                time.sleep(0.05)
            gate.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if gate.poll() is None:
                gate.kill()
                gate.wait(timeout=10)
        stdout.seek(0)
        stderr.seek(0)
        run = GateRun(gate.returncode, stdout.read(), stderr.read(), out)
    assert_fault(run, 0, r"PASS", judged=True)
    record = json.loads((run.out / "run.json").read_text())
    assert record["environment"]["heap_live_source"] != "", record["environment"]
    assert record["trials"][0]["checkpoints"]["drain"]["source"] == "agent"
    assert "agent" not in " ".join(record["trials"][0]["notes"]), record["trials"][0]["notes"]
    assert tokens, "no service process with an agent token was seen"
    assert all(len(token) >= 32 for token in tokens), tokens
    files = [path for path in run.out.rglob("*") if path.is_file()]
    assert any(path.name == "run.json" for path in files)
    for token in tokens:
        assert token not in run.output, "the agent token is on the console"
        for path in files:  # never reported, logged or saved with a profile
            assert token.encode() not in path.read_bytes(), f"the agent token is in {path}"


def _env_values(pids: list[int], name: str) -> set[str]:
    """The values of `name` in these processes' environments (those still readable)."""
    found = set()
    prefix = name.encode() + b"="
    for pid in pids:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(prefix) and len(entry) > len(prefix):
                found.add(entry[len(prefix) :].decode())
    return found
