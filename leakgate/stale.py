"""The next run's cleanup after a leakgate killed with SIGKILL, when none of its own cleanup
ran: processes that carry the marker of a run that is gone, its cgroups, and the build
directories named for it (worktrees: leakgate.gitref). Never what is another user's, what a
live run holds (its directories' flock, also seen from another pid namespace), or what
leakgate did not name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from pathlib import Path

from leakgate.cgroup import cgroup_base, cgroup_pids, remove_cgroup
from leakgate.procs import (
    BUILD_PREFIX,
    CGROUP_PREFIX,
    MAX_LISTED,
    OWNED_NAME,
    WORKTREE_PREFIX,
    Proc,
    dir_is_held,
    owner_alive,
    owner_of,
    send,
    snapshot,
)


def killed_run(pid: int) -> str:
    return f"left by a leakgate run that was killed (pid {pid})"


def kill_stale() -> list[str]:
    """SIGKILL this user's processes whose marker names a leakgate that is gone (killed with
    SIGKILL, so nothing of its own cleanup ran). One note per dead run."""
    by_owner: dict[int, list[Proc]] = {}
    table = [p for p in snapshot() if _same_user(p.pid)]
    for p in table:
        owner = owner_of(p.marker) if p.marker else None
        if owner is not None and _same_pid_namespace(p.pid) and not owner_alive(*owner):
            by_owner.setdefault(owner[0], []).append(p)
    stale_cgroups = _stale_cgroups()
    by_pid = {p.pid: p for p in table}
    for pid, cgroup in stale_cgroups:
        found = by_owner.setdefault(pid, [])
        seen = {p.pid for p in found}
        found += [by_pid[m] for m in cgroup_pids(cgroup) if m in by_pid and m not in seen]
    notes = []
    for pid, found in sorted(by_owner.items()):
        found = [p for p in found if send(p, signal.SIGKILL)]
        n = len(found)
        named = ", ".join(f"pid {p.pid} `{p.command}`" for p in found[:MAX_LISTED])
        more = f" and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
        noun = "process" if n == 1 else "processes"
        if n:
            notes.append(f"killed {n} {noun} {killed_run(pid)}: {named}{more}")
    for _, cgroup in stale_cgroups:
        remove_cgroup(cgroup)
    return notes


def _same_user(pid: int) -> bool:
    """Root reads every user's environment: another user's marked processes are not ours."""
    try:
        return os.stat(f"/proc/{pid}").st_uid == os.getuid()
    except OSError:
        return False


def _stale_cgroups() -> list[tuple[int, Path]]:
    """(owner pid, cgroup) for the cgroups of leakgate runs that are gone."""
    base = cgroup_base()
    if base is None:
        return []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    found = []
    for path in entries:
        pid = owned_dir_owner(path, CGROUP_PREFIX)
        if pid is not None and not path.name.startswith((BUILD_PREFIX, WORKTREE_PREFIX)):
            found.append((pid, path))
    return found


def _same_pid_namespace(pid: int) -> bool:
    """Whether `pid` counts pids as leakgate does: a marker written in a container names a pid
    of the container's namespace, which means nothing out here. Unknown: not ours to kill."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink("/proc/self/ns/pid")
    except OSError:
        return False


def owned_dir_owner(path: Path, prefix: str) -> int | None:
    """The pid of the dead leakgate run that made `path` (named <prefix><pid>-<start>-...),
    None when it is not a dead run's, or not this user's, or not named by leakgate, or held
    by a live run (whose pid, in another pid namespace, may look dead here)."""
    if not path.name.startswith(prefix):
        return None
    m = OWNED_NAME.match(path.name[len(prefix) :])
    if m is None:
        return None
    try:
        if path.is_symlink() or path.lstat().st_uid != os.getuid():
            return None
    except OSError:
        return None
    pid, started = int(m.group(1)), int(m.group(2))
    if owner_alive(pid, started) or dir_is_held(path):
        return None
    return pid


def remove_stale_dirs(tmp: Path | None = None) -> list[str]:
    """Build directories that a leakgate killed mid-build left in the temporary directory. Only
    directories named for a run that is gone, never another's."""
    root = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    notes = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for path in entries:
        pid = owned_dir_owner(path, BUILD_PREFIX)
        if pid is None or not path.is_dir():
            continue
        make_removable(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            notes.append(f"removed the build directory {path} {killed_run(pid)}")
    return notes


def make_removable(path: Path) -> None:
    # A module copied from the module cache, or Go's own work files, may be read-only. Only
    # the owner's bits: the tree is about to go, nobody else needs to read it meanwhile.
    for dirpath, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)


def clean_stale() -> list[str]:
    """What leakgate runs killed with SIGKILL left on this machine: processes, build dirs."""
    try:
        return [*kill_stale(), *remove_stale_dirs()]
    except OSError as e:  # cleanup must never stop a run
        if e.errno in (errno.EACCES, errno.EPERM):
            return []
        return [f"could not look for what earlier leakgate runs left: {e}"]
