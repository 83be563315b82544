"""The base side of `leakgate compare --base REF`: a temporary git worktree, removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from leakgate.errors import EnvironmentProblem, UsageError

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
    holder = Path(tempfile.mkdtemp(prefix="leakgate-base-"))
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
