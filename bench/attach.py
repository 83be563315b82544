#!/usr/bin/env python3
"""Attach mode against build mode on the sample service (issue 7): the same verdicts?

For each mode, alternating: `leakgate check sample-go-service --env LEAK=<mode>` (build mode:
leakgate builds and starts the service) and `leakgate check --target URL` on the same sample
binary started by this script (attach mode), with the sample's leakgate.yml. Prints, per mode,
how often each gave the expected verdict and how often the two agreed.

    python bench/attach.py [--runs 5] [--modes clean,globalmap,...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-go-service"
MODES = {  # mode -> expected exit code
    "clean": 0,
    "globalmap": 1,
    "goroutine": 1,
    "keyedcache": 1,
    "unclosed": 1,
    "context": 1,
    "boundedcache": 0,
}


def verdict(out: Path) -> tuple[str, tuple[str, ...]]:
    data = json.loads((out / "verdict.json").read_text())
    failed = tuple(sorted(c["name"] for c in data["checks"] if c["status"] == "fail"))
    return data["status"], failed


def build_mode(mode: str, out: Path) -> tuple[int, tuple[str, ...]]:
    env = ["--env", f"LEAK={mode}"] if mode != "clean" else []
    proc = subprocess.run(
        [sys.executable, "-m", "leakgate", "check", str(SAMPLE), "--out", str(out), *env],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    return proc.returncode, verdict(out)[1] if (out / "verdict.json").exists() else ()


def attach_mode(binary: Path, mode: str, out: Path) -> tuple[int, tuple[str, ...]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PORT": str(port), "LEAK": "" if mode == "clean" else mode}
    service = subprocess.Popen(
        [str(binary)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "leakgate",
                "check",
                "--config",
                str(SAMPLE / "leakgate.yml"),
                "--target",
                url,
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=900,
        )
    finally:
        service.kill()
        service.wait(timeout=10)
    return proc.returncode, verdict(out)[1] if (out / "verdict.json").exists() else ()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    opts = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        binary = tmp / "sample-go-service"
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=SAMPLE, check=True)
        print(f"{'mode':13} {'build as expected':>18} {'attach as expected':>19} {'agree':>7}")
        for mode in opts.modes.split(","):
            expected = MODES[mode]
            build_ok = attach_ok = agree = 0
            for i in range(opts.runs):
                b_rc, b_failed = build_mode(mode, tmp / f"b-{mode}-{i}")
                a_rc, a_failed = attach_mode(binary, mode, tmp / f"a-{mode}-{i}")
                build_ok += b_rc == expected
                attach_ok += a_rc == expected
                agree += b_rc == a_rc and b_failed == a_failed
                if b_failed != a_failed or b_rc != a_rc:
                    print(f"  run {i + 1}: build {b_rc} {b_failed}  attach {a_rc} {a_failed}")
            print(
                f"{mode:13} {build_ok:>13}/{opts.runs:<4} {attach_ok:>14}/{opts.runs:<4} "
                f"{agree:>3}/{opts.runs}",
                flush=True,
            )
            ok &= build_ok == attach_ok == agree == opts.runs
    print(f"all figures reached: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
