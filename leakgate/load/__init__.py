"""Load drivers: the bundled generator (builtin.py), wrk (wrk.py) and an external tool
(external.py). Each runs one load phase, a LoadPlan, behind the LoadDriver protocol that
leakgate.measure.drive watches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from leakgate.model import LoadResult


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """One load phase as the gate asks for it, whichever tool drives it."""

    target: str  # the service's base URL
    duration: float  # seconds
    rate: float  # requests/s; 0: closed loop, each connection as fast as it is answered
    timeout: float  # seconds a request may take
    out_path: Path  # the driver's output; a log it writes goes beside it
    cpus: Sequence[int] | None  # where the tool may run (None: anywhere)


class LoadDriver(Protocol):
    """A load tool running one LoadPlan: started, polled until it exits (within its deadline),
    read with result() or cut short with interrupt(), and stopped on every path."""

    @property
    def progress(self) -> Mapping[str, Any]:
        """The tool's latest live figures (rate, p95_ns, errors); {} while it reports none."""

    @property
    def deadline(self) -> float:
        """Seconds after start by which the tool must have finished."""

    def start(self) -> None: ...

    def poll(self) -> int | None: ...

    def result(self) -> LoadResult:
        """What the finished run measured; LoadError when it failed or wrote nothing usable."""

    def interrupt(self) -> LoadResult | None:
        """End the run now; what it measured until then, or None when it cannot say."""

    def stop(self) -> None:
        """End the tool and everything it started (also after result())."""
