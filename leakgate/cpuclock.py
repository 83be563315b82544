"""A local service's CPU time read from outside, at fine resolution, for services without the
agent (the agent reads its own getrusage, which is better still: it counts exited threads).

`/proc/PID/stat` counts in clock ticks (10 ms), too coarse for a handler of a few µs. The
kernel's own run-time counters are nanosecond-precise: the service's own cgroup's `cpu.stat`
(`usage_usec`, every thread and child the process ever had), where leakgate gave it a cgroup
(see procs.py), else the sum of each live thread's `/proc/PID/task/TID/schedstat` (run time in
ns; threads that already exited are missing, which a Go service rarely has).
"""

from __future__ import annotations

from pathlib import Path

from leakgate.procs import CGROUP_PREFIX

_PROC = Path("/proc")
_CGROUP_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
CGROUP_SOURCE = "cgroup cpu.stat usage_usec"
SCHEDSTAT_SOURCE = "/proc/PID/task/*/schedstat (live threads)"


def read(pid: int) -> tuple[float, str] | None:
    """(CPU seconds, user + system, since the process started; where it was read), or None."""
    if pid <= 0:
        return None
    cgroup = own_cgroup(pid)
    if cgroup is not None:
        usage = cgroup_usage(cgroup)
        if usage is not None:
            return usage, CGROUP_SOURCE
    total = schedstat_seconds(pid)
    return (total, SCHEDSTAT_SOURCE) if total is not None else None


def own_cgroup(pid: int) -> Path | None:
    """The cgroup v2 directory leakgate made for this process alone, if it has one."""
    try:
        lines = (_PROC / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), "")
    if not path.rsplit("/", 1)[-1].startswith(CGROUP_PREFIX):
        return None  # shared with other processes: its usage is not the service's
    for mount in _CGROUP_MOUNTS:
        candidate = mount / path.lstrip("/")
        if (candidate / "cpu.stat").is_file():
            return candidate
    return None


def cgroup_usage(cgroup: Path) -> float | None:
    try:
        text = (cgroup / "cpu.stat").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec" and value.strip().isdigit():
            return int(value) / 1e6
    return None


def schedstat_seconds(pid: int) -> float | None:
    """The sum of the run time (ns) of each of the process's live threads, in seconds."""
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return None
    total_ns = 0
    read_any = False
    for task in tasks:
        try:
            first = (task / "schedstat").read_text().split(maxsplit=1)[0]
        except (OSError, IndexError):
            continue  # the thread exited between the listing and the read
        if first.isdigit():
            total_ns += int(first)
            read_any = True
    return total_ns / 1e9 if read_any else None
