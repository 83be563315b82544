"""The service under test as a process: its own process group on 127.0.0.1, readiness, crash
watch, log capture, and a stop that leaves nothing behind on any exit path."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from leakgate.errors import ServiceStartError

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 1024 * 1024
_CRASH = ("panic: ", "fatal error: ", "runtime: out of memory")
# Heap-profile sampling for services with the agent: one sample per 64 KiB allocated rather than
# Go's 512 KiB, so a leak of a few hundred KiB shows in the profiles with its site. The extra
# stack walks cost well under 1% CPU at the sample service's allocation rate.
MEM_PROFILE_RATE = 64 * 1024
_PR_SET_PDEATHSIG = 1

# Process groups started by leakgate and not yet reaped: a second Ctrl-C or an exit hook kills
# them without waiting for the orderly stop. No lock: a signal handler reads it, and set.add,
# set.discard and copying a set are atomic under the GIL.
_live_groups: set[int] = set()


def register_group(pgid: int) -> None:
    _live_groups.add(pgid)


def unregister_group(pgid: int) -> None:
    _live_groups.discard(pgid)


def kill_all_groups() -> None:
    """SIGKILL every process group leakgate started. Safe to call from a signal handler."""
    for pgid in set(_live_groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def child_setup(cpus: Sequence[int] | None) -> None:
    """Runs in the child between fork and exec: pin CPUs, die with leakgate."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    stdout: int | object,
    stderr: int | object,
    cpus: Sequence[int] | None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (session), registered for emergency cleanup."""
    proc = subprocess.Popen(
        list(argv),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,
        preexec_fn=lambda: child_setup(cpus),
    )
    register_group(proc.pid)
    return proc


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the whole group, wait up to `timeout`, then SIGKILL what is left; reap."""
    pgid = proc.pid
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
    finally:
        # Also when an interrupt lands mid-wait: the leader may be gone while children it
        # started live on in its group, so the group is killed before it is forgotten.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        unregister_group(pgid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass(frozen=True, slots=True)
class Exit:
    code: int | None
    signal: str | None
    reason: str = ""  # how a service leakgate did not start was seen to end

    def describe(self) -> str:
        if self.reason:
            return self.reason
        return f"was killed by {self.signal}" if self.signal else f"exited with code {self.code}"


def describe_returncode(rc: int) -> Exit:
    if rc < 0:
        try:
            return Exit(None, signal.Signals(-rc).name)
        except ValueError:
            return Exit(None, f"signal {-rc}")
    return Exit(rc, None)


class Service:
    """One run of the built service. Use as a context manager so it is always stopped."""

    def __init__(
        self,
        binary: Path,
        *,
        args: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        cpus: Sequence[int] | None,
        gomaxprocs: int | None,
        agent: bool,
        stop_timeout: float,
    ) -> None:
        self.binary = binary
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.addr}"
        self.args = [a.replace("{port}", str(self.port)).replace("{addr}", self.addr) for a in args]
        self.env = dict(env)
        self.env["PORT"] = str(self.port)
        if gomaxprocs and "GOMAXPROCS" not in env:
            self.env["GOMAXPROCS"] = str(gomaxprocs)
        # Absolute: the service runs in its own directory, not leakgate's.
        log_path = log_path.resolve()
        self.agent_file = log_path.with_name(log_path.stem + ".agent-addr")
        if agent:
            self.env["LEAKGATE_AGENT_ADDR"] = "127.0.0.1:0"
            self.env["LEAKGATE_AGENT_ADDR_FILE"] = str(self.agent_file)
            self.env["LEAKGATE_AGENT_MEMPROFILERATE"] = str(MEM_PROFILE_RATE)
        self.cwd = cwd
        self.log_path = log_path
        self.cpus = cpus
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.agent_file.unlink()
        with open(self.log_path, "wb") as log:
            try:
                self.proc = spawn(
                    [str(self.binary), *self.args],
                    env=self.env,
                    cwd=self.cwd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cpus=self.cpus,
                )
            except OSError as e:
                raise ServiceStartError(f"cannot start {self.binary}: {e}") from None

    def exited(self) -> Exit | None:
        """The exit of the service's main process, if it has ended."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        return None if rc is None else describe_returncode(rc)

    def wait_ready(self, path: str, timeout: float) -> float:
        """Poll `path` with back-off until it answers 2xx; returns the seconds it took."""
        return wait_until_ready(
            self.base_url, path, timeout, where=self.addr, exited=self.exited, log=self.log_tail
        )

    def agent_address(self, timeout: float = 5.0) -> str | None:
        """The agent's listen address, written by the agent when it starts listening."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = self.agent_file.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text:
                return text
            if self.exited() is not None:
                return None
            time.sleep(0.05)
        return None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The end of the service's log; for a Go crash, from its `panic:` or `fatal error:`
        line on (the goroutine dump after it can run to thousands of lines)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - LOG_TAIL_BYTES))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return crash_excerpt(data.splitlines(), lines)

    def stop(self) -> Exit | None:
        if self.proc is None:
            return None
        already = self.exited()
        stop_group(self.proc, self.stop_timeout)
        with contextlib.suppress(FileNotFoundError):
            self.agent_file.unlink()
        return already


def crash_excerpt(log: list[str], lines: int) -> str:
    """The last `lines` lines, or, when the log holds a Go crash, the lines from its first
    line (`panic:`, `fatal error:`) on, so the reason is never cut off by the stack dump."""
    start = next((i for i in range(len(log) - 1, -1, -1) if log[i].startswith(_CRASH)), None)
    if start is None:
        return "\n".join(log[-lines:])
    while start > 0 and log[start - 1].startswith(_CRASH):  # "runtime: out of memory" first
        start -= 1
    return "\n".join(log[start : start + lines])


def wait_until_ready(
    base_url: str,
    path: str,
    timeout: float,
    *,
    where: str,
    exited: Callable[[], Exit | None] = lambda: None,
    log: Callable[[], str] = lambda: "",
) -> float:
    """Poll base_url + path with back-off until it answers 2xx; returns the seconds it took.
    ServiceStartError when the process ends first (`exited`) or `timeout` passes."""
    start = time.monotonic()
    delay = 0.02
    last_problem = "no answer yet"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        ended = exited()
        if ended is not None:
            raise ServiceStartError(
                f"the service {ended.describe()} before it became ready", details=log()
            )
        try:
            with opener.open(base_url + path, timeout=2.0) as resp:
                if 200 <= resp.status < 300:
                    return time.monotonic() - start
                last_problem = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last_problem = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last_problem = str(getattr(e, "reason", e))
        elapsed = time.monotonic() - start
        if elapsed >= timeout:
            raise ServiceStartError(
                f"the service was not ready after {timeout:g}s: GET {path} on {where} "
                f"gave {last_problem}",
                details=log(),
            )
        time.sleep(min(delay, max(0.0, timeout - elapsed)))
        delay = min(delay * 1.5, 0.5)
