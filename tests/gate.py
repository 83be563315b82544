"""Helpers to run the real `leakgate check` as a subprocess and inspect what it left behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from junitparser import JUnitXml

from .conftest import REPO

# Short trials keep the sample on its fast path: its simulated 10 ms stock lookup would cut the
# requests of a 3 s trial tenfold, and the leak checks need requests, not wall time.
SHORT_CONFIG = """\
service:
  ready_path: /healthz
  ready_timeout: 20s
  env: {{STOCK_LATENCY: 0s}}
load:
  warmup: {warmup}
  duration: {duration}
  connections: 8
  rate: auto
  requests:
    - {{method: GET, path: "/products/{{seq}}", weight: 3}}
    - {{method: POST, path: /orders, body: '{{"sku": "sku-{{seq}}", "qty": 2}}', weight: 1}}
probes:
  interval: 250ms
"""


@dataclass
class GateRun:
    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def junit_failures(self) -> dict[str, str]:
        """testcase name -> failure message, for the failing cases."""
        xml = JUnitXml.fromfile(str(self.out / "junit.xml"))
        return {
            case.name: case.result[0].message
            for suite in xml
            for case in suite
            if case.result and type(case.result[0]).__name__ == "Failure"
        }

    def junit_cases(self) -> dict[str, str]:
        """testcase name -> 'passed' | 'failure' | 'error' | 'skipped'."""
        xml = JUnitXml.fromfile(str(self.out / "junit.xml"))
        cases = {}
        for suite in xml:
            for case in suite:
                kind = type(case.result[0]).__name__.lower() if case.result else "passed"
                cases[case.name] = kind
        return cases


def write_config(
    path: Path, warmup: str = "2s", duration: str = "8s", extra: str = "", tool: str = "builtin"
) -> Path:
    text = SHORT_CONFIG.format(warmup=warmup, duration=duration) + extra
    if tool == "wrk":  # wrk runs closed loop only
        text = text.replace("  rate: auto\n", "  tool: wrk\n")
    path.write_text(text)
    return path


def gate_command(*args: str, command: str = "check") -> list[str]:
    if args and args[0] == command.split()[0]:
        args = args[1:]
    return [sys.executable, "-m", "leakgate", *command.split(), *args]


def run_gate(
    args: list[str],
    out: Path | None,
    timeout: float = 240,
    command: str = "check",
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> GateRun:
    """Run leakgate; `out` None leaves the report directory to its default (./.leakgate)."""
    out_args = ["--out", str(out)] if out is not None else []
    proc = subprocess.run(
        gate_command(*args, *out_args, command=command),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    return GateRun(proc.returncode, proc.stdout, proc.stderr, out or cwd / ".leakgate")


def start_gate(args: list[str], out: Path, command: str = "check") -> subprocess.Popen[str]:
    return subprocess.Popen(
        gate_command(*args, "--out", str(out), command=command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def processes_with_env(marker: str) -> list[int]:
    """PIDs of live processes whose environment contains `marker` (e.g. LEAKGATE_TEST_RUN=...)."""
    pids = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and ") Z " not in stat:
            pids.append(int(entry.name))
    return pids


# The reports a judged run writes, whatever went wrong (report.html may be what failed).
JUDGED = ("run.json", "verdict.json", "junit.xml", "summary.md")


def started_by(out: Path) -> list[int]:
    """Processes whose command line names the report directory (the load generator's -out)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(out).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def assert_fault(run: GateRun, exit_code: int, message: str, *, judged: bool) -> None:
    """What every case of the fault catalogue asserts: the exit code, a message matching
    `message` (in the output or summary.md), the reports written if `judged` (none if not),
    and no process left that names the report directory."""
    summary = run.out / "summary.md"
    text = run.output + (summary.read_text() if summary.exists() else "")
    assert run.returncode == exit_code, run.output
    assert re.search(message, text), f"{message!r} not in:\n{text}"
    if judged:
        missing = [name for name in JUDGED if not (run.out / name).exists()]
        assert missing == [], f"reports not written: {missing}\n{run.output}"
        json.loads((run.out / "run.json").read_text())  # complete, parseable
    else:
        assert not any((run.out / name).exists() for name in JUDGED), run.output
    assert started_by(run.out) == []


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def kill_leftovers(marker: str) -> None:
    for pid in processes_with_env(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def go_module(root: Path, main_go: str, name: str = "example.com/faulty") -> Path:
    """A throwaway Go main package for fault tests."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "go.mod").write_text(f"module {name}\n\ngo 1.21\n")
    (root / "main.go").write_text(textwrap.dedent(main_go))
    return root


def git(repo: Path, *args: str) -> str:
    """git in `repo` as a test user; its output, stripped."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip()


def screenshot(chromium: str, page: Path, width: int, height: int) -> Any:
    """The page as headless Chromium draws it: an RGB array of height x width, 0..1."""
    import matplotlib.image

    shot = page.with_suffix(".png")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={page.parent / 'chromium-profile'}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return matplotlib.image.imread(str(shot))[:, :, :3]
