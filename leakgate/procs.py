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
- leakgate.stale is the next run's cleanup after a leakgate killed with SIGKILL: processes and
  directories whose owner is no longer alive. Each directory a run makes (build and worktree
  directories, cgroups) is held with a shared flock for the run's life (hold_dir), so a live
  run in another pid namespace, whose pid means nothing here, is never taken for a dead one.

A process is signalled only if it is still the one a snapshot saw: its start time is checked
(through a pidfd, where there is one, so the check and the signal name the same process), and a
process group only while its leader is unreaped, since a reaped leader's group id is free.

Where a cgroup v2 hierarchy is writable (root, or a delegated subtree; on a cgroup v1 host its
/sys/fs/cgroup/unified), each spawned process also gets its own cgroup, leakgate-<owner>-<n>,
which holds every descendant whatever it does to its environment or parentage. Without one
(or with LEAKGATE_NO_CGROUP=1), the marker and the subreaper do the work: a process reparented
to leakgate that it did not start is held too; without /proc (not Linux), only process groups.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakgate.cgroup import cgroup_base, cgroup_pids, remove_cgroup

RUN_ENV = "LEAKGATE_RUN_ID"
BUILD_PREFIX = "leakgate-build-"
WORKTREE_PREFIX = "leakgate-worktree-"
CGROUP_PREFIX = "leakgate-"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_REAP_SECONDS = 2.0
MAX_LISTED = 5  # processes named in one note; the rest are counted
NO_CGROUP_ENV = "LEAKGATE_NO_CGROUP"  # "1": markers and the subreaper only (tests use it)
# "<prefix><pid>-<start time>-<random>": a directory named for the run that made it.
OWNED_NAME = re.compile(r"(\d+)-(\d+)-")


@dataclass(frozen=True, slots=True)
class Proc:
    """One live process as /proc shows it."""

    pid: int
    ppid: int
    pgid: int
    argv: tuple[str, ...]
    marker: str  # its LEAKGATE_RUN_ID, "" when it has none
    started: int = 0  # start time in clock ticks since boot; 0: unknown, never signalled

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


def owner_of(marker: str) -> tuple[int, int] | None:
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
            pid, ppid, pgid = int(name), int(fields[1]), int(fields[2])
            out.append(Proc(pid, ppid, pgid, argv, marker, int(fields[19])))
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


def _orphans(table: Iterable[Proc], others: set[str]) -> list[Proc]:
    """Processes reparented to leakgate (their subreaper) that it did not start itself: not a
    live spawned leader, not a child of leakgate's own process group (git or go run directly
    share it), and not marked for, or in the cgroup of, one of `others` (this run's other
    groups). A daemon that cleared its environment and detached is found only so."""
    me, own_group = os.getpid(), os.getpgrp()
    theirs = set().union(*(cgroup_pids(c) for m, c in _holder.cgroups.items() if m in others))
    return [
        p
        for p in table
        if p.ppid == me
        and p.pgid != own_group
        and p.pid not in _holder.leaders
        and p.marker not in others
        and p.pid not in theirs
    ]


class _Holder:
    """The run's process groups and markers. One per leakgate process (module level: signal
    handlers and exit hooks reach it). No lock: set.add/discard and copying a set are atomic
    under the GIL, and a signal handler only reads."""

    def __init__(self) -> None:
        self.owner = owner_tag()
        self.groups: dict[int, str] = {}  # pgid -> marker
        self.leaders: dict[int, subprocess.Popen[bytes]] = {}  # pgid -> its leader
        self.locks: dict[str, int] = {}  # directory -> the fd of its flock
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
            self.cgroup_base = None if os.environ.get(NO_CGROUP_ENV) == "1" else cgroup_base()
        if not isinstance(self.cgroup_base, Path):
            return None
        path = self.cgroup_base / f"{CGROUP_PREFIX}{marker.replace(':', '-')}"
        try:
            path.mkdir()
        except OSError:
            self.cgroup_base = None  # not writable after all: markers only, from now on
            return None
        self.cgroups[marker] = path
        hold_dir(path)
        return path


_holder = _Holder()


