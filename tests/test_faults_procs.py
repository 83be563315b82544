"""The fault catalogue, processes and leftovers: whatever the service or leakgate's own build
starts is gone when leakgate exits, on every exit path. A daemon that left the service's
process group is killed and reported; what a leakgate killed with SIGKILL left (processes,
build directories, git worktrees) is cleaned up and reported by the next run, and nothing that
leakgate did not create is touched. Also the build's own usage errors: a library package as
DIR, and a failed module download's real error line.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import fcntl
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leakgate import cgroup, gitref, procs, stale

from .conftest import REPO, SAMPLE
from .gate import (
    assert_fault,
    gate_command,
    git,
    go_module,
    processes_with_env,
    run_gate,
    wait_for,
    write_config,
)

DAEMON_SECONDS = "601"  # `sleep 601`: the daemon's command line, told apart from other sleeps


def in_directory(path: Path) -> list[int]:
    """Processes whose working directory is `path` (go build and compile run in the package)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == str(path):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def daemons(marker: str) -> list[int]:
    """The test service's `setsid sleep 601` daemons still running."""
    found = []
    for pid in processes_with_env(marker):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[:2] == [b"sleep", DAEMON_SECONDS.encode()]:
                found.append(pid)
    return found


def spawn_gate(args: list[str], out: Path | None, env: dict[str, str] | None = None, **kw: str):  # type: ignore[no-untyped-def]
    out_args = ["--out", str(out)] if out is not None else []
    return subprocess.Popen(
        gate_command(*args, *out_args, **kw),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def kill_gate(gate: subprocess.Popen[str]) -> None:
    os.kill(gate.pid, signal.SIGKILL)
    gate.communicate(timeout=30)


def broken_package(root: Path) -> Path:
    """A main package that fails to compile: a next run that stops right after its cleanup."""
    return go_module(root, "package main\n\nfunc main() { undefinedName() }\n")


@pytest.fixture(scope="module")
def sample_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = subprocess.run(["which", "go"], capture_output=True, text=True).stdout.strip()
    if not go:
        pytest.skip("Go toolchain not installed")
    binary = tmp_path_factory.mktemp("sample") / "sample"
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=SAMPLE, check=True, timeout=300)
    return binary


def daemon_config(path: Path, binary: Path, duration: str) -> Path:
    """The sample behind a wrapper that first starts a daemon in its own session (`setsid`),
    the way a service that forks a helper and detaches it would."""
    wrapper = path.parent / "with-daemon.sh"
    wrapper.write_text(f'#!/bin/sh\nsetsid sleep {DAEMON_SECONDS} &\nexec "{binary}" "$@"\n')
    wrapper.chmod(0o755)
    # A short run's heap noise is no leak this test is about.
    extra = "thresholds:\n  retained_per_request: {max: 4KiB}\n"
    config = write_config(path, warmup="1s", duration=duration, extra=extra)
    config.write_text(
        config.read_text().replace(
            "  ready_timeout: 20s\n", f'  ready_timeout: 20s\n  command: ["{wrapper}"]\n'
        )
    )
    return config


# -- item 6: a daemon that left the service's process group ----------------------------------


@pytest.mark.go
@pytest.mark.slow
def test_a_daemon_outside_the_process_group_is_killed_and_reported(
    sample_binary: Path, tmp_path: Path, marker: str
) -> None:
    config = daemon_config(tmp_path / "leakgate.yml", sample_binary, duration="2s")
    run = run_gate(["--config", str(config), "--env", marker], tmp_path / "out")
    assert run.returncode == 0, run.output
    assert daemons(marker) == [], "the setsid daemon outlived leakgate"
    note = (
        r"the service left 1 process outside its process group: "
        r"pid \d+ \\?`sleep 601\\?`; killed"
    )
    assert re.search(note, run.stdout), run.output  # the console's notes
    for report in ("summary.md", "junit.xml", "report.html", "verdict.json"):  # markdown: \`
        assert re.search(note, (run.out / report).read_text()), report


