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
from leakgate.procs import OWNED_NAME, WORKTREE_PREFIX, held_dir, owner_alive, worktree_dir_prefix
from leakgate.stale import killed_run, owned_dir_owner

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
    with held_dir(holder):  # a next run elsewhere leaves it alone while this run lives
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
        holders = _stale_holders()
        for holder, _ in holders:
            common = None
            if (holder / "tree" / ".git").is_file():
                common = _common_dir(holder / "tree")
            if common is None:  # killed before the checkout: nothing is registered
                shutil.rmtree(holder, ignore_errors=True)
                continue
            repos[common] = None
        for common in repos:
            notes += _remove_stale_in(common)
        # Left: a checkout whose repository no longer lists it (pruned, or moved away).
        for holder, pid in holders:
            if holder.exists():
                shutil.rmtree(holder, ignore_errors=True)
                if not holder.exists():
                    notes.append(f"removed the git worktree directory {holder} {killed_run(pid)}")
    except EnvironmentProblem:  # no git: nothing leakgate could have left in one either
        return notes
    return notes


def _stale_holders() -> list[tuple[Path, int]]:
    """(directory, owner pid) of the worktree directories of dead runs."""
    try:
        entries = sorted(Path(tempfile.gettempdir()).iterdir())
    except OSError:
        return []
    found = ((p, owned_dir_owner(p, WORKTREE_PREFIX)) for p in entries)
    return [(p, pid) for p, pid in found if pid is not None]


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
    trees = _listed(repo)
    if trees is None:
        return []
    notes = []
    removed: dict[Path, tuple[int, str]] = {}  # tree -> (owner pid, git's error or "")
    prune = False
    for tree in trees:
        if tree.name != "tree" or not tree.parent.name.startswith(WORKTREE_PREFIX):
            continue
        if not tree.parent.exists():  # its directory is gone: only git's registration is left
            m = OWNED_NAME.match(tree.parent.name[len(WORKTREE_PREFIX) :])
            if m is not None:
                prune = True  # git prunes a registration whose directory is gone
                if not owner_alive(int(m.group(1)), int(m.group(2))):
                    removed[tree] = (int(m.group(1)), "")
            continue
        pid = owned_dir_owner(tree.parent, WORKTREE_PREFIX)
        if pid is None:
            continue
        done = _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tree.parent, ignore_errors=True)
        removed[tree] = (pid, "" if done.returncode == 0 else done.stderr.strip())
        prune = prune or done.returncode != 0
    if prune:
        _git(repo, "worktree", "prune")
    still = set(_listed(repo) or ()) if prune else set()
    for tree, (pid, error) in removed.items():
        if tree in still:
            why = f": {error}" if error else ""
            notes.append(f"could not remove the git worktree {tree} {killed_run(pid)}{why}")
        elif tree.parent.exists():
            notes.append(
                f"could not remove the directory of the git worktree {tree} {killed_run(pid)}"
            )
        else:
            notes.append(f"removed the git worktree {tree} {killed_run(pid)}")
    return notes


def _listed(repo: Path) -> list[Path] | None:
    """The worktrees git lists for the repository; None when git cannot say."""
    listed = _git(repo, "worktree", "list", "--porcelain")
    if listed.returncode != 0:
        return None
    prefix = "worktree "
    return [
        Path(line[len(prefix) :]) for line in listed.stdout.splitlines() if line.startswith(prefix)
    ]