def hold_dir(path: Path | str) -> None:
    """Hold a directory this run made (shared flock, kept until release_dir or the run's end):
    the next run's cleanup removes only directories whose lock it can take."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except OSError:
            os.close(fd)
            return
        _holder.locks[str(path)] = fd


def release_dir(path: Path | str) -> None:
    fd = _holder.locks.pop(str(path), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def held_dir(path: Path | str) -> Iterator[None]:
    hold_dir(path)
    try:
        yield
    finally:
        release_dir(path)


def dir_is_held(path: Path) -> bool:
    """Whether a live run (in whichever pid namespace) holds the directory's lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the lock just taken
    return False


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, here: child_setup runs between fork and exec while leakgate's sampler threads
# may be alive (a paired compare starts a generator per block), and dlopen/dlsym in the child
# could wait forever on a loader lock a thread held at the fork. The child calls only this
# pointer and plain system calls.
_PRCTL = _load_prctl()


def _prctl(option: int, value: int) -> bool:
    if _PRCTL is None:
        return False
    return bool(_PRCTL(option, value, 0, 0, 0) == 0)


# Held while a child is forked and registered (see _stop_signals_held).
_STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})
# Blocked when leakgate started (read at import, in the main thread): a child started from a
# helper thread, which blocks the stop signals for good, must not inherit them blocked.
_STARTED_BLOCKED = (
    frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
    if hasattr(signal, "pthread_sigmask")
    else frozenset()
)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[frozenset[int] | None]:
    """SIGINT and SIGTERM held (blocked) in this thread while the body runs; the signal mask a
    child should start with (this thread's from before, with the stop signals as they were when
    leakgate started), or None where nothing was held. leakgate's handler stops a run by raising
    from wherever the main thread is; around a fork the interpreter runs at-fork hooks whose
    exceptions it only prints ("Exception ignored in: _releaseLock"), so a Ctrl-C landing
    there was lost and the run went on. Held, the signal is delivered when the mask is restored,
    after the child is registered (and so stopped with the others)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield None
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield frozenset(old) - (_STOP_SIGNALS - _STARTED_BLOCKED)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def block_stop_signals() -> None:
    """Block SIGINT and SIGTERM in the calling thread, for good. Every thread leakgate starts
    calls it first (helper_thread, and the build pool's initializer): a process-directed signal
    goes to any thread that does not block it, and the main thread runs the handler at its next
    chance, which may be inside an at-fork hook, where the exception is lost. With the helpers
    blocking them, the signal waits for the main thread's mask (see _stop_signals_held)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def helper_thread(
    target: Callable[..., object], *, name: str, args: tuple[object, ...] = ()
) -> threading.Thread:
    """A daemon thread running `target(*args)` with SIGINT and SIGTERM blocked."""

    def run() -> None:
        block_stop_signals()
        target(*args)

    return threading.Thread(target=run, name=name, daemon=True)


def child_setup(
    cpus: Sequence[int] | None, cgroup: Path | None = None, mask: Iterable[int] | None = None
) -> None:
    """Runs in the child between fork and exec: pin CPUs, die with leakgate, join its cgroup,
    and take the signal mask leakgate had before it held SIGINT and SIGTERM for the fork."""
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
    # Last: a signal let in earlier would run leakgate's handler inside this function.
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


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
    with _stop_signals_held() as mask:
        try:
            proc = subprocess.Popen(
                list(argv),
                env=full_env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=stdout,  # type: ignore[arg-type]
                stderr=stderr,  # type: ignore[arg-type]
                start_new_session=True,
                preexec_fn=lambda: child_setup(cpus, cgroup, mask),
            )
        except BaseException:
            if cgroup is not None:
                release_dir(cgroup)
                remove_cgroup(cgroup)
                _holder.cgroups.pop(marker, None)
            raise
        _holder.groups[proc.pid] = marker
        _holder.leaders[proc.pid] = proc
    return proc