@pytest.mark.go
@pytest.mark.slow
def test_a_daemon_left_by_a_killed_leakgate_is_killed_by_the_next_run(
    sample_binary: Path, tmp_path: Path, marker: str
) -> None:
    # Any leakgate run on the machine cleans up after a killed one: on a machine shared with
    # other test runs, one of theirs may get to the daemon first. That is a retry, not a pass.
    for attempt in range(3):
        config = daemon_config(tmp_path / f"{attempt}.yml", sample_binary, duration="60s")
        gate_pid, daemon = _leave_a_daemon(config, tmp_path / f"out{attempt}", marker)
        run = run_gate(
            [str(broken_package(tmp_path / "broken"))], tmp_path / f"next{attempt}", timeout=120
        )
        assert run.returncode == 5, run.output
        wait_for(lambda: daemons(marker) == [], 10, "the next run to kill the daemon")
        if f"(pid {gate_pid})" in run.stderr or attempt == 2:
            break
    assert re.search(
        rf"killed 1 process left by a leakgate run that was killed \(pid {gate_pid}\): "
        rf"pid {daemon} `sleep 601`",
        run.stderr,
    ), f"attempt {attempt + 1}:\n{run.output}"


def _leave_a_daemon(config: Path, out: Path, marker: str) -> tuple[int, int]:
    """Run leakgate with the daemon-starting service, kill it with SIGKILL under load: (the
    killed leakgate's pid, the daemon's pid, still running)."""
    gate = spawn_gate(["--config", str(config), "--env", marker], out)
    try:
        wait_for((out / "trial-1/heap-warmup.pb.gz").exists, 120, "warm-up")
        left = daemons(marker)
        assert len(left) == 1, "the daemon did not start"
        kill_gate(gate)
        # The service dies with leakgate (parent-death signal); its daemon does not.
        wait_for(lambda: processes_with_env(marker) == left, 10, "the service to die")
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    return gate.pid, left[0]


# -- item 7: SIGKILL during the build, and during compare ------------------------------------


def slow_package(root: Path) -> Path:
    """A main package whose compile takes seconds: thousands of small functions, with a seed
    so the build cache never has it."""
    lines = ["package main", "", 'import "fmt"', "", f"const seed = {random.randrange(1 << 40)}"]
    for i in range(3000):
        lines.append(
            f"func f{i}(x int) int {{\n\ts := x\n\tfor j := 0; j < {i % 7 + 3}; j++ {{\n"
            f"\t\ts = s*31 + j ^ {i}\n\t}}\n\treturn s - seed\n}}"
        )
    lines.append("func main() {\n\tt := 0")
    lines += [f"\tt += f{i}(t)" for i in range(3000)]
    lines.append("\tfmt.Println(t)\n}\n")
    return go_module(root, "\n".join(lines), name="example.com/slow")


def leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith(("leakgate-", "go-build")))


@pytest.mark.go
@pytest.mark.slow
def test_leakgate_killed_during_the_build_is_cleaned_up_by_the_next_run(
    go_bin: str, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"  # leakgate's temporary directory, apart from other runs'
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    package = slow_package(tmp_path / "slow")
    gate = spawn_gate([str(package)], tmp_path / "out", env=env)
    try:
        wait_for(
            lambda: any(
                Path(f"/proc/{pid}/comm").read_text().strip() == "compile"
                for pid in in_directory(package)
                if Path(f"/proc/{pid}").exists()
            ),
            120,
            "the compiler to start",
        )
        kill_gate(gate)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    assert leftovers(tmp), "the killed build left nothing to clean up"
    run = run_gate([str(broken_package(tmp_path / "broken"))], tmp_path / "out2", env=env)
    assert run.returncode == 5, run.output
    wait_for(lambda: in_directory(package) == [], 10, "the build's processes to be killed")
    assert leftovers(tmp) == []
    assert re.search(
        rf"removed the build directory {re.escape(str(tmp))}/leakgate-build-{gate.pid}-\S+ "
        rf"left by a leakgate run that was killed \(pid {gate.pid}\)",
        run.stderr,
    ), run.output


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository holding a copy of the sample service, two commits, and a worktree of
    the user's own that leakgate must never touch."""
    root = tmp_path / "repo"
    shutil.copytree(SAMPLE, root / "svc")
    broken_package(root / "broken")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "base")
    (root / "svc" / "NOTES").write_text("second commit\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "second")
    git(root, "worktree", "add", "-q", "--detach", str(tmp_path / "users-own"), "HEAD~1")
    return root


def worktrees(repo: Path) -> list[str]:
    text = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("worktree ")]


