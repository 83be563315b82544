"""Reporters: each renders a Verdict (and the RunRecord it judged) into one format.

Every output is written atomically, and each is attempted even when an earlier one failed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from leakgate.atomic import write_atomic as write_atomic  # re-exported for the reporters

Render = Callable[[], str]


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
