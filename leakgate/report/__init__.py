"""Reporters: each renders a Verdict (and the RunRecord it judged) into one format.

Every output is written atomically, and each is attempted even when an earlier one failed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

Render = Callable[[], str]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # reports are CI artifacts: readable like any other file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_all(outputs: list[tuple[Path, Render]]) -> tuple[list[Path], list[str]]:
    """Render and write each output; returns (written paths, problems)."""
    written: list[Path] = []
    problems: list[str] = []
    for path, render in outputs:
        try:
            write_atomic(path, render())
            written.append(path)
        except Exception as e:  # one broken reporter must not cost the others
            problems.append(f"{path}: {type(e).__name__}: {e}")
    return written, problems