def log_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a log a process writes (its stdout or stderr file) as text, with
    undecodable bytes replaced; "" when it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def signal_and_wait(proc: subprocess.Popen[bytes], signum: int, timeout: float) -> None:
    """Ask a process to end its work (a load tool writes its partial result on the signal) and
    wait up to `timeout` for it; what is still running then is stop_group's."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> list[Proc]:
    """SIGTERM the process's group and whatever it started outside the group, wait up to
    `timeout` for the process, then SIGKILL what is left; reap. Returns the processes that had
    left the group (each killed)."""
    pgid = proc.pid
    marker = _holder.groups.get(pgid, "")
    cgroup = _holder.cgroups.get(marker)
    others = {m for g, m in _holder.groups.items() if g != pgid}
    escaped: dict[int, Proc] = {}  # every one seen, to report
    members: dict[int, Proc] = {}

    def look() -> tuple[list[Proc], list[Proc]]:
        """(group members, escaped) now: a fresh snapshot for every signal."""
        table = snapshot()
        held = {p.pid for p in _tree(table, {marker} if marker else set())}
        held.update(cgroup_pids(cgroup) if cgroup else ())
        if cgroup is None:
            held.update(p.pid for p in _orphans(table, others))
        out = [p for p in table if p.pid in held and p.pgid != pgid]
        inside = [p for p in table if p.pgid == pgid and p.pid != pgid]
        escaped.update((p.pid, p) for p in out)
        members.update((p.pid, p) for p in inside)
        return inside, out

    def kill(sig: int, inside: list[Proc], out: list[Proc]) -> None:
        _signal_group(proc, inside, sig)
        _signal(out, sig)

    try:
        now = look()
        if proc.poll() is None:
            kill(signal.SIGTERM, *now)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
    finally:
        # Also when an interrupt lands mid-wait: the leader may be gone while children it
        # started live on in its group, so the group is killed before it is forgotten.
        kill(signal.SIGKILL, *look())
        _holder.groups.pop(pgid, None)
        _holder.leaders.pop(pgid, None)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _reap({**members, **escaped})
    if cgroup is not None:
        release_dir(cgroup)
        remove_cgroup(cgroup)
        _holder.cgroups.pop(marker, None)
    return sorted(escaped.values(), key=lambda p: p.pid)


def _signal_group(leader: subprocess.Popen[bytes], members: Iterable[Proc], sig: int) -> None:
    """The whole group while its leader is unreaped (a zombie keeps the group id taken);
    after, the group id is free for anyone's group: each member seen, one by one."""
    if leader.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(leader.pid, sig)
    else:
        _signal(members, sig)


def _signal(targets: Iterable[Proc], sig: int) -> None:
    for p in targets:
        send(p, sig)


def send(p: Proc, sig: int) -> bool:
    """Signal `p` if it is still the process the snapshot saw (same start time); a pidfd, where
    there is one, pins the process between that check and the signal."""
    if not p.started:
        return False
    try:
        fd: int | None = os.pidfd_open(p.pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # an older kernel or Python: the start time alone
        fd = None
    try:
        if start_time(p.pid) != p.started:
            return False  # gone, and its pid may be someone else's by now
        if fd is not None:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(p.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False
    finally:
        if fd is not None:
            os.close(fd)


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


def proc_of(pid: int) -> Proc | None:
    """A Proc for a pid known otherwise (a cgroup's member), with its start time; None: gone."""
    started = start_time(pid)
    return None if started is None else Proc(pid, 0, 0, (), "", started)


def kill_all() -> None:
    """SIGKILL everything this run started: every process group, every process carrying this
    run's marker wherever it went, and whatever else was reparented to leakgate (a daemon
    without the marker). Safe to call from a signal handler or an exit hook."""
    table = snapshot() if _holder.started else []
    for pgid, leader in list(_holder.leaders.items()):
        _signal_group(leader, [p for p in table if p.pgid == pgid], signal.SIGKILL)
    if not _holder.started:
        return
    mine = _holder.owner + ":"
    markers = {p.marker for p in table if p.marker.startswith(mine)}
    left = {p.pid: p for p in _tree(table, markers)}
    left.update((p.pid, p) for p in _orphans(table, set()))
    for cgroup in list(_holder.cgroups.values()):
        for pid in cgroup_pids(cgroup):
            p = proc_of(pid)
            if p is not None:
                left.setdefault(pid, p)
    _signal(left.values(), signal.SIGKILL)
    _holder.groups.clear()
    _holder.leaders.clear()


def describe_escaped(escaped: Sequence[Proc], who: str = "the service") -> str:
    n = len(escaped)
    named = ", ".join(f"pid {p.pid} `{p.command}`" for p in escaped[:MAX_LISTED])
    more = f" and {n - MAX_LISTED} more" if n > MAX_LISTED else ""
    noun = "process" if n == 1 else "processes"
    return f"{who} left {n} {noun} outside its process group: {named}{more}; killed"


def build_dir_prefix() -> str:
    """The prefix of this run's temporary build directories."""
    return f"{BUILD_PREFIX}{_holder.owner}-"


def worktree_dir_prefix() -> str:
    return f"{WORKTREE_PREFIX}{_holder.owner}-"
