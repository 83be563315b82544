"""Spawning and stopping process trees: a holder that keeps every descendant.

Every process leakgate starts (the service, the load generator, go build) gets its own process
group and a marker in its environment, LEAKGATE_RUN_ID=<owner>:<n>, which its descendants
inherit: <owner> is "<leakgate pid>-<its start time>", so a marker outlives neither a
recycled pid nor the run that set it. leakgate is also a child subreaper (Linux
PR_SET_CHILD_SUBREAPER), so a daemon that detaches (`setsid`, double fork) becomes leakgate's
child rather than init's. From that:

- stop_group() ends a process's group, and also every process that carries its marker (or
  descends from it) but left the group; those are returned, to be reported;
- kill_all() kills everything this run started, from a signal handler or an exit hook;
- kill_stale() / remove_stale_dirs() are the next run's cleanup after a leakgate killed with
  SIGKILL: processes and build directories whose owner is no longer alive.

Where a cgroup v2 hierarchy is writable (root, or a delegated subtree; on a cgroup v1 host its
/sys/fs/cgroup/unified), each spawned process also gets its own cgroup, leakgate-<owner>-<n>,
which holds every descendant whatever it does to its environment or parentage. Without one,
the marker and the subreaper do the work; without /proc (not Linux), only process groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

RUN_ENV = "LEAKGATE_RUN_ID"
BUILD_PREFIX = "leakgate-build-"
WORKTREE_PREFIX = "leakgate-worktree-"
CGROUP_PREFIX = "leakgate-"
_CGROUP_MOUNTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_REAP_SECONDS = 2.0
_MAX_LISTED = 5  # processes named in one note; the rest are counted
# "<prefix><pid>-<start time>-<random>": a directory named for the run that made it.
_OWNED_NAME = re.compile(r"(\d+)-(\d+)-")


@dataclass(frozen=True, slots=True)
class Proc:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    argv: tuple[str, ...]
    marker: str  # its LEAKGATE_RUN_ID, "" when it has none

    @property
    def command(self) -> str:
        text = " ".join(self.argv) or "?"
        return text if len(text) <= 80 else text[:77] + "..."


def start_time(pid: int) -> int | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def owner_tag(pid: int | None = None) -> str:
    """`<pid>-<start time>`: names a run (this one by default) unambiguously."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{start_time(pid) or 0}"


def owner_alive(pid: int, started: int) -> bool:
    if pid == os.getpid():
        return True
    now = start_time(pid)
    if now is None:  # gone, or no /proc to tell: trust the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return started == 0 or now == started


def _owner_of(marker: str) -> tuple[int, int] | None:
    head = marker.split(":", 1)[0]
    pid, _, started = head.partition("-")
    if not (pid.isdigit() and started.isdigit()):
        return None
    return int(pid), int(started)


def snapshot() -> list[Proc]:
    """Every process this user can see, with its marker; [] without /proc."""
    out = []
    needle = RUN_ENV.encode() + b"="
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    me = os.getpid()
    for name in entries:
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("utf-8", "replace")
            fields = stat.rsplit(")", 1)[-1].split()
            if fields[0] == "Z":
                continue
            marker = ""
            # Another user's environment cannot be read: it has no marker of ours.
            with contextlib.suppress(OSError), open(f"/proc/{name}/environ", "rb") as f:
                for item in f.read().split(b"\0"):
                    if item.startswith(needle):
                        marker = item[len(needle) :].decode("utf-8", "replace")
                        break
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = tuple(a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a)
            out.append(Proc(int(name), int(fields[1]), int(fields[2]), argv, marker))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _tree(table: Iterable[Proc], markers: set[str]) -> list[Proc]:
    """The processes that carry one of `markers`, and their descendants (also those that
    cleared their environment). Never a process by its pid alone: a pid that leakgate reaped
    may belong to anyone by now."""
    table = list(table)
    members = {p.pid for p in table if p.marker and p.marker in markers}
    grew = bool(members)
    while grew:
        grew = False
        for p in table:
            if p.pid not in members and p.ppid in members:
                members.add(p.pid)
                grew = True
    return [p for p in table if p.pid in members]


