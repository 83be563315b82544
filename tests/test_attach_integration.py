"""Attach mode: `check --target URL` on a sample service leakgate did not start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SAMPLE
from .gate import run_gate, start_gate, wait_for, write_config

pytestmark = [pytest.mark.go, pytest.mark.slow]


@pytest.fixture(scope="module")
def sample_binary(go_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "sample-go-service"
    subprocess.run([go_bin, "build", "-o", str(out), "."], cwd=SAMPLE, check=True, timeout=300)
    return out


class Samples:
    """Sample services started for a test (with its marker in their environment), each on a
    free port; all killed after the test."""

    def __init__(self, binary: Path, marker: str, logs: Path) -> None:
        self.binary, self.marker, self.logs = binary, marker, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, **env: str) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        name, value = self.marker.split("=", 1)
        environ = {**os.environ, "PORT": str(port), "STOCK_LATENCY": "0s", name: value, **env}
        with open(self.logs / f"sample-{port}.log", "wb") as log:
            proc = subprocess.Popen([str(self.binary)], env=environ, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}"
        self.procs[url] = proc
        wait_for(lambda: _answers(url + "/healthz"), 20, f"the sample at {url}")
        return url

    def kill(self, url: str) -> None:
        self.procs[url].send_signal(signal.SIGKILL)

    def close(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def running(sample_binary: Path, marker: str, tmp_path: Path) -> Iterator[Samples]:
    samples = Samples(sample_binary, marker, tmp_path)
    yield samples
    samples.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.mark.parametrize(("mode", "expected"), [("", 0), ("globalmap", 1), ("goroutine", 1)])
def test_attach_gives_the_verdict_build_mode_gives(
    running: Samples, tmp_path: Path, mode: str, expected: int
) -> None:
    url = running.start(LEAK=mode)
    config = write_config(tmp_path / "leakgate.yml")
    run = run_gate(["--config", str(config), "--target", url], tmp_path / "out")
    assert run.returncode == expected, run.output
    record = json.loads((run.out / "run.json").read_text())
    assert record["package"] == url
    trial = record["trials"][0]
    assert trial["checkpoints"]["drain"]["source"] == "pprof+expvar"
    assert trial["rss_peak"] is None and not trial["series"]["rss"]["points"]
    assert any("no local process" in note for note in trial["notes"])
    assert record["environment"]["go_version"] == ""
    cases = run.junit_cases()
    assert cases["service_alive"] == "passed"
    if mode == "globalmap":
        assert "main.leakGlobalMap" in run.junit_failures()["retained_per_request"]
    if mode == "goroutine":
        assert "main.leakBlockedGoroutine" in run.junit_failures()["goroutine_growth"]


def test_attach_with_prometheus_probes_and_an_rss_limit_reported_unavailable(
    running: Samples, tmp_path: Path
) -> None:
    url = running.start(LEAK="globalmap")
    config = write_config(
        tmp_path / "leakgate.yml",
        extra="thresholds:\n  rss_peak: {max: 1GiB}\n",
    )
    config.write_text(
        config.read_text().replace("probes:\n  interval: 250ms\n", "probes: {source: prometheus}\n")
    )
    run = run_gate(
        ["--config", str(config), "--target", url, "--probe-url", url + "/"], tmp_path / "out"
    )
    assert run.returncode == 1, run.output
    assert run.junit_cases()["rss_peak"] == "skipped"  # no data: never a pass
    record = json.loads((run.out / "run.json").read_text())
    assert record["trials"][0]["checkpoints"]["drain"]["source"] == "prometheus"


def test_a_service_that_goes_away_under_load_fails_service_alive(
    running: Samples, tmp_path: Path
) -> None:
    url = running.start()
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="6s")
    gate = start_gate(["--config", str(config), "--target", url], tmp_path / "out")
    try:
        warmed = tmp_path / "out" / "trial-1" / "heap-warmup.pb.gz"
        wait_for(warmed.exists, 60, "the warm-up checkpoint")
        time.sleep(1)
        running.kill(url)
        out, err = gate.communicate(timeout=120)
    finally:
        if gate.poll() is None:
            gate.kill()
    assert gate.returncode == 1, out + err
    verdict = json.loads((tmp_path / "out" / "verdict.json").read_text())
    alive = next(c for c in verdict["checks"] if c["name"] == "service_alive")
    assert alive["status"] == "fail" and "stopped answering" in alive["summary"]


def test_target_must_be_an_http_url(tmp_path: Path) -> None:
    run = run_gate(["--target", "ftp://example.com"], tmp_path / "out", timeout=60)
    assert run.returncode == 4 and "want an http(s) URL" in run.stderr
    run = run_gate(["--probe-url", "http://127.0.0.1:1"], tmp_path / "out", timeout=60)
    assert run.returncode == 4 and "--probe-url goes with --target" in run.stderr


@pytest.mark.parametrize("form", ["binary", "command"])
def test_a_prebuilt_binary_runs_without_a_build_and_probes_its_own_pprof(
    sample_binary: Path, tmp_path: Path, marker: str, form: str
) -> None:
    local = tmp_path / "bin" / "sample"
    local.parent.mkdir()
    local.write_bytes(sample_binary.read_bytes())
    local.chmod(0o755)
    config = write_config(tmp_path / "leakgate.yml")
    key = (
        "binary: bin/sample"
        if form == "binary"
        else f'command: ["{local}", "-addr", "127.0.0.1:{{port}}"]'
    )
    config.write_text(
        config.read_text().replace("  ready_timeout: 20s\n", f"  ready_timeout: 20s\n  {key}\n")
    )
    run = run_gate(
        ["--config", str(config), "--env", marker, "--env", "LEAK=globalmap"], tmp_path / "out"
    )
    assert run.returncode == 1, run.output
    assert "running the prebuilt" in run.stderr and "building" not in run.stderr
    record = json.loads((run.out / "run.json").read_text())
    assert record["trials"][0]["checkpoints"]["drain"]["source"] == "pprof+expvar"
    assert record["environment"]["go_version"].startswith("go1.")
    assert "main.leakGlobalMap" in run.junit_failures()["retained_per_request"]


def test_a_prebuilt_binary_that_is_not_there(tmp_path: Path) -> None:
    config = tmp_path / "leakgate.yml"
    config.write_text("service:\n  binary: ./nope\n")
    run = run_gate(["--config", str(config)], tmp_path / "out", timeout=60)
    assert (
        run.returncode == 4
        and "service.binary:" in run.stderr
        and "not an executable" in run.stderr
    )
