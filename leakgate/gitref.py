"""The base side of `leakgate compare --base REF`: a temporary git worktree, removed afterwards,
and removed by the next run when leakgate was killed before it could remove it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from leakgate.errors import EnvironmentProblem, UsageError
from leakgate.procs import WORKTREE_PREFIX, owned_dir_owner, worktree_dir_prefix

GIT_TIMEOUT = 300.0


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise EnvironmentProblem("git is not installed; compare --base needs it") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"git {' '.join(args)} took over {GIT_TIMEOUT:.0f}s") from None


def resolve(package_dir: Path, ref: str) -> tuple[Path, str]:
    """(repository root, full commit hash of ref); UsageError when either is missing."""
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise UsageError(f"{package_dir}: not inside a git repository; compare --base needs one")
    if ref.startswith("-"):
        raise UsageError(f"--base {ref!r}: not a git revision")
    rev = _git(package_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if rev.returncode != 0:
        raise UsageError(f"--base {ref}: no such commit in {top.stdout.strip()}")
    return Path(top.stdout.strip()), rev.stdout.strip()


@contextlib.contextmanager
def worktree(package_dir: Path, ref: str) -> Iterator[tuple[Path, str]]:
    """Check out `ref` in a temporary worktree; yields (the package's directory there, commit)."""
    root, commit = resolve(package_dir, ref)
    relative = package_dir.resolve().relative_to(root.resolve())
    holder = Path(tempfile.mkdtemp(prefix=worktree_dir_prefix()))
    tree = holder / "tree"
    try:
        added = _git(root, "worktree", "add", "--detach", "--force", str(tree), commit)
        if added.returncode != 0:
            raise EnvironmentProblem(
                f"git worktree add for {ref} failed", details=added.stderr.strip()
            )
        base_package = tree / relative
        if not base_package.is_dir():
            raise UsageError(f"--base {ref}: {relative} does not exist in that commit")
        yield base_package, commit
    finally:
        _git(root, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(holder, ignore_errors=True)
        _git(root, "worktree", "prune")


def remove_stale_worktrees(package_dir: Path | None) -> list[str]:
    """The next run's cleanup: worktrees that a leakgate killed during `compare` left
    registered, in package_dir's repository and in any repository whose worktree was left in
    the temporary directory. Only worktrees in a directory named for a leakgate run that is
    gone; never one that leakgate did not create."""
    repos: dict[Path, None] = {}
    notes: list[str] = []
    try:
        if package_dir is not None:
            common = _common_dir(package_dir)
            if common is not None:
                repos[common] = None
        for holder in _stale_holders():
            common = None
            if (holder / "tree" / ".git").is_file():
                common = _common_dir(holder / "tree")
            if common is None:  # killed before the checkout: nothing is registered
                shutil.rmtree(holder, ignore_errors=True)
                continue
            repos[common] = None
        for common in repos:
            notes += _remove_stale_in(common)
    except EnvironmentProblem:  # no git: nothing leakgate could have left in one either
        return notes
    return notes


def _stale_holders() -> list[Path]:
    try:
        entries = sorted(Path(tempfile.gettempdir()).iterdir())
    except OSError:
        return []
    return [p for p in entries if owned_dir_owner(p, WORKTREE_PREFIX) is not None]


def _common_dir(path: Path) -> Path | None:
    """The repository's git directory (shared by all its worktrees), None outside one."""
    if not path.is_dir():
        return None
    out = _git(path, "rev-parse", "--git-common-dir")  # relative to path, or absolute
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return (path / out.stdout.strip()).resolve()


def _remove_stale_in(common: Path) -> list[str]:
    repo = common.parent if common.name == ".git" else common
    listed = _git(repo, "worktree", "list", "--porcelain")
    if listed.returncode != 0:
        return []
    notes = []
    for line in listed.stdout.splitlines():
        if not line.startswith("worktree "):
            continue
        tree = Path(line.removeprefix("worktree "))
        pid = owned_dir_owner(tree.parent, WORKTREE_PREFIX) if tree.name == "tree" else None
        if pid is None:
            continue
        _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tree.parent, ignore_errors=True)
        notes.append(
            f"removed the git worktree {tree} left by a leakgate run that was killed (pid {pid})"
        )
    if notes:
        _git(repo, "worktree", "prune")
    return notes