class _Holder:
    """The run's process groups and markers. One per leakgate process (module level: signal
    handlers and exit hooks reach it). No lock: set.add/discard and copying a set are atomic
    under the GIL, and a signal handler only reads."""

    def __init__(self) -> None:
        self.owner = owner_tag()
        self.groups: dict[int, str] = {}  # pgid -> marker
        self.cgroups: dict[str, Path] = {}  # marker -> its cgroup, where there is one
        self.started = 0
        self.subreaper: bool | None = None
        self.cgroup_base: Path | bool | None = False  # False: not looked for yet

    def next_marker(self) -> str:
        if self.owner.split("-", 1)[0] != str(os.getpid()):  # a fork of leakgate
            self.owner = owner_tag()
        self.started += 1
        return f"{self.owner}:{self.started}"

    def ensure_subreaper(self) -> None:
        if self.subreaper is None:
            self.subreaper = _prctl(_PR_SET_CHILD_SUBREAPER, 1)

    def new_cgroup(self, marker: str) -> Path | None:
        if self.cgroup_base is False:
            self.cgroup_base = cgroup_base()
        if not isinstance(self.cgroup_base, Path):
            return None
        path = self.cgroup_base / f"{CGROUP_PREFIX}{marker.replace(':', '-')}"
        try:
            path.mkdir()
        except OSError:
            self.cgroup_base = None  # not writable after all: markers only, from now on
            return None
        self.cgroups[marker] = path
        return path


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


def _remove_cgroup(path: Path) -> None:
    """rmdir, once its killed members are gone (bounded); a cgroup left is harmless, and the
    next run removes it."""
    deadline = time.monotonic() + _REAP_SECONDS
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


