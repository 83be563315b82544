"""Runs the bundled Go load generator (leakgate/load/loadgen) and reads its JSON result."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from leakgate.config import RequestSpec
from leakgate.errors import LoadError
from leakgate.load import LoadPlan
from leakgate.model import HISTOGRAM_GROWTH, Histogram, LoadResult, SecondStat
from leakgate.procs import helper_thread, signal_and_wait, spawn, stop_group

MAX_RESULT_BYTES = 64 * 1024 * 1024
STOP_GRACE = 1.0  # after a stop, how long the generator's requests in flight may take


def write_scenario(requests: Sequence[RequestSpec], path: Path) -> None:
    scenario = {
        "requests": [
            {
                "method": r.method,
                "path": r.path,
                "headers": dict(r.headers),
                "body": r.body,
                "weight": r.weight,
                "expect_status": r.expect_status,
            }
            for r in requests
        ]
    }
    path.write_text(json.dumps(scenario, indent=1))


class LoadProcess:
    """One run of the generator (a LoadDriver): closed loop when the plan's rate is 0, else open
    loop at that rate."""

    def __init__(self, plan: LoadPlan, *, binary: Path, scenario: Path, connections: int) -> None:
        self.out_path = plan.out_path
        self.duration = plan.duration
        self.timeout = plan.timeout
        self.argv = [
            str(binary),
            "-target",
            plan.target,
            "-scenario",
            str(scenario),
            "-connections",
            str(connections),
            "-duration",
            f"{plan.duration:.3f}s",
            "-rate",
            f"{plan.rate:.3f}",
            "-timeout",
            f"{plan.timeout:.3f}s",
            "-out",
            str(plan.out_path),
            "-progress",
            "-stop-grace",
            f"{STOP_GRACE:.3f}s",
        ]
        self.cpus = plan.cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress: dict[str, Any] = {}
        self.stderr_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self.out_path.unlink(missing_ok=True)
        try:
            env = {"PATH": "/usr/bin:/bin"}
            if self.cpus:
                env["GOMAXPROCS"] = str(len(self.cpus))
            self.proc = spawn(
                self.argv,
                env=env,
                cwd=None,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cpus=self.cpus,
            )
        except OSError as e:
            raise LoadError(f"cannot start the load generator: {e}") from None
        assert self.proc.stderr is not None
        self._reader = helper_thread(
            self._read_stderr, args=(self.proc.stderr,), name="leakgate-loadgen"
        )
        self._reader.start()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    self.progress = data
                    continue
            if len(self.stderr_lines) < 200:
                self.stderr_lines.append(line)

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def deadline(self) -> float:
        """Seconds after start by which the generator must have finished."""
        return self.duration + self.timeout + 15.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 2.0)
        if self._reader is not None:
            self._reader.join(timeout=2)

    def interrupt(self, timeout: float = STOP_GRACE + 2.0) -> LoadResult | None:
        """End the window now: the generator stops sending, lets requests in flight finish
        (STOP_GRACE), and writes the result of the window it ran. None if it could not."""
        proc = self.proc
        if proc is None:
            return None
        signal_and_wait(proc, signal.SIGTERM, timeout)
        try:
            return self.result()
        except LoadError:
            return None

    def result(self) -> LoadResult:
        rc = self.poll()
        if self._reader is not None:
            self._reader.join(timeout=5)
        if rc != 0:
            message = "; ".join(self.stderr_lines[-3:]) or f"exit code {rc}"
            raise LoadError(f"the load generator failed: {message}")
        try:
            text = self.out_path.read_text()
        except OSError as e:
            raise LoadError(f"the load generator wrote no result: {e}") from None
        return parse_result(text)


def parse_result(text: str) -> LoadResult:
    """Read the generator's JSON (schema_version 1) into a LoadResult; LoadError if malformed."""
    if len(text) > MAX_RESULT_BYTES:
        raise LoadError("load generator result is too large")
    try:
        data = json.loads(text, parse_constant=lambda c: None)
    except ValueError as e:
        raise LoadError(f"load generator result is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("schema_version") != 1:
        raise LoadError("load generator result has an unknown schema")
    try:
        lat = data.get("latency") or {}
        buckets = tuple((int(i), int(c)) for i, c in lat.get("buckets") or [] if int(c) > 0)
        histogram = Histogram(
            growth=float(lat.get("growth", HISTOGRAM_GROWTH)),
            buckets=tuple(sorted(buckets)),
            count=int(lat.get("count", 0)),
            min_ns=int(lat.get("min", 0)),
            max_ns=int(lat.get("max", 0)),
            sum_ns=int(lat.get("sum", 0)),
        )
        seconds = tuple(
            SecondStat(
                t=int(s["t"]),
                requests=int(s.get("requests", 0)),
                errors=int(s.get("errors", 0)),
                p50=_ns(s.get("p50_ns")),
                p95=_ns(s.get("p95_ns")),
                p99=_ns(s.get("p99_ns")),
            )
            for s in data.get("seconds") or []
        )
        errors = {str(k): int(v) for k, v in (data.get("errors") or {}).items()}
        return LoadResult(
            tool="builtin",
            mode=str(data.get("mode", "closed")),
            connections=int(data.get("connections", 0)),
            target_rate=_finite(data.get("target_rate")),
            duration_s=_finite(data.get("duration_s")),
            requests=int(data.get("requests", 0)),
            ok=int(data.get("ok", 0)),
            errors=errors,
            status_codes={str(k): int(v) for k, v in (data.get("status_codes") or {}).items()},
            achieved_rate=_finite(data.get("achieved_rate")),
            planned=int(data.get("planned", 0)),
            latency=histogram,
            seconds=seconds,
            first_error=str(data.get("first_error") or "")[:500],
        )
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise LoadError(f"load generator result is malformed: {e!r}") from None


def _ns(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value) / 1e9
    return None


def _finite(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0
