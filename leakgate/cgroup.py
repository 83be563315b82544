"""cgroup v2 helpers for the process holder (leakgate.procs): where leakgate may make cgroups,
who is in one, and removing one."""

from __future__ import annotations

import os
import time
from pathlib import Path

_CGROUP_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_REMOVE_SECONDS = 2.0


def cgroup_base() -> Path | None:
    """leakgate's own cgroup in a cgroup v2 hierarchy, if it may make cgroups in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if own is None:
        return None
    for mount in _CGROUP_MOUNTS:
        base = mount / own.lstrip("/")
        if (mount / "cgroup.controllers").is_file() and os.access(base, os.W_OK | os.X_OK):
            return base
    return None


def cgroup_pids(path: Path) -> list[int]:
    try:
        text = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(w) for w in text.split() if w.isdigit() and int(w) > 0]


def remove_cgroup(path: Path) -> None:
    """rmdir, once its killed members are gone (bounded); a cgroup left is harmless, and the
    next run removes it."""
    deadline = time.monotonic() + _REMOVE_SECONDS
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