_holder = _Holder()


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def child_setup(cpus: Sequence[int] | None, cgroup: Path | None = None) -> None:
    """Runs in the child between fork and exec: pin CPUs, die with leakgate, join its cgroup."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if cgroup is not None:
        with contextlib.suppress(OSError):
            fd = os.open(cgroup / "cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)


def marked_env(env: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """`env` with a fresh marker of this run, and the marker."""
    marker = _holder.next_marker()
    return {**env, RUN_ENV: marker}, marker


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None,
    stdout: int | object,
    stderr: int | object,
    cpus: Sequence[int] | None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own process group (session), marked and held until stopped."""
    _holder.ensure_subreaper()
    full_env, marker = marked_env(env)
    cgroup = _holder.new_cgroup(marker)
    proc = subprocess.Popen(
        list(argv),
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,
        preexec_fn=lambda: child_setup(cpus, cgroup),
    )
    _holder.groups[proc.pid] = marker
    return proc


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> list[Proc]:
    """SIGTERM the process's group and whatever it started outside the group, wait up to
    `timeout` for the process, then SIGKILL what is left; reap. Returns the processes that had
    left the group (each killed)."""
    pgid = proc.pid
    marker = _holder.groups.get(pgid, "")
    escaped: dict[int, Proc] = {}
    members: dict[int, Proc] = {}

    cgroup = _holder.cgroups.get(marker)

    def look() -> None:
        table = snapshot()
        held = {p.pid for p in _tree(table, {marker} if marker else set())}
        held.update(cgroup_pids(cgroup) if cgroup else ())
        for p in table:
            if p.pid in held and p.pgid != pgid:
                escaped.setdefault(p.pid, p)
        members.update((p.pid, p) for p in table if p.pgid == pgid and p.pid != pgid)

    try:
        look()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            _signal(escaped, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
    finally:
        # Also when an interrupt lands mid-wait: the leader may be gone while children it
        # started live on in its group, so the group is killed before it is forgotten.
        look()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _signal(escaped, signal.SIGKILL)
        _holder.groups.pop(pgid, None)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _reap({**members, **escaped})
    if cgroup is not None:
        _remove_cgroup(cgroup)
        _holder.cgroups.pop(marker, None)
    return sorted(escaped.values(), key=lambda p: p.pid)


def _signal(targets: Mapping[int, Proc], sig: int) -> None:
    for pid in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(killed: Mapping[int, Proc]) -> None:
    """Collect the exit of killed processes that became leakgate's children (it is their
    subreaper), so none stays a zombie; bounded."""
    waiting = set(killed)
    deadline = time.monotonic() + _REAP_SECONDS
    while waiting and time.monotonic() < deadline:
        for pid in list(waiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours: init reaps it
                if start_time(pid) is None or _is_zombie(pid):
                    waiting.discard(pid)
                continue
            if done:
                waiting.discard(pid)
        if waiting:
            time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def kill_all() -> None:
    """SIGKILL everything this run started: every process group, and every process carrying
    this run's marker wherever it went. Safe to call from a signal handler or an exit hook."""
    for pgid in list(_holder.groups):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    if not _holder.started:
        return
    mine = _holder.owner + ":"
    table = snapshot()
    markers = {p.marker for p in table if p.marker.startswith(mine)}
    left = {p.pid: p for p in _tree(table, markers)}
    for cgroup in list(_holder.cgroups.values()):
        left.update((pid, Proc(pid, 0, 0, (), "")) for pid in cgroup_pids(cgroup))
    _signal(left, signal.SIGKILL)
    _holder.groups.clear()


def describe_escaped(escaped: Sequence[Proc], who: str = "the service") -> str:
    n = len(escaped)
    named = ", ".join(f"pid {p.pid} `{p.command}`" for p in escaped[:_MAX_LISTED])
    more = f" and {n - _MAX_LISTED} more" if n > _MAX_LISTED else ""
    noun = "process" if n == 1 else "processes"
    return f"{who} left {n} {noun} outside its process group: {named}{more}; killed"


def _killed_run(pid: int) -> str:
    return f"left by a leakgate run that was killed (pid {pid})"


def kill_stale() -> list[str]:
    """The next run's cleanup: SIGKILL processes whose marker names a leakgate that is gone
    (killed with SIGKILL, so nothing of its own cleanup ran). One note per dead run."""
    by_owner: dict[int, list[Proc]] = {}
    table = snapshot()
    for p in table:
        owner = _owner_of(p.marker) if p.marker else None
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
        _signal({p.pid: p for p in found}, signal.SIGKILL)
        n = len(found)
        named = ", ".join(f"pid {p.pid} `{p.command}`" for p in found[:_MAX_LISTED])
        more = f" and {n - _MAX_LISTED} more" if n > _MAX_LISTED else ""
        noun = "process" if n == 1 else "processes"
        if n:
            notes.append(f"killed {n} {noun} {_killed_run(pid)}: {named}{more}")
    for _, cgroup in stale_cgroups:
        _remove_cgroup(cgroup)
    return notes


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
    None when it is not a dead run's, or not this user's, or not named by leakgate."""
    if not path.name.startswith(prefix):
        return None
    m = _OWNED_NAME.match(path.name[len(prefix) :])
    if m is None:
        return None
    try:
        if path.is_symlink() or path.lstat().st_uid != os.getuid():
            return None
    except OSError:
        return None
    pid, started = int(m.group(1)), int(m.group(2))
    return None if owner_alive(pid, started) else pid


def build_dir_prefix() -> str:
    """The prefix of this run's temporary build directories."""
    return f"{BUILD_PREFIX}{_holder.owner}-"


def worktree_dir_prefix() -> str:
    return f"{WORKTREE_PREFIX}{_holder.owner}-"


def remove_stale_dirs(tmp: Path | None = None) -> list[str]:
    """The next run's cleanup: build directories that a leakgate killed mid-build left in the
    temporary directory. Only directories named for a run that is gone, never another's."""
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
        _make_removable(path)
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            notes.append(f"removed the build directory {path} {_killed_run(pid)}")
    return notes


def _make_removable(path: Path) -> None:
    # A module copied from the module cache, or Go's own work files, may be read-only.
    for dirpath, _, _ in os.walk(path):
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o755)


def clean_stale() -> list[str]:
    """What leakgate runs killed with SIGKILL left on this machine: processes, build dirs."""
    try:
        return [*kill_stale(), *remove_stale_dirs()]
    except OSError as e:  # cleanup must never stop a run
        if e.errno in (errno.EACCES, errno.EPERM):
            return []
        return [f"could not look for what earlier leakgate runs left: {e}"]
