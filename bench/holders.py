#!/usr/bin/env python3
"""Who holds it (issue 18): for each leak mode of the sample, `leakgate check sample-go-service
--env LEAK=<mode>` with the defaults, --runs times, and the holder the reports name first
(verdict.json's leak_sites.holders[0]) against the one that keeps the leak alive. Prints one
row per mode: how often the right holder came first with the right shape in its plain words,
the time the heap dump analysis took (leak sites and holders, re-run from the saved dumps) and
the dumps' stop-the-world pauses. Target: the right holder first in 5 of 5 runs per mode.

    python bench/holders.py [--runs 5] [--modes globalmap,subslice,...]

LEAK=context's holder is main.run's frame, which holds the app whose context collects the
uncancelled children: right when the words name the contexts never cancelled.
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
SAMPLE = REPO / "sample-go-service"
sys.path.insert(0, str(REPO))

from leakgate import leaksites  # noqa: E402
from leakgate.model import RunRecord  # noqa: E402
from tests.sample_leaks import LEAK_HOLDERS  # noqa: E402

EXPECTED = LEAK_HOLDERS  # mode -> (kind, name prefix, what its description says)


def one(mode: str, out: Path) -> tuple[int, dict[str, object] | None, float, list[float]]:
    command = [sys.executable, "-m", "leakgate", "check", str(SAMPLE), "--env", f"LEAK={mode}"]
    proc = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    verdict_path = out / "verdict.json"
    if not verdict_path.exists():
        return proc.returncode, None, 0.0, []
    holders = json.loads(verdict_path.read_text())["leak_sites"].get("holders") or []
    record = RunRecord.from_json((out / "run.json").read_text())
    start = time.perf_counter()
    leaksites.find(record, out)
    took = time.perf_counter() - start
    pauses = [
        cp.heap_dump_pause
        for t in record.trials
        for cp in t.checkpoints.values()
        if cp.heap_dump_pause is not None
    ]
    return proc.returncode, (holders[0] if holders else None), took, pauses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default=",".join(EXPECTED))
    args = parser.parse_args()
    ok = True
    print(f"{'mode':11} {'right first':>11} {'analysis':>9} {'pause':>7}  first holder (last run)")
    with tempfile.TemporaryDirectory(prefix="leakgate-holders-") as tmp:
        for mode in args.modes.split(","):
            expected = EXPECTED[mode]
            right, times, pauses, last = 0, [], [], None
            for i in range(args.runs):
                code, first, took, paused = one(mode, Path(tmp) / f"{mode}-{i}")
                last = first
                times.append(took)
                pauses += paused
                if first and code == 1:
                    kind, name, words = expected
                    right += (
                        first["kind"] == kind
                        and str(first["name"]).startswith(name)
                        and words in str(first["description"])
                    )
            ok &= right == args.runs
            score = f"{right}/{args.runs}"
            pause = f"{statistics.median(pauses) * 1000:.0f}ms" if pauses else "-"
            shown = last["description"] if last else "(none)"
            print(f"{mode:11} {score:>11} {statistics.median(times):8.2f}s {pause:>7}  {shown}")
    print(f"all right: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
