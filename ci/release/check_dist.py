"""The release workflow's last look before publishing: dist/ holds one sdist and one wheel of
the version the tag names (tags are vX.Y.Z, package versions X.Y.Z), and each holds the Go
sources leakgate compiles at run time (the agent it builds into a service, the load generator).

    python ci/release/check_dist.py --tag v0.1.0 dist

Exits 1 naming every problem; prints what it checked otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import tarfile
import zipfile
from pathlib import Path

DIST_NAME = "leakgate_go"
# What leakgate reads from its own package at run time (pyproject's package-data).
PACKAGE_DATA = {
    "agent": "leakgate/agent/*.go",
    "loadgen": "leakgate/load/loadgen/*.go",
    "loadgen module": "leakgate/load/loadgen/go.mod",
    "wrk script": "leakgate/load/*.lua",
    "type marker": "leakgate/py.typed",
}
VERSION_FIELD = re.compile(r"^Version: (\S+)$", re.M)
INIT_VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.M)


def _wheel(path: Path) -> tuple[list[str], dict[str, str]]:
    """(file names, {"metadata": METADATA, "init": leakgate/__init__.py}) of a wheel."""
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        texts = {}
        for name in names:
            if name.endswith(".dist-info/METADATA"):
                texts["metadata"] = wheel.read(name).decode()
            elif name == "leakgate/__init__.py":
                texts["init"] = wheel.read(name).decode()
    return names, texts


def _sdist(path: Path) -> tuple[list[str], dict[str, str]]:
    """The same for an sdist, its names relative to its top directory."""
    with tarfile.open(path) as sdist:
        members = [m for m in sdist.getmembers() if m.isfile()]
        names, texts = [], {}
        for member in members:
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name
            names.append(name)
            if name in ("PKG-INFO", "leakgate/__init__.py"):
                data = sdist.extractfile(member)
                assert data is not None
                texts["metadata" if name == "PKG-INFO" else "init"] = data.read().decode()
    return names, texts


def check(tag: str, dist: Path) -> tuple[list[str], list[str]]:
    """(what was checked, problems) for the files in dist."""
    done: list[str] = []
    problems: list[str] = []
    if not dist.is_dir():
        return done, [f"{dist} is not a directory"]
    wheels = sorted(dist.glob(f"{DIST_NAME}-*.whl"))
    # leakgate_go-X.Y.Z.tar.gz; setuptools before 69.3 spelled it leakgate-go-X.Y.Z.tar.gz
    sdists = sorted(dist.glob("leakgate[-_]go-*.tar.gz"))
    others = sorted(set(dist.iterdir()) - set(wheels) - set(sdists))
    for kind, found in (("wheel", wheels), ("sdist", sdists)):
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            problems.append(f"want one {kind} ({DIST_NAME}-*), found {names}")
    if others:
        problems.append(f"files that are not this release: {', '.join(p.name for p in others)}")
    for path, read in [(p, _wheel) for p in wheels] + [(p, _sdist) for p in sdists]:
        names, texts = read(path)
        kind = "wheel" if path.suffix == ".whl" else "sdist"
        metadata = VERSION_FIELD.search(texts.get("metadata", ""))
        version = metadata.group(1) if metadata else "?"
        if tag != f"v{version}":
            problems.append(
                f"{path.name}: version {version}, but the tag is {tag}: a release of "
                f"{version} is tagged v{version} (the version lives in pyproject.toml)"
            )
        init = INIT_VERSION.search(texts.get("init", ""))
        if not init or init.group(1) != version:
            found = init.group(1) if init else "none"
            problems.append(f"{path.name}: leakgate.__version__ is {found}, not {version}")
        counts = []
        for what, pattern in PACKAGE_DATA.items():
            matched = fnmatch.filter(names, pattern)
            if not matched:
                problems.append(f"the {kind} {path.name} lacks {pattern} ({what})")
            counts.append(f"{what} {len(matched)}")
        done.append(f"{path.name}: version {version}; {', '.join(counts)} files")
    return done, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", required=True, help="the git tag being released, vX.Y.Z")
    parser.add_argument("dist", type=Path, help="the directory python -m build wrote")
    args = parser.parse_args(argv)
    done, problems = check(args.tag, args.dist)
    for line in done:
        print(line)
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
