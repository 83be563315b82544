#!/usr/bin/env python3
"""A/A `compare` on a real third-party server (issue 7): go-httpbin from the Go module proxy.

The module is downloaded into the module cache, copied into a temporary git repository (one
commit), and `leakgate compare --base HEAD` runs on it with examples/go-httpbin/leakgate.yml:
the same code on both sides, so every run should pass. Prints passes, wall time and the
failing checks of any run that did not pass.

    python bench/thirdparty.py [--runs 5] [--duration 20s]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leakgate.build import writable_copy  # noqa: E402

MODULE = "github.com/mccutchen/go-httpbin/v2@v2.26.0"
CONFIG = REPO / "examples" / "go-httpbin" / "leakgate.yml"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@x", *args],
        check=True,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", help="override the measure window")
    opts = parser.parse_args()
    info = subprocess.run(
        ["go", "mod", "download", "-json", MODULE], capture_output=True, text=True, check=True
    )
    source = Path(json.loads(info.stdout)["Dir"])
    passes, walls = 0, []
    with tempfile.TemporaryDirectory() as name:
        repo = Path(name) / "go-httpbin"
        writable_copy(source, repo)  # the module cache's files are read-only
        git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "go-httpbin")
        for i in range(opts.runs):
            out = Path(name) / f"out-{i}"
            cmd = [
                sys.executable, "-m", "leakgate", "compare", "--base", "HEAD",
                str(repo / "cmd" / "go-httpbin"), "--config", str(CONFIG), "--out", str(out),
            ]  # fmt: skip
            if opts.duration:
                cmd += ["--duration", opts.duration]
            start = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1800)
            walls.append(time.monotonic() - start)
            passes += proc.returncode == 0
            if proc.returncode != 0:
                failed = "?"
                if (out / "verdict.json").exists():
                    checks = json.loads((out / "verdict.json").read_text())["checks"]
                    failed = ", ".join(c["name"] for c in checks if c["status"] != "pass")
                print(f"  run {i + 1}: exit {proc.returncode}: {failed}", flush=True)
    print(f"go-httpbin A/A compare: {passes}/{opts.runs} passed (target {opts.runs}/{opts.runs})")
    print(f"wall time of one compare: median {statistics.median(walls):.0f} s")
    return 0 if passes == opts.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
