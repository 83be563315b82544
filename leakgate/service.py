"""The service under test, behind one protocol (ServiceUnderTest): here, the one leakgate starts
as a process (its own process group on 127.0.0.1, readiness, crash watch, log capture, and a stop
that leaves nothing behind on any exit path); in leakgate.remote, one it attaches to."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from leakgate.errors import ServiceStartError
from leakgate.procs import describe_escaped, log_tail, spawn, stop_group

if TYPE_CHECKING:
    from leakgate.probes import RuntimeSource

LOG_TAIL_LINES = 20
LOG_TAIL_BYTES = 1024 * 1024
_CRASH = ("panic: ", "fatal error: ", "runtime: out of memory")
# Heap-profile sampling for services with the agent: one sample per 64 KiB allocated rather than
# Go's 512 KiB, so a leak of a few hundred KiB shows in the profiles with its site. The extra
# stack walks cost well under 1% CPU at the sample service's allocation rate.
MEM_PROFILE_RATE = 64 * 1024


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ServiceUnderTest(Protocol):
    """What a trial loads and probes: a Service leakgate started for the trial, or the
    remote.RemoteService it attached to. Use as a context manager: it is stopped on every path."""

    addr: str  # host:port, as shown
    base_url: str  # where the load goes
    log_path: Path
    # leakgate did not start it: it has no local process, and the one service serves every
    # trial, so one seen up in an earlier trial that stops answering died under the gate's watch
    attached: bool

    @property
    def pid(self) -> int | None:
        """The local process (None when attached)."""

    @property
    def env(self) -> Mapping[str, str]:
        """The environment it was started with ({} when attached)."""

    def __enter__(self) -> ServiceUnderTest: ...

    def __exit__(self, *exc: object) -> None: ...

    def start(self) -> None: ...

    def wait_ready(self, path: str, timeout: float) -> float:
        """Seconds until `path` answered 2xx; ServiceStartError when it does not in time."""

    def exited(self) -> Exit | None:
        """How its process ended, if it has; None while it runs, or with no process to watch."""

    def still_up(self, path: str) -> Exit | None:
        """None while it is up (its process runs; attached: `path` answers 2xx), else how it
        was seen to end."""

    def epoch(self, source: RuntimeSource) -> float | None:
        """A reading that only grows while one process lives (remote.restarted compares two), for a
        service whose process leakgate cannot watch; None when it can."""

    def agent_address(self) -> str | None:
        """The address leakgate's injected agent listens on, if it started."""

    def log_tail(self) -> str:
        """The end of its log, for a failure's details ("" without one)."""

    def stop(self) -> Exit | None:
        """Stop it (attached: nothing to do); how it had ended if it already had."""


class Service:
    """One run of the built service (a ServiceUnderTest). Use as a context manager so it is
    always stopped."""

    attached = False

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
        notes: list[str] | None = None,
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
            self.env["LEAKGATE_AGENT_DUMP_DIR"] = str(log_path.parent)
        self.cwd = cwd
        self.log_path = log_path
        self.cpus = cpus
        self.stop_timeout = stop_timeout
        self.notes = notes if notes is not None else []  # what the stop found, for the reports
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

    def still_up(self, path: str) -> Exit | None:
        return self.exited()  # its process is watched: no need to ask `path`

    def epoch(self, source: RuntimeSource) -> float | None:
        return None  # a restart would be a new process: exited() tells

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
        return crash_excerpt(log_tail(self.log_path, LOG_TAIL_BYTES).splitlines(), lines)

    def stop(self) -> Exit | None:
        if self.proc is None:
            return None
        already = self.exited()
        escaped = stop_group(self.proc, self.stop_timeout)
        if escaped:
            self.notes.append(describe_escaped(escaped))
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
    from leakgate import redirects  # redirects are followed on the target only

    opener = redirects.opener()
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
            last_problem = redirects.describe(e)
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