@pytest.mark.go
@pytest.mark.slow
def test_leakgate_killed_during_compare_leaves_no_worktree_after_the_next_run(
    go_bin: str, repo: Path, tmp_path: Path, marker: str
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    before = worktrees(repo)
    args = ["compare", "--base", "HEAD~1", str(repo / "svc"), "--env", marker]
    gate = spawn_gate(args, tmp_path / "out", env=env, command="compare")
    try:
        wait_for(lambda: len(worktrees(repo)) > len(before), 60, "the base worktree")
        kill_gate(gate)
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    left = [w for w in worktrees(repo) if w not in before]
    assert len(left) == 1, worktrees(repo)
    run = run_gate([str(repo / "broken")], tmp_path / "out2", env=env)
    assert run.returncode == 5, run.output
    assert worktrees(repo) == before  # the user's own worktree is still there
    assert (tmp_path / "users-own" / "svc").is_dir()
    assert not Path(left[0]).exists() and leftovers(tmp) == []
    assert re.search(
        rf"removed the git worktree {re.escape(left[0])} left by a leakgate run that was "
        rf"killed \(pid {gate.pid}\)",
        run.stderr,
    ), run.output


def test_only_worktrees_of_dead_leakgate_runs_are_removed(tmp_path: Path) -> None:
    """Without Go: a worktree named for a live leakgate, one of the user's named like
    leakgate's old ones, and one of a dead run; only the dead run's goes."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "f").write_text("x\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "one")
    dead = subprocess.Popen(["true"])
    dead.wait()
    holders = {
        "live": tmp_path / f"leakgate-worktree-{procs.owner_tag()}-abc",
        "dead": tmp_path / f"leakgate-worktree-{dead.pid}-1-abc",
        "user": tmp_path / "leakgate-base-mine",
    }
    for holder in holders.values():
        git(root, "worktree", "add", "-q", "--detach", str(holder / "tree"), "HEAD")
    notes = gitref.remove_stale_worktrees(root)
    assert sorted(w for w in worktrees(root) if w != str(root)) == sorted(
        [str(holders["live"] / "tree"), str(holders["user"] / "tree")]
    )
    assert not holders["dead"].exists() and holders["user"].exists()
    assert notes == [
        f"removed the git worktree {holders['dead'] / 'tree'} left by a leakgate run that was "
        f"killed (pid {dead.pid})"
    ]


# -- processes without Go: the holder on its own ----------------------------------------------

_PR_GET_CHILD_SUBREAPER = 37


@pytest.fixture(autouse=True)
def no_subreaper_after() -> Iterator[None]:
    """procs.spawn makes its process a child subreaper: pytest must not stay one for the rest
    of the session (orphans of later tests would become its zombies)."""
    yield
    if procs._holder.subreaper:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(procs._PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        procs._holder.subreaper = None


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0)
    return bool(value.value)


def in_own_process(code: str, **env: str) -> dict:  # type: ignore[type-arg]
    """Run `code` (which prints one JSON line last) in a Python of its own: kill_all and a
    leakgate that is a subreaper, without a cgroup, must not act on pytest's processes."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def sleepers(seconds: str) -> list[int]:
    """Live `sleep <seconds>` processes, whatever their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if (
                entry.name.isdigit()
                and (entry / "cmdline").read_bytes() == f"sleep\0{seconds}\0".encode()
                and ") Z " not in (entry / "stat").read_text()
            ):
                found.append(int(entry.name))
    return found


@pytest.fixture
def holder_marker() -> Iterator[str]:
    mark = f"LEAKGATE_TEST_RUN=holder-{os.getpid()}-{time.monotonic_ns()}"
    yield mark
    left = processes_with_env(mark)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert left == [], f"processes left running: {left}"


def test_the_holder_kills_and_names_a_child_that_left_the_group(
    tmp_path: Path, holder_marker: str
) -> None:
    name, _, value = holder_marker.partition("=")
    script = "import os,subprocess,time; subprocess.Popen(['setsid','sleep','602']); time.sleep(60)"
    proc = procs.spawn(
        [sys.executable, "-c", script],
        env={**os.environ, name: value},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cpus=None,
    )
    wait_for(lambda: len(processes_with_env(holder_marker)) == 2, 10, "the daemon to start")
    escaped = procs.stop_group(proc, timeout=2)
    assert [p.argv for p in escaped] == [("sleep", "602")]
    assert processes_with_env(holder_marker) == []
    assert procs.describe_escaped(escaped) == (
        f"the service left 1 process outside its process group: pid {escaped[0].pid} "
        "`sleep 602`; killed"
    )


def test_a_cgroup_holds_a_daemon_that_cleared_its_environment(tmp_path: Path) -> None:
    """`env -i setsid sleep 604 &` from a shell that exits: no marker, and its parent is gone,
    so only the service's cgroup still knows it. Skipped where no cgroup is writable."""
    if cgroup.cgroup_base() is None:
        pytest.skip("no writable cgroup v2 hierarchy here: markers and the subreaper only")
    daemon = "env -i setsid sleep 604 &"
    script = f"import subprocess,time; subprocess.run(['sh','-c','{daemon}']); time.sleep(60)"
    proc = procs.spawn(
        [sys.executable, "-c", script],
        env=os.environ,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cpus=None,
    )

    def sleepers() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if (
                    entry.name.isdigit()
                    and (entry / "cmdline").read_bytes() == b"sleep\x00604\x00"
                    and ") Z " not in (entry / "stat").read_text()
                ):
                    found.append(int(entry.name))
        return found

    try:
        wait_for(lambda: len(sleepers()) == 1, 10, "the daemon to start")
        escaped = procs.stop_group(proc, timeout=2)
        assert [p.argv for p in escaped] == [("sleep", "604")]
        assert sleepers() == []
    finally:
        for pid in sleepers():
            os.kill(pid, signal.SIGKILL)


def test_the_next_run_kills_processes_of_a_dead_leakgate_only(holder_marker: str) -> None:
    name, _, value = holder_marker.partition("=")
    dead = subprocess.Popen(["true"])
    dead.wait()
    marked = {
        "dead": f"{dead.pid}-1:1",  # a leakgate that is gone
        "live": f"{procs.owner_tag()}:1",  # this process: alive
    }
    children = {
        side: subprocess.Popen(
            ["sleep", "603"], env={**os.environ, name: value, procs.RUN_ENV: tag}
        )
        for side, tag in marked.items()
    }
    try:
        notes = [n for n in stale.kill_stale() if f"(pid {dead.pid})" in n]
        children["dead"].wait(timeout=5)
        assert children["live"].poll() is None
        assert notes == [
            f"killed 1 process left by a leakgate run that was killed (pid {dead.pid}): "
            f"pid {children['dead'].pid} `sleep 603`"
        ]
    finally:
        for child in children.values():
            child.kill()
            child.wait()


def test_stale_build_directories_of_dead_runs_only(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = tmp_path / f"leakgate-build-{procs.owner_tag()}-x"
    dead_dir = tmp_path / f"leakgate-build-{dead.pid}-1-x"
    unnamed = tmp_path / "leakgate-build-abcd1234"  # an older leakgate's: whose is unknown
    for d in (mine, dead_dir, unnamed):
        (d / "sub").mkdir(parents=True)
    notes = stale.remove_stale_dirs(tmp_path)
    assert mine.is_dir() and unnamed.is_dir() and not dead_dir.exists()
    assert notes == [
        f"removed the build directory {dead_dir} left by a leakgate run that was killed "
        f"(pid {dead.pid})"
    ]


def spawn_quiet(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return procs.spawn(
        argv,
        env=env if env is not None else dict(os.environ),
        cwd=None,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cpus=None,
    )


def test_the_group_of_a_reaped_leader_is_not_signalled_by_its_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the leader is reaped and its group empty, the group id is free for anyone's group
    (another leakgate's service): stop_group must not killpg it."""
    proc = spawn_quiet(["true"])
    proc.wait()  # reaped early, as poll() does when a service crashes
    calls: list[int] = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: calls.append(pgid))
    assert procs.stop_group(proc, timeout=1) == []
    assert calls == []


def test_kill_all_leaves_the_group_id_of_a_reaped_leader_alone() -> None:
    found = in_own_process(
        """
        import json, os, subprocess
        from leakgate import procs
        calls = []
        os.killpg = lambda pgid, sig: calls.append(pgid)
        p = procs.spawn(["true"], env=dict(os.environ), cwd=None, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL, cpus=None)
        p.wait()
        procs.kill_all()
        print(json.dumps({"calls": calls}))
        """
    )
    assert found == {"calls": []}


def test_a_stop_signal_during_a_spawn_is_not_lost_and_the_child_does_not_inherit_it() -> None:
    """A SIGINT that lands while a child is forked (here sent from the interpreter's own
    at-fork hook, where an exception is only printed, as a Ctrl-C landing there was) still
    raises from spawn, once the child is registered, so the run stops and the child is stopped
    with the others; and a child does not start with SIGINT and SIGTERM blocked. A helper
    thread is alive, as the sampler is in a run: the kernel hands a process-directed signal to
    any thread that does not block it, and the main thread would then run the handler inside
    the at-fork hook."""
    found = in_own_process(
        """
        import json, os, signal, subprocess, threading
        from leakgate import procs
        class Stop(Exception):
            pass
        def stop(signum, frame):
            raise Stop()
        signal.signal(signal.SIGINT, stop)
        done = threading.Event()
        helper = procs.helper_thread(done.wait, args=(30,), name="sampler-like")
        helper.start()
        armed = [True]
        def interrupt():
            if armed[0]:
                armed[0] = False
                os.kill(os.getpid(), signal.SIGINT)
        os.register_at_fork(after_in_parent=interrupt)
        stopped = False
        try:
            procs.spawn(["sleep", "607"], env=dict(os.environ), cwd=None,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cpus=None)
        except Stop:
            stopped = True
        held = len(procs._holder.leaders)
        procs.kill_all()
        p = procs.spawn(["grep", "SigBlk", "/proc/self/status"], env=dict(os.environ),
                        cwd=None, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cpus=None)
        blocked = p.communicate()[0].decode().split()[-1]
        parent = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        done.set()
        helper.join()
        # a child started from a helper thread (a build's go command) does not inherit the
        # helper's blocked stop signals either
        from_helper = []
        def start_from_helper():
            q = procs.spawn(["grep", "SigBlk", "/proc/self/status"], env=dict(os.environ),
                            cwd=None, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cpus=None)
            from_helper.append(q.communicate()[0].decode().split()[-1])
        other = procs.helper_thread(start_from_helper, name="builder-like")
        other.start()
        other.join()
        print(json.dumps({"stopped": stopped, "held": held, "child_blocked": blocked,
                          "parent_blocked": sorted(parent), "helper_child": from_helper}))
        """
    )
    assert found["stopped"] is True and found["held"] == 1, found
    assert int(found["child_blocked"], 16) == 0 and found["parent_blocked"] == [], found
    assert [int(mask, 16) for mask in found["helper_child"]] == [0], found
    assert sleepers("607") == []


def test_members_of_a_reaped_leaders_group_are_still_killed(holder_marker: str) -> None:
    name, _, value = holder_marker.partition("=")
    proc = spawn_quiet(["sh", "-c", "sleep 606 & exit 0"], env={**os.environ, name: value})
    proc.wait()
    wait_for(lambda: len(processes_with_env(holder_marker)) == 1, 10, "the sleep to start")
    assert procs.stop_group(proc, timeout=1) == []
    wait_for(lambda: processes_with_env(holder_marker) == [], 5, "the group's sleep to die")


def test_a_process_is_signalled_only_if_its_start_time_still_matches() -> None:
    """A pid seen in an earlier snapshot may be someone else's by the time of the signal."""
    child = subprocess.Popen(["sleep", "605"])
    try:
        started = procs.start_time(child.pid)
        assert started is not None
        other = procs.Proc(child.pid, os.getpid(), os.getpgrp(), ("sleep", "605"), "", started + 1)
        assert procs.send(other, signal.SIGKILL) is False
        assert child.poll() is None
        assert procs.send(procs.Proc(child.pid, 0, 0, (), "", 0), signal.SIGKILL) is False
        assert child.poll() is None
        same = procs.Proc(child.pid, os.getpid(), os.getpgrp(), ("sleep", "605"), "", started)
        assert procs.send(same, signal.SIGKILL) is True
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root: another user's process")
def test_the_next_run_leaves_another_users_marked_processes_alone(holder_marker: str) -> None:
    """As root, snapshot() reads everyone's environment: a dead run's marker on another user's
    process is that user's business."""
    name, _, value = holder_marker.partition("=")
    dead = subprocess.Popen(["true"])
    dead.wait()
    env = {**os.environ, name: value, procs.RUN_ENV: f"{dead.pid}-1:1"}
    theirs = subprocess.Popen(["sleep", "607"], env=env, user=65534, group=65534)
    try:
        wait_for(lambda: processes_with_env(holder_marker) == [theirs.pid], 5, "the sleep")
        notes = stale.kill_stale()
        assert theirs.poll() is None
        assert not [n for n in notes if f"(pid {dead.pid})" in n]
    finally:
        theirs.kill()
        theirs.wait()


def test_without_a_cgroup_a_daemon_that_cleared_its_environment_is_held() -> None:
    """`env -i setsid sleep &` from a shell that exits: no marker, its own session, and its
    parent gone, so it is reparented to leakgate (the subreaper). Without a cgroup
    (LEAKGATE_NO_CGROUP=1), stop_group and kill_all still kill and report it."""
    code = """
        import json, os, subprocess, sys, time
        from leakgate import procs
        def sleepers(seconds):
            want, found = f"sleep\\0{seconds}\\0".encode(), []
            for name in os.listdir("/proc"):
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f, open(f"/proc/{name}/stat") as g:
                        if f.read() == want and ") Z " not in g.read():
                            found.append(int(name))
                except OSError:
                    pass
            return found
        daemon = "env -i setsid sleep %s &"
        script = f"import subprocess,time; subprocess.run(['sh','-c','{daemon}']); time.sleep(60)"
        def start(seconds):
            p = procs.spawn([sys.executable, "-c", script % seconds], env=dict(os.environ),
                            cwd=None, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cpus=None)
            deadline = time.monotonic() + 10
            while len(sleepers(seconds)) != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            return p, sleepers(seconds)
        first, daemon = start("608")
        cgroups = len(procs._holder.cgroups)
        escaped = procs.stop_group(first, timeout=2)
        after_stop = sleepers("608")
        second, daemon2 = start("609")
        procs.kill_all()
        deadline = time.monotonic() + 5
        while sleepers("609") and time.monotonic() < deadline:
            time.sleep(0.05)
        print(json.dumps({
            "cgroups": cgroups, "daemon": daemon, "daemon2": daemon2,
            "escaped": [[p.pid, list(p.argv)] for p in escaped],
            "after_stop": after_stop, "after_kill_all": sleepers("609"),
        }))
    """
    try:
        found = in_own_process(code, **{procs.NO_CGROUP_ENV: "1"})
    finally:
        for pid in sleepers("608") + sleepers("609"):
            os.kill(pid, signal.SIGKILL)
    assert found["cgroups"] == 0, "LEAKGATE_NO_CGROUP=1 still made a cgroup"
    assert len(found["daemon"]) == 1 and len(found["daemon2"]) == 1, found
    assert found["escaped"] == [[found["daemon"][0], ["sleep", "608"]]]
    assert found["after_stop"] == [] and found["after_kill_all"] == []


def test_a_cgroup_made_for_a_spawn_that_failed_is_removed(tmp_path: Path) -> None:
    base = cgroup.cgroup_base()
    if base is None or os.environ.get(procs.NO_CGROUP_ENV) == "1":
        pytest.skip("no writable cgroup v2 hierarchy here")
    mine = f"{procs.CGROUP_PREFIX}{procs._holder.owner}-"

    def ours() -> list[str]:
        return sorted(p.name for p in base.iterdir() if p.name.startswith(mine))

    before, held = ours(), dict(procs._holder.locks)  # earlier tests' spawns may still hold some
    with pytest.raises(OSError):
        spawn_quiet([str(tmp_path / "no-such-program")])
    assert ours() == before
    assert procs._holder.locks == held  # the failed spawn's cgroup lock was released too


def test_a_directory_held_by_a_live_run_in_another_pid_namespace_stays(tmp_path: Path) -> None:
    """A run in another container sharing /tmp names its folders with a pid of its own
    namespace, dead-looking here: the folder's lock, held for the run's life, says it lives."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    folder = tmp_path / f"leakgate-build-{dead.pid}-1-x"
    folder.mkdir()
    hold = (
        "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDONLY); "
        "fcntl.flock(fd, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        assert stale.remove_stale_dirs(tmp_path) == [] and folder.is_dir()
    finally:
        other.kill()
        other.wait()
    assert stale.remove_stale_dirs(tmp_path) == [
        f"removed the build directory {folder} left by a leakgate run that was killed "
        f"(pid {dead.pid})"
    ]


def test_this_runs_own_folders_are_held_while_in_use(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    with procs.held_dir(folder):
        fd = os.open(folder, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert not procs.dir_is_held(folder)


def test_stale_build_folders_are_made_removable_for_the_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    modes: list[int] = []
    monkeypatch.setattr(os, "chmod", lambda path, mode: modes.append(mode))
    stale.make_removable(tmp_path / "a")
    assert modes == [0o700, 0o700]


# -- gitref: worktrees a killed leakgate left -------------------------------------------------


def _repo_with_commit(root: Path) -> Path:
    root.mkdir()
    git(root, "init", "-q")
    (root / "f").write_text("x\n")
    git(root, "add", ".")
    git(root, "commit", "-qm", "one")
    return root


@pytest.fixture
def dead_pid() -> int:
    dead = subprocess.Popen(["true"])
    dead.wait()
    return dead.pid


def test_a_stale_worktree_folder_its_repository_no_longer_lists_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dead_pid: int
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    root = _repo_with_commit(tmp_path / "repo")
    holder = tmp / f"leakgate-worktree-{dead_pid}-1-abc"
    git(root, "worktree", "add", "-q", "--detach", str(holder / "tree"), "HEAD")
    # The repository's registration now names another path: it no longer lists this one.
    (gitdir,) = (root / ".git" / "worktrees").iterdir()
    (gitdir / "gitdir").write_text(str(tmp_path / "elsewhere" / ".git") + "\n")
    notes = gitref.remove_stale_worktrees(None)
    assert not holder.exists()
    assert notes == [
        f"removed the git worktree directory {holder} left by a leakgate run that was killed "
        f"(pid {dead_pid})"
    ]


def test_the_registration_of_a_vanished_leakgate_worktree_is_pruned(
    tmp_path: Path, dead_pid: int
) -> None:
    root = _repo_with_commit(tmp_path / "repo")
    holder = tmp_path / f"leakgate-worktree-{dead_pid}-1-abc"
    git(root, "worktree", "add", "-q", "--detach", str(holder / "tree"), "HEAD")
    shutil.rmtree(holder)  # e.g. a tmp cleaner: only git's registration is left
    notes = gitref.remove_stale_worktrees(root)
    assert worktrees(root) == [str(root)]
    assert notes == [
        f"removed the git worktree {holder / 'tree'} left by a leakgate run that was killed "
        f"(pid {dead_pid})"
    ]


def test_a_worktree_git_refuses_to_remove_is_reported_as_not_removed(
    tmp_path: Path, dead_pid: int
) -> None:
    root = _repo_with_commit(tmp_path / "repo")
    holder = tmp_path / f"leakgate-worktree-{dead_pid}-1-abc"
    tree = holder / "tree"
    git(root, "worktree", "add", "-q", "--detach", str(tree), "HEAD")
    git(root, "worktree", "lock", "--reason", "mine", str(tree))  # remove --force refuses
    notes = gitref.remove_stale_worktrees(root)
    assert str(tree) in worktrees(root)
    assert len(notes) == 1 and notes[0].startswith(
        f"could not remove the git worktree {tree} left by a leakgate run that was killed "
        f"(pid {dead_pid}): "
    ), notes
    assert "locked" in notes[0]


# -- item 10: what go build would have said too late or too vaguely ------------------------


def test_a_library_package_is_not_a_main_package(tmp_path: Path, marker: str) -> None:
    lib = go_module(tmp_path / "lib", "package lib\n\nfunc Add(a, b int) int { return a + b }\n")
    (lib / "gen.go").write_text("//go:build ignore\n\npackage main\n\nfunc main() {}\n")
    (lib / "lib_test.go").write_text("package lib_test\n")
    run = run_gate([str(lib), "--env", marker], tmp_path / "out", timeout=120)
    message = rf"{re.escape(str(lib))}: not a main package \(package lib\)"
    assert_fault(run, 4, message, judged=False)


@pytest.mark.go
def test_a_failed_module_download_shows_the_real_error(go_bin: str, tmp_path: Path) -> None:
    # A module proxy that has the module's go.mod but not its zip: "go: downloading" and then
    # the line that says what went wrong.
    proxy = tmp_path / "proxy" / "example.com" / "nope" / "@v"
    proxy.mkdir(parents=True)
    (proxy / "list").write_text("v1.0.0\n")
    (proxy / "v1.0.0.info").write_text('{"Version":"v1.0.0"}\n')
    (proxy / "v1.0.0.mod").write_text("module example.com/nope\n")
    svc = go_module(
        tmp_path / "svc", 'package main\n\nimport "example.com/nope"\n\nfunc main() { nope.X() }\n'
    )
    with (svc / "go.mod").open("a") as f:
        f.write("\nrequire example.com/nope v1.0.0\n")
    env = {
        **os.environ,
        "GOPROXY": f"file://{tmp_path / 'proxy'}",
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOMODCACHE": str(tmp_path / "modcache"),
    }
    run = run_gate([str(svc)], tmp_path / "out", env=env, timeout=120)
    assert run.returncode == 5, run.output
    assert re.search(
        r"build failed: build of \S+ failed: main.go:3:8: example.com/nope@v1.0.0: reading "
        r"file://\S+/v1.0.0.zip: no such file",
        run.stderr,
    ), run.output


def test_every_thread_leakgate_starts_blocks_the_stop_signals() -> None:
    """The guard above holds only if no thread of leakgate's can take SIGINT or SIGTERM: each
    is made by procs.helper_thread, and a thread pool gets procs.block_stop_signals."""
    package = Path(procs.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name.endswith("ThreadPoolExecutor"):
                ok = keywords.get("initializer") == "procs.block_stop_signals"
            elif name in ("threading.Thread", "Thread"):
                ok = path.name == "procs.py"  # helper_thread's own
            else:
                continue
            if not ok:
                offenders.append(f"{path.relative_to(package)}:{node.lineno} {name}")
    assert offenders == []


def sleepers_of(argument: str) -> list[int]:
    """Live `sleep <argument>` processes."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().split(b"\0")[:2] == [
                    b"sleep",
                    argument.encode(),
                ]:
                    found.append(int(entry.name))
    return found


@pytest.mark.go
def test_ctrl_c_during_the_builds_stops_them_instead_of_waiting(
    go_bin: str, tmp_path: Path
) -> None:
    """The service's build hangs (a -toolexec that sleeps, as a compile of a large service or a
    stuck module download would); the generator builds beside it. SIGINT stops the run at once
    (exit 2): the builds are killed, not waited for, and nothing of theirs is left."""
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nexec sleep 609\n")
    hang.chmod(0o755)
    package = go_module(tmp_path / "svc", "package main\n\nfunc main() {}\n")
    (package / "leakgate.yml").write_text(f"service:\n  build_flags: [-toolexec={hang}]\n")
    gate = spawn_gate([str(package)], tmp_path / "out")
    try:
        wait_for(lambda: sleepers_of("609") != [], 120, "the build to hang")
        gate.send_signal(signal.SIGINT)
        _, stderr = gate.communicate(timeout=60)  # without the fix: the 600 s build timeout
    finally:
        if gate.poll() is None:
            gate.kill()
            gate.communicate()
    assert gate.returncode == 2, stderr
    wait_for(lambda: sleepers_of("609") == [], 10, "the hung build to be killed")
