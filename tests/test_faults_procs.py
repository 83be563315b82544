"""The fault catalogue, processes and leftovers: whatever the service or leakgate's own build
starts is gone when leakgate exits, on every exit path. A daemon that left the service's
process group is killed and reported; what a leakgate killed with SIGKILL left (processes,
build directories, git worktrees) is cleaned up and reported by the next run, and nothing that
leakgate did not create is touched. Also the build's own usage errors: a library package as
DIR, and a failed module download's real error line.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from leakgate import gitref, procs

from .conftest import REPO, SAMPLE
from .gate import (
    gate_command,
    go_module,
    processes_with_env,
    run_gate,
    wait_for,
    write_config,
)
from .test_faults import assert_fault

DAEMON_SECONDS = "601"  # `sleep 601`: the daemon's command line, told apart from other sleeps


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.strip()


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
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "base")
    (root / "svc" / "NOTES").write_text("second commit\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "second")
    _git(root, "worktree", "add", "-q", "--detach", str(tmp_path / "users-own"), "HEAD~1")
    return root


def worktrees(repo: Path) -> list[str]:
    text = _git(repo, "worktree", "list", "--porcelain")
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
    _git(root, "init", "-q")
    (root / "f").write_text("x\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "one")
    dead = subprocess.Popen(["true"])
    dead.wait()
    holders = {
        "live": tmp_path / f"leakgate-worktree-{procs.owner_tag()}-abc",
        "dead": tmp_path / f"leakgate-worktree-{dead.pid}-1-abc",
        "user": tmp_path / "leakgate-base-mine",
    }
    for holder in holders.values():
        _git(root, "worktree", "add", "-q", "--detach", str(holder / "tree"), "HEAD")
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
    if procs.cgroup_base() is None:
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
        notes = procs.kill_stale()
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
    stale = tmp_path / f"leakgate-build-{dead.pid}-1-x"
    unnamed = tmp_path / "leakgate-build-abcd1234"  # an older leakgate's: whose is unknown
    for d in (mine, stale, unnamed):
        (d / "sub").mkdir(parents=True)
    notes = procs.remove_stale_dirs(tmp_path)
    assert mine.is_dir() and unnamed.is_dir() and not stale.exists()
    assert notes == [
        f"removed the build directory {stale} left by a leakgate run that was killed "
        f"(pid {dead.pid})"
    ]


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
