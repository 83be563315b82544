"""The shape of the code: the longest functions and the largest modules, Python and Go.

    python bench/codeshape.py [--top N] [REV]

Function length is the line span of each `def` from `ast` (decorators excluded, nested
functions counted inside their parent and again on their own); module size is lines of text.
With REV (a git revision) it measures that revision's tree (from `git archive`) instead of the
working tree, so a refactor can print before and after with one command each.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_GO_FUNC = re.compile(r"^func (?:\([^)]*\) )?(\w+).*\{$")


def sources(rev: str | None) -> Iterator[tuple[str, str]]:
    """(path, text) of every .py and .go file under leakgate/, Go tests left out."""
    if rev is None:
        for path in sorted((REPO / "leakgate").rglob("*")):
            if _wanted(path.name) and "proto" not in path.parts:
                yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")
        return
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "leakgate"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            name = Path(member.name)
            if member.isfile() and _wanted(name.name) and "proto" not in name.parts:
                data = tar.extractfile(member)
                assert data is not None
                yield member.name, data.read().decode("utf-8")


def _wanted(name: str) -> bool:
    return name.endswith(".py") or (name.endswith(".go") and not name.endswith("_test.go"))


def functions(path: str, text: str) -> Iterator[tuple[int, str]]:
    if path.endswith(".py"):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno is not None
                yield node.end_lineno - node.lineno + 1, f"{path}:{node.name}"
        return
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if match := _GO_FUNC.match(line):
            end = next((j for j in range(i + 1, len(lines)) if lines[j] == "}"), i)
            yield end - i + 1, f"{path}:{match.group(1)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", nargs="?", help="a git revision (default: the working tree)")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    files = list(sources(args.rev))
    funcs = sorted((f for path, text in files for f in functions(path, text)), reverse=True)
    sizes = sorted(((text.count("\n"), path) for path, text in files), reverse=True)
    py = [n for n, p in sizes if p.endswith(".py")]
    print(f"tree: {args.rev or 'working tree'}")
    print(f"\nlongest functions (lines), top {args.top}:")
    for n, name in funcs[: args.top]:
        print(f"  {n:5}  {name}")
    print(f"\nlargest modules (lines), top {args.top}:")
    for n, path in sizes[: args.top]:
        print(f"  {n:5}  {path}")
    median = sorted(py)[len(py) // 2] if py else 0
    over = sum(n > 500 for n in py)
    print(f"\nPython modules: {len(py)}, median {median} lines, {over} over 500 lines")


if __name__ == "__main__":
    main()
