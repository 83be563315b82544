"""The two kinds of service under test answer the runner's questions the same way: a Service
leakgate started (its process watched) and a RemoteService it attached to (its ready path asked,
its runtime's epoch compared)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from leakgate import remote
from leakgate.procs import log_tail
from leakgate.remote import RemoteService, Target
from leakgate.service import Exit, Service

from .fakes import fake_service


class _Source:
    """Stands in for a RuntimeSource: only its epoch is read."""

    def __init__(self, epoch: float | None) -> None:
        self.asked = 0
        self._epoch = epoch

    def epoch(self) -> float | None:
        self.asked += 1
        return self._epoch


def _started(tmp_path: Path, script: str) -> Service:
    return Service(
        Path("/bin/sh"),
        args=("-c", script),
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        log_path=tmp_path / "service.log",
        cpus=None,
        gomaxprocs=None,
        agent=False,
        stop_timeout=2.0,
    )


def test_a_started_service_is_up_while_its_process_runs(tmp_path: Path) -> None:
    svc = _started(tmp_path, "echo serving; sleep 60")
    source = _Source(7.0)
    with svc:
        svc.start()
        assert not svc.attached and svc.pid is not None
        # what the runner reads back (GOMAXPROCS for the record): the env it was started with
        assert svc.env["PATH"] == "/usr/bin:/bin" and svc.env["PORT"] == str(svc.port)
        assert svc.still_up("/healthz") is None
        assert svc.epoch(source) is None and source.asked == 0  # its process is watched instead
    assert svc.still_up("/healthz") is not None  # stopped: killed by the stop


def test_a_started_service_that_exits_is_not_up(tmp_path: Path) -> None:
    svc = _started(tmp_path, "echo 'panic: boom'; exit 3")
    with svc:
        svc.start()
        deadline = time.monotonic() + 10
        while svc.exited() is None:
            assert time.monotonic() < deadline, "the shell did not exit"
            time.sleep(0.01)
        assert svc.still_up("/healthz") == svc.exited() == Exit(3, None)
        assert svc.log_tail() == "panic: boom"


def test_an_attached_service_is_up_while_its_ready_path_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote, "ALIVE_TIMEOUT", 0.5)
    with fake_service() as url:
        svc = RemoteService(Target(url, url), tmp_path / "service.log")
        with svc:
            svc.start()
            assert svc.attached and svc.pid is None and dict(svc.env) == {}
            assert svc.exited() is None and svc.agent_address() is None and svc.log_tail() == ""
            assert svc.still_up("/healthz") is None
            ended = svc.still_up("/missing")
            assert ended is not None and ended.reason.startswith("stopped answering")
            source = _Source(123.0)
            assert svc.epoch(source) == 123.0 and source.asked == 1
    assert "leakgate did not start this service" in (tmp_path / "service.log").read_text()


def test_log_tail_reads_the_end_of_a_log(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    log.write_bytes(b"first\n" + b"x" * 100 + b"\nlast \xff\n")
    assert log_tail(log, 8) == "\nlast \ufffd\n"
    assert log_tail(log, 10_000).startswith("first\n")
    assert log_tail(tmp_path / "missing.log", 100) == ""
