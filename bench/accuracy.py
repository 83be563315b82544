#!/usr/bin/env python3
"""Accuracy of `leakgate compare --base` on the sample service, with the defaults.

A temporary git repository holds a copy of the sample service (the base commit); each scenario
edits the working tree the way a real change would (a slower pricing path, a leak) and runs
`leakgate compare --base HEAD` repeatedly. Prints, per scenario, how often the gate failed
against how often it should have, and the wall time of one compare.

Targets (issues 4, 16 and 17), with the default paired design: median compare wall time
<= 90 s, worst <= 150 s; A/A false fails <= 1 in 100 runs quiet and <= 1 in 50 busy; CPU=60 (a
CPU-per-request regression of +12-16%) and SLOW=20 caught in >= 95% of runs (SLOW=20 >= 90%
busy); each leak mode caught every time; boundedcache never flagged; the CPU and allocation
diffs name the function the switch changed first. The httpbin-* scenarios run the same on
go-httpbin v2.26.0 from the Go module proxy (examples/go-httpbin/leakgate.yml), a server this
repository does not own: A/A, a regexp compiled per request (CPU) and a 32 KiB buffer made per
response (allocation). The trials design (--design trials) keeps the
issue-16 targets: 0 A/A false fails of >= 20 and one compare <= 6 minutes. `--busy` runs
everything beside `stress-ng --cpu 1`. Per run the log keeps each gated metric's estimate and
95% interval, so the intervals' coverage over A/A runs (does a fresh pair of processes land
where one run's interval says?) can be read off it, and each cost metric's block-to-block
spread: per side (CV over blocks or trials) and of the per-pair ratio.

    python bench/accuracy.py [--runs 20] [--scenarios aa,slow20,cpu60,alloc16k,...]
                             [--design paired|trials] [--duration 20s] [--log runs.jsonl]
                             [--verbose] [--busy]
    python bench/accuracy.py --summarize runs.jsonl

--log appends one JSON line per compare (scenario, exit code, failing checks, gated comparisons,
wall time, load average, and the version of the code under test: a digest of leakgate/ and
sample-go-service/ blind to comments and docstrings), so runs made in several sittings add up.
--summarize prints the table over the logged runs, one table per code version: runs of
different code are never pooled. --version-of REV prints a commit's code version.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-go-service"

# An edit of the candidate's code: (file under the service's directory, text, replacement).
Edit = tuple[str, str, str]


def _main_go(old: str, new: str) -> tuple[Edit, ...]:
    return (("main.go", old, new),)


# scenario -> (edits turning the change on in the candidate's code, should it fail?)
SCENARIOS: dict[str, tuple[tuple[Edit, ...], bool]] = {
    "aa": ((), False),
    "slow20": (_main_go('parseSlow(getenv("SLOW"))', 'parseSlow("20")'), True),
    "slow50": (_main_go('parseSlow(getenv("SLOW"))', 'parseSlow("50")'), True),
    **{
        mode: (_main_go('parseLeak(getenv("LEAK"))', f'parseLeak("{mode}")'), True)
        for mode in (
            "globalmap",
            "goroutine",
            "keyedcache",
            "unclosed",
            "context",
            "subslice",
            "queue",
            "timer",
        )
    },
    "boundedcache": (_main_go('parseLeak(getenv("LEAK"))', 'parseLeak("boundedcache")'), False),
    # issue 16: pure CPU regressions in main.priceWork, and a pure allocation regression (16 KiB
    # of garbage per request, in main.renderAudit); neither touches the simulated stock lookup.
    # The pricing is about a third of the sample's CPU per request by its CPU profile (31 of
    # 91 µs: HTTP, JSON and the kernel's network work are the rest), so CPU=60, 60% more pricing
    # rounds, measured +12-16% CPU per request over 8 compares, and CPU=20 +3-9% (within the
    # gate's +10%: it passed 3 of 3, as it should). Logs before 2026-12-02 call CPU=60 "cpu20".
    "cpu60": (_main_go('parseCPU(getenv("CPU"))', 'parseCPU("60")'), True),
    "cpu100": (_main_go('parseCPU(getenv("CPU"))', 'parseCPU("100")'), True),
    "alloc16k": (_main_go('parseAlloc(getenv("ALLOC"))', 'parseAlloc("16KiB")'), True),
    # A server this repository does not own (issue 17: "on the sample and on go-httpbin"),
    # changed the way real code regresses. regexp: a validation regexp compiled on every
    # request in getClientIP (the classic Go slip: MustCompile inside the handler); jsonbuf:
    # writeJSON encodes into a 32 KiB buffer made per response ("pre-sized to avoid growth").
    # Responses stay the same.
    "httpbin-aa": ((), False),
    "httpbin-regexp": (
        (
            (
                "httpbin/helpers.go",
                "func getClientIP(r *http.Request) string {\n",
                "func getClientIP(r *http.Request) string {\n"
                "\tif !regexp.MustCompile(`^[0-9A-Za-z.:%\\[\\]-]+$`).MatchString(r.RemoteAddr) {\n"
                '\t\treturn ""\n'
                "\t}\n",
            ),
        ),
        True,
    ),
    "httpbin-jsonbuf": (
        (
            (
                "httpbin/helpers.go",
                "\tw.WriteHeader(status)\n\tmustMarshalJSON(w, val)\n",
                "\tbuf := bytes.NewBuffer(make([]byte, 0, 32<<10))\n"
                "\tmustMarshalJSON(buf, val)\n"
                "\tw.WriteHeader(status)\n"
                "\t_, _ = w.Write(buf.Bytes())\n",
            ),
        ),
        True,
    ),
}
HTTPBIN_MODULE = "github.com/mccutchen/go-httpbin/v2@v2.26.0"
HTTPBIN_CONFIG = REPO / "examples" / "go-httpbin" / "leakgate.yml"
# A bounded cache is no leak, but it does cost allocations (each response is copied and hashed:
# +19% bytes and +12% allocations per request measured), which the default +10% allocation gate
# rightly fails. What it must never do is fail a leak check: that is what is counted for it.
LEAK_CHECKS = (
    "retained_per_request",
    "goroutine_growth",
    "heap_live",
    "retained_per_request_vs_baseline",
)
LEAK_ONLY = {"boundedcache"}


def counted_fail(name: str, exit_code: int, failing: list[str]) -> bool:
    """Whether a run counts as failed for its scenario (for LEAK_ONLY ones: a leak check)."""
    if name in LEAK_ONLY:
        return any(check in LEAK_CHECKS for check in failing)
    return exit_code == 1


# The function the switch changed: the first one the CPU or allocation diff must name.
CHANGED_FUNCTION = {
    "cpu60": ("cpu", "main.priceWork"),
    "cpu100": ("cpu", "main.priceWork"),
    "alloc16k": ("alloc", "main.renderAudit"),
    "httpbin-regexp": ("cpu", "github.com/mccutchen/go-httpbin/v2/httpbin.getClientIP"),
    "httpbin-jsonbuf": ("alloc", "github.com/mccutchen/go-httpbin/v2/httpbin.writeJSON"),
}
COST_METRICS = ("cpu_per_request", "alloc_bytes_per_request", "allocs_per_request")
# the per-pair spread is logged for these too (bench/plans.py simulates with it)
PAIR_SPREAD_METRICS = (*COST_METRICS, "p95_latency")
# The spread each cost metric may have over A/A trials (coefficient of variation, issue 16).
CV_TARGETS = {
    "cpu_per_request": 0.02,
    "alloc_bytes_per_request": 0.005,
    "allocs_per_request": 0.005,
}
BUSY_COMMAND = ("stress-ng", "--cpu", "1", "--timeout", "3600s", "--quiet")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=bench", "-c", "user.email=b@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def _behaviour(path: str, data: bytes) -> bytes:
    """What of a file can change the gate: Python without comments or docstrings, else all."""
    if not path.endswith(".py"):
        return data
    tree = ast.parse(data)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0] = ast.Pass()  # the docstring
    return ast.dump(tree).encode()


def copy_httpbin(dest: Path) -> None:
    """go-httpbin from the Go module proxy (the module cache's files are read-only: a copy)."""
    from leakgate.build import writable_copy

    info = subprocess.run(
        ["go", "mod", "download", "-json", HTTPBIN_MODULE],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    writable_copy(Path(json.loads(info.stdout)["Dir"]), dest)


def code_version(rev: str = "HEAD") -> str:
    """A digest of the judging code and the sample at `rev`, blind to comments and docstrings.

    Equal digests, equal gate: runs logged under one digest may be pooled, whichever commit
    they were made on.
    """
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, "leakgate", "sample-go-service"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                digest.update(member.name.encode() + b"\0")
                digest.update(_behaviour(member.name, handle.read()) + b"\0")
    dirty = (
        rev == "HEAD"
        and subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "leakgate", "sample-go-service"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    return digest.hexdigest()[:16] + ("-dirty" if dirty else "")


def cost_spread(out: Path) -> dict[str, dict[str, float | None]]:
    """Each cost metric's coefficient of variation over each side's trials of one compare."""
    from leakgate import analysis, sequential
    from leakgate.metrics import metric_values
    from leakgate.model import RunRecord

    run = out / "run.json"
    if not run.exists():
        return {}
    record = RunRecord.from_json(run.read_text())
    spread: dict[str, dict[str, float | None]] = {m: {} for m in COST_METRICS}
    if record.design == "paired":
        rate = analysis.offered_rate(record.trials)
        paired = sequential.block_values(record.blocks, rate, None)
        for metric in PAIR_SPREAD_METRICS:
            base, cand = paired.get(metric, ([], []))
            spread.setdefault(metric, {})
            for side, values in (("baseline", base), ("candidate", cand)):
                cv = analysis.spread([v for v in values if math.isfinite(v)])
                if metric in CV_TARGETS:
                    spread[metric][side] = None if cv is None else round(cv, 5)
            ok = [
                (b, c)
                for b, c in zip(base, cand, strict=True)
                if math.isfinite(b) and math.isfinite(c) and b > 0 and c > 0
            ]
            ratio = sequential.spread(
                sequential.log_ratios([b for b, _ in ok], [c for _, c in ok], "lower")
            )
            spread[metric]["pair_ratio"] = None if ratio is None else round(ratio, 5)
        return spread
    for side in ("baseline", "candidate"):
        values = metric_values(t for t in record.trials if t.side == side)
        for metric in COST_METRICS:
            cv = analysis.spread(values[metric])
            spread[metric][side] = None if cv is None else round(cv, 5)
    return spread


def first_named(verdict: dict[str, Any]) -> dict[str, str]:
    """The function each cost diff names first (the largest growth, base -> candidate)."""
    named = {}
    for profile in verdict.get("costs", {}).get("profiles", []):
        if profile["sites"]:
            named[profile["kind"]] = profile["sites"][0]["function"]
    return named


def print_costs(runs: list[dict[str, Any]], name: str) -> None:
    """The cost metrics' spread over the A/A trials, and which function the diffs named."""
    for metric in PAIR_SPREAD_METRICS:
        by_side = [r.get("cv", {}).get(metric, {}) for r in runs]
        cvs = [cv for s in by_side for k, cv in s.items() if cv is not None and k != "pair_ratio"]
        ratios = [s["pair_ratio"] for s in by_side if s.get("pair_ratio") is not None]
        if cvs and metric in CV_TARGETS:
            target = CV_TARGETS[metric]
            print(
                f"  {metric}: spread over trials or blocks (CV) median "
                f"{statistics.median(cvs):.2%}, worst {max(cvs):.2%} over {len(cvs)} sides "
                f"(target <= {target:.1%})"
            )
        if ratios:
            print(
                f"  {metric}: spread of the per-pair ratio median {statistics.median(ratios):.2%},"
                f" worst {max(ratios):.2%} over {len(ratios)} runs"
            )
    if name in CHANGED_FUNCTION:
        kind, function = CHANGED_FUNCTION[name]
        right = sum(r.get("named", {}).get(kind) == function for r in runs)
        print(f"  first {kind} function named is {function}: {right}/{len(runs)} runs")


def print_coverage(runs: list[dict[str, Any]]) -> None:
    """A/A runs of the paired design: how often each gated metric's 95% interval held 0 (each
    run is a fresh pair of processes, so luck of the process that one run cannot see shows as
    coverage under 95%), and the spread of the estimates over runs against one run's interval."""
    by_metric: dict[str, list[tuple[float, float, float]]] = {}
    for run in runs:
        for row in run.get("gated", []):
            low, high, change = row.get("interval_low"), row.get("interval_high"), row["change"]
            if low is not None and high is not None and change is not None:
                by_metric.setdefault(row["metric"], []).append((low, change, high))
    for metric, rows in by_metric.items():
        covered = sum(low <= 0 <= high for low, _, high in rows)
        changes = [c for _, c, _ in rows]
        half = statistics.median((high - low) / 2 for low, _, high in rows)
        between = statistics.stdev(changes) if len(changes) > 1 else float("nan")
        print(
            f"  {metric}: interval held 0 in {covered}/{len(rows)} A/A runs; estimates over runs"
            f" sd {between:.2%} vs a run's half-interval {half:.2%} (≈ 2 sd)"
        )


def figures_met(
    name: str,
    should_fail: bool,
    runs: int,
    fails: int,
    walls: list[float],
    design: str = "paired",
    busy: bool = False,
) -> bool:
    expected = fails if should_fail else runs - fails
    wall = statistics.median(walls)
    if design != "paired":
        if name == "aa":
            ok = fails == 0  # issue 16: 0 of 20, quiet and busy
        elif name in ("slow20", "cpu60"):
            ok = expected / runs >= 0.95
        else:
            ok = expected == runs
        return ok and wall <= 360
    if name in ("aa", "httpbin-aa"):
        ok = fails / runs <= (1 / 50 if busy else 1 / 100)
    elif name == "slow20":
        ok = expected / runs >= (0.90 if busy else 0.95)
    elif name in ("cpu60", "cpu100", "httpbin-regexp"):
        ok = expected / runs >= 0.95
    else:
        ok = expected == runs
    return ok and wall <= 90 and max(walls) <= 150


def print_row(
    name: str,
    should_fail: bool,
    runs: int,
    fails: int,
    wall: float,
    failing: list[list[str]],
    worst: float,
) -> None:
    """The scenario's table row, and every check that failed in any of its runs."""
    expected = fails if should_fail else runs - fails
    print(
        f"{name:13} {'fail' if should_fail else 'pass':>7} {fails:>4}/{runs:<4} "
        f"{expected / runs:>11.0%} {wall:>16.0f} {worst:>7.0f}",
        flush=True,
    )
    seen = sorted({check for run in failing for check in run})
    print(f"  failing checks seen: {', '.join(seen) or '-'}", flush=True)


HEADER = (
    f"{'scenario':13} {'should':>7} {'failed':>9} {'as expected':>12} {'wall s (median)':>16} "
    f"{'worst':>7}"
)


def summarize(log: Path) -> int:
    """One table per code version over every logged run, each with its own verdict on the
    figures (runs of different code are never pooled). Exits 0 when the code of the most
    recently logged run reached every figure."""
    by_version: dict[str, dict[str, list[dict[str, Any]]]] = {}
    latest = ""
    for line in log.read_text().splitlines():
        if line.strip():
            run = json.loads(line)
            key = run["version"] + f" design {run.get('design', 'trials')}"
            key += " (busy: " + run["busy"] + ")" if run.get("busy") else ""
            name = {"cpu20": "cpu60"}.get(run["scenario"], run["scenario"])  # renamed
            by_version.setdefault(key, {}).setdefault(name, []).append(run)
            latest = key
    reached: dict[str, bool] = {}
    for version, scenarios in by_version.items():
        print(f"code version {version}")
        print(HEADER)
        ok = True
        missing = []
        for name in SCENARIOS:
            runs = [r for r in scenarios.get(name, []) if r["exit"] in (0, 1)]
            if name.startswith("httpbin-") and not scenarios.get(name):
                continue  # the third-party server is benched on its own
            wanted = 20 if name in ("aa", "slow20", "cpu60", "alloc16k") else 1
            if len(runs) < wanted:
                missing.append(f"{name} ({len(runs)}/{wanted} runs)")
                ok = False
            if not runs:
                continue
            fails = sum(counted_fail(name, r["exit"], r["failing"]) for r in runs)
            wall = statistics.median(r["wall_s"] for r in runs)
            failing = [r["failing"] for r in runs]
            worst = max(r["wall_s"] for r in runs)
            print_row(name, SCENARIOS[name][1], len(runs), fails, wall, failing, worst)
            print_costs(runs, name)
            if name == "aa" and runs[0].get("design") == "paired":
                print_coverage(runs)
            errors = len(scenarios.get(name, [])) - len(runs)
            if errors:
                print(f"  runs that ended in an error (not counted): {errors}")
            first = runs[0]
            walls = [r["wall_s"] for r in runs]
            ok &= figures_met(
                name,
                SCENARIOS[name][1],
                len(runs),
                fails,
                walls,
                first.get("design", "trials"),
                bool(first.get("busy")),
            )
        if missing:
            print(f"  too few runs: {', '.join(missing)}")
        print(f"  all figures reached by {version}: {ok}")
        reached[version] = ok
    return 0 if reached.get(latest) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--duration", help="override the measure window (default: config's)")
    parser.add_argument("--design", choices=("paired", "trials"), default="paired")
    parser.add_argument("--verbose", action="store_true", help="print each run's gated comparisons")
    parser.add_argument("--log", type=Path, help="append one JSON line per compare to this file")
    parser.add_argument("--summarize", type=Path, help="print the table over a --log file")
    parser.add_argument("--version-of", metavar="REV", help="print the code version of a commit")
    parser.add_argument(
        "--busy",
        action="store_true",
        help="burn one core with `stress-ng --cpu 1` for the whole bench (a shared runner)",
    )
    opts = parser.parse_args()
    if opts.summarize:
        return summarize(opts.summarize)
    if opts.version_of:
        print(code_version(opts.version_of))
        return 0
    version = code_version()
    busy = None
    if opts.busy:
        busy = subprocess.Popen(BUSY_COMMAND)
        print(f"busy: {' '.join(BUSY_COMMAND)} (pid {busy.pid})")
    try:
        return _run(opts, version, " ".join(BUSY_COMMAND[:3]) if busy else "")
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait(timeout=10)


def _run(opts: argparse.Namespace, version: str, busy: str) -> int:
    print(HEADER)
    ok = True
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        repo = tmp / "repo"
        names = opts.scenarios.split(",")
        shutil.copytree(SAMPLE, repo / "svc")
        if any(name.startswith("httpbin-") for name in names):
            copy_httpbin(repo / "httpbin")
        git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-qm", "base")
        for name in names:
            edits, should_fail = SCENARIOS[name]
            git(repo, "checkout", "-q", "--", ".")  # the base's code, then this change
            service = repo / ("httpbin" if name.startswith("httpbin-") else "svc")
            for file, old, new in edits:
                path = service / file
                text = path.read_text()
                if old not in text:
                    raise SystemExit(f"{name}: the edit {old!r} no longer applies to {file}")
                path.write_text(text.replace(old, new, 1))
            fails, walls, reasons = 0, [], []
            runs_done: list[dict[str, Any]] = []
            for i in range(opts.runs):
                out = tmp / f"{name}-{i}"
                cmd = [
                    sys.executable,
                    "-m",
                    "leakgate",
                    "compare",
                    "--base",
                    "HEAD",
                    *(
                        [str(service / "cmd" / "go-httpbin"), "--config", str(HTTPBIN_CONFIG)]
                        if service.name == "httpbin"
                        else [str(service)]
                    ),
                    "--out",
                    str(out),
                    "--design",
                    opts.design,
                ]
                if opts.duration:
                    cmd += ["--duration", opts.duration]
                load_before = os.getloadavg()[0]
                start = time.monotonic()
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
                walls.append(time.monotonic() - start)
                verdict = {}
                if (out / "verdict.json").exists():
                    verdict = json.loads((out / "verdict.json").read_text())
                failing = sorted(
                    c["name"] for c in verdict.get("checks", []) if c["status"] == "fail"
                )
                gated = [row for row in verdict.get("comparisons", []) if row["gated"]]
                runs_done.append({"cv": cost_spread(out), "named": first_named(verdict)})
                if opts.log:
                    entry = {
                        "version": version,
                        "design": opts.design,
                        "busy": busy,
                        **runs_done[-1],
                        "scenario": name,
                        "exit": proc.returncode,
                        "failing": failing,
                        "gated": gated,
                        "wall_s": round(walls[-1], 1),
                        "loadavg_before": round(load_before, 2),
                        "loadavg_after": round(os.getloadavg()[0], 2),
                        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    }
                    with opts.log.open("a") as log:
                        log.write(json.dumps(entry) + "\n")
                if proc.returncode not in (0, 1):
                    print(f"  run {i + 1}: exit {proc.returncode}: {proc.stderr[-500:]}")
                    continue
                fails += counted_fail(name, proc.returncode, failing)
                reasons.append(failing)
                for row in gated if opts.verbose else ():
                    change = "n/a" if row["change"] is None else f"{row['change']:+.1%}"
                    print(
                        f"  run {i + 1}: {row['metric']} {change} p={row['p_value']} "
                        f"{row['verdict']}",
                        flush=True,
                    )
                shutil.rmtree(out, ignore_errors=True)
            wall = statistics.median(walls)
            counted = len(reasons)  # runs that ended in a verdict; errors are not passes
            if not counted:
                ok = False
                continue
            print_row(name, should_fail, counted, fails, wall, reasons, max(walls))
            print_costs(runs_done, name)
            ok &= figures_met(name, should_fail, counted, fails, walls, opts.design, bool(busy))
    print(f"all figures reached: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
