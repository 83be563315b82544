"""Attach mode (`--target URL`): a service leakgate did not build or start.

It runs elsewhere (staging, a Kubernetes port-forward): leakgate loads it and probes it over
HTTP, and cannot see its process. What needs a local process is reported as unavailable (RSS,
the exit of the process); whether it stayed up is judged by its ready path still answering
after each trial.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from leakgate.errors import ServiceStartError, UsageError
from leakgate.service import Exit, wait_until_ready

if TYPE_CHECKING:
    from leakgate.probes import RuntimeSource

ALIVE_TIMEOUT = 5.0  # how long the ready path may take to answer after a trial


@dataclass(frozen=True, slots=True)
class Target:
    url: str  # where the load goes, e.g. http://127.0.0.1:8080
    probe_url: str  # where pprof / expvar / /metrics answer (default: url)


def parse_target(url: str, probe_url: str | None = None) -> Target:
    """Validate --target (and --probe-url): http(s), a host, no query or fragment."""
    for flag, value in (("--target", url), ("--probe-url", probe_url)):
        if value is None:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{flag} {value!r}: want an http(s) URL with a host")
        if parts.username or parts.password:
            raise UsageError(f"{flag}: no credentials in the URL (they would land in reports)")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number in range
        except ValueError:
            raise UsageError(
                f"{flag} {value!r}: the port is not a number from 1 to 65535"
            ) from None
        if parts.query or parts.fragment:
            raise UsageError(f"{flag} {value!r}: no query or fragment (the config sets paths)")
    base = url.rstrip("/")
    return Target(base, (probe_url or base).rstrip("/"))


class RemoteService:
    """A service that is already running, as a ServiceUnderTest."""

    attached = True
    pid: int | None = None

    def __init__(self, target: Target, log_path: Path) -> None:
        self.target = target
        self.base_url = target.url
        self.addr = urlsplit(target.url).netloc
        self.log_path = log_path
        self.env: Mapping[str, str] = {}  # not started by leakgate: no environment of ours

    def __enter__(self) -> RemoteService:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(
            f"attached to {self.target.url} (probes at {self.target.probe_url}): "
            "leakgate did not start this service and has no log of it\n"
        )

    def wait_ready(self, path: str, timeout: float) -> float:
        return wait_until_ready(self.base_url, path, timeout, where=self.target.url)

    def still_up(self, path: str) -> Exit | None:
        """None while `path` answers 2xx; else how the service was seen to end."""
        try:
            wait_until_ready(self.base_url, path, ALIVE_TIMEOUT, where=self.target.url)
        except ServiceStartError as e:
            return Exit(None, None, reason=f"stopped answering ({e.message})")
        return None

    def exited(self) -> Exit | None:
        return None  # no process to watch: still_up() asks after each trial

    def epoch(self, source: RuntimeSource) -> float | None:
        return source.epoch()

    def agent_address(self, timeout: float = 0.0) -> str | None:
        return None

    def log_tail(self, lines: int = 0) -> str:
        return ""

    def stop(self) -> Exit | None:
        return None


def restarted(before: float | None, after: float | None) -> Exit | None:
    """A restart between two readings of a counter that only grows while one process lives
    (RuntimeSource.epoch): an orchestrator that restarted a crashed service behind the URL
    must not pass for a service that stayed up, nor its fresh heap for a leak-free one."""
    if before is None or after is None or after >= before:
        return None
    return Exit(
        None,
        None,
        reason="was restarted during the trial (its allocation counter went back): "
        "it crashed and something else started it again",
    )
