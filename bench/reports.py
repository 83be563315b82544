#!/usr/bin/env python3
"""Figures for "where it leaks" and the reports (issue 5). Prints three tables:

1. Leak sites: `leakgate check` on the sample service with its defaults, once per leak mode;
   the first site of summary.md's "Where it leaks" must name the leaking function (for the
   goroutine leak, the first goroutine stack too).
2. Rendering: every report (judge + leak sites + JSON, JUnit, Markdown, HTML) regenerated from
   a 5-trials-a-side compare record, as `leakgate report` does: median of --renders rounds in
   one process (the first round, with the imports, printed apart). Target: <= 2 s.
3. Decoding: a heap profile of >= 10 MB uncompressed (written by bench/bigprofile, every
   allocation sampled from 2^18 distinct stacks) read by leakgate's pprof.load against
   `go tool pprof -raw` on the same file, alternating. Target: time ratio <= 1.0.

    python bench/reports.py [--parts sites,render,decode] [--record RUN.json] [--renders 5]

Without --record, the render part first runs `leakgate compare` on a temporary git copy of the
sample service (5 trials a side, 5 s warm-up, 20 s measure: about 5 minutes).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-go-service"
sys.path.insert(0, str(REPO))

# mode -> the function the first site must name (in the site or as its caller)
LEAK_FUNCTIONS = {
    "globalmap": "main.leakGlobalMap",
    "goroutine": "main.leakBlockedGoroutine",
    "keyedcache": "main.leakKeyedCache",
    "unclosed": "main.leakUnclosedBody",
    "context": "main.leakContext",
}


LOAD = "import pathlib, sys; from leakgate import pprof; pprof.load(pathlib.Path(sys.argv[1]))"


def leakgate(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leakgate", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def first_rows(summary: str) -> tuple[str, str]:
    """The first row of the heap-site table and of the goroutine table (or "")."""
    where = summary.split("### Where it leaks", 1)[-1]
    heap, goroutine, table = "", "", ""
    for line in where.splitlines():
        if line.startswith("Live heap grown"):
            table = "heap"
        elif line.startswith("Goroutines added"):
            table = "goroutine"
        elif line.startswith("| 1 |"):
            if table == "heap" and not heap:
                heap = line
            elif table == "goroutine" and not goroutine:
                goroutine = line
    return heap, goroutine


def sites_part(tmp: Path) -> bool:
    print("leak sites (leakgate check sample-go-service --env LEAK=<mode>, defaults)")
    print(f"  {'mode':11} {'exit':>4}  {'first site names the leak':>26}  first site")
    ok = True
    for mode, function in LEAK_FUNCTIONS.items():
        out = tmp / f"sites-{mode}"
        proc = leakgate("check", str(SAMPLE), "--env", f"LEAK={mode}", "--out", str(out))
        summary = out / "summary.md"
        heap, goroutine = first_rows(summary.read_text()) if summary.exists() else ("", "")
        first = heap or goroutine
        named = function in first
        if mode == "goroutine":
            named = named and function in goroutine
        ok &= named and proc.returncode == 1
        shown = " ".join(first.split("|")[2].split()) if first else "(none)"
        print(f"  {mode:11} {proc.returncode:>4}  {'yes' if named else 'NO':>26}  {shown}")
        if mode == "goroutine":
            stack = " ".join(goroutine.split("|")[4].split()) if goroutine else "(none)"
            print(f"  {'':11} {'':>4}  {'first goroutine stack:':>26}  {stack}")
    return ok


def compare_record(tmp: Path) -> Path:
    repo = tmp / "repo"
    shutil.copytree(SAMPLE, repo / "svc")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "base"]):
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@x", *args],
            check=True,
            capture_output=True,
        )
    out = tmp / "compare"
    proc = leakgate("compare", "--base", "HEAD", str(repo / "svc"), "--out", str(out))
    if proc.returncode not in (0, 1):
        raise SystemExit(f"compare failed with exit {proc.returncode}: {proc.stderr[-800:]}")
    return out / "run.json"


def render_part(tmp: Path, record_path: Path | None, rounds: int) -> bool:
    start = time.perf_counter()
    from leakgate import leaksites
    from leakgate.baseline import load_run
    from leakgate.config import Config
    from leakgate.judge import judge
    from leakgate.model import from_plain
    from leakgate.report import Judged, html, junit, markdown

    imported = time.perf_counter() - start
    record_path = record_path or compare_record(tmp)
    out = tmp / "render"
    out.mkdir(exist_ok=True)

    def render_all() -> float:
        t0 = time.perf_counter()
        record = load_run(record_path)
        cfg = from_plain(Config, dict(record.config))
        verdict = judge(record, cfg, None, leaksites.find(record, record_path.parent))
        (out / "verdict.json").write_text(verdict.to_json())
        (out / "junit.xml").write_text(junit.render(Judged(verdict, record)))
        (out / "summary.md").write_text(markdown.render(Judged(verdict, record)))
        (out / "report.html").write_text(html.render(Judged(verdict, record)))
        return time.perf_counter() - t0

    first = render_all()
    times = [render_all() for _ in range(rounds)]
    record = load_run(record_path)
    sides = {t.side for t in record.trials}
    print(
        f"\nrendering every report of a {len(record.trials)}-trial record "
        f"({', '.join(sorted(sides))}; {record_path.stat().st_size / 1e6:.1f} MB run.json)"
    )
    print(f"  imports (scipy, leakgate; matplotlib loads on first render): {imported:.2f} s")
    print(f"  first render, matplotlib import included: {first:.2f} s (target <= 2 s)")
    print(f"  median of {rounds} more renders: {statistics.median(times):.2f} s")
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1024:.0f} KiB" for p in sorted(out.iterdir()))
    print(f"  sizes: {sizes}")
    return first <= 2.0


def decode_part(tmp: Path, rounds: int = 3) -> bool:
    from leakgate import pprof

    profile = tmp / "big.pb.gz"
    subprocess.run(
        ["go", "run", ".", "-depth", "18", "-o", str(profile)],
        cwd=REPO / "bench" / "bigprofile",
        check=True,
        capture_output=True,
        timeout=600,
    )
    size = len(gzip.decompress(profile.read_bytes()))
    ours, go = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", LOAD, str(profile)],
            check=True,
            cwd=REPO,
            timeout=600,
        )
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(
            ["go", "tool", "pprof", "-raw", str(profile)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        go.append(time.perf_counter() - t0)
    samples = len(pprof.load(profile).samples)
    ratio = statistics.median(ours) / statistics.median(go)
    print(f"\ndecoding a {size / 1e6:.1f} MB heap profile ({samples:,} samples), fresh processes")
    print(f"  leakgate pprof.load: {statistics.median(ours):.2f} s (median of {rounds})")
    print(f"  go tool pprof -raw:  {statistics.median(go):.2f} s (median of {rounds})")
    print(f"  ratio: {ratio:.2f} (target <= 1.0)")
    return size >= 10_000_000 and ratio <= 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", default="sites,render,decode")
    parser.add_argument("--record", type=Path, help="a compare run.json to render (skip compare)")
    parser.add_argument("--renders", type=int, default=5)
    opts = parser.parse_args()
    parts = opts.parts.split(",")
    ok = True
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if "sites" in parts:
            ok &= sites_part(tmp)
        if "render" in parts:
            ok &= render_part(tmp, opts.record, opts.renders)
        if "decode" in parts:
            ok &= decode_part(tmp)
    print(f"\nall figures reached: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
