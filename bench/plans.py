"""How often a paired compare's sequential plan fails, passes or ends `~`, by simulation.

    python bench/plans.py [--noise 0.06,0.08] [--runs 300] [--plans 8-16/2,8-28/4,8-28/10]

Each simulated run has the four metrics a paired compare gates by default (p95 latency and the
three cost metrics, at their default thresholds), with Gaussian noise on each block's log value
so that one pair's log-ratio varies by `--noise` for p95 latency (the metric whose per-pair
spread is widest: 5-8% measured on the sample), 5% for CPU, 1% for bytes and 0.5% for
allocations per request. Only the named metric changes; the decision is the one
`leakgate.sequential.decide` takes on real blocks. It prints, per plan (first look-last look /
pairs between looks) and true change: the share of runs that failed, that ended `~`, and the
mean number of pairs the run took (the wall time: about 4.3 s a pair on the sample, plus ~15 s
for the builds, start-up and warm-up).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leakgate import sequential
from leakgate.metrics import DEFAULT_THRESHOLDS
from leakgate.sequential import Plan

BASE = {
    "p95_latency": 12e-3,
    "cpu_per_request": 100e-6,
    "alloc_bytes_per_request": 4600.0,
    "allocs_per_request": 42.0,
}
NOISE = {"cpu_per_request": 0.05, "alloc_bytes_per_request": 0.01, "allocs_per_request": 0.005}
CASES = (
    ("A/A", {}),
    ("p95 +15% (SLOW=20)", {"p95_latency": 1.149}),
    ("CPU +20%", {"cpu_per_request": 1.20}),
    ("CPU +15%", {"cpu_per_request": 1.15}),
    ("CPU +10% (at the gate)", {"cpu_per_request": 1.10}),
    ("CPU +8% (inside it)", {"cpu_per_request": 1.08}),
    ("CPU +5% (half of it)", {"cpu_per_request": 1.05}),
)
GATED = {name: DEFAULT_THRESHOLDS[name] for name in BASE}


def one_run(
    ratios: dict[str, float], noise: dict[str, float], pairs: int, rng: random.Random
) -> dict[str, tuple[list[float], list[float]]]:
    out = {}
    for name, value in BASE.items():
        sd = noise[name] / math.sqrt(2)  # per block, so a pair's log-ratio varies by noise
        base = [value * math.exp(rng.gauss(0, sd)) for _ in range(pairs)]
        cand = [ratios.get(name, 1.0) * value * math.exp(rng.gauss(0, sd)) for _ in range(pairs)]
        out[name] = (base, cand)
    return out


def simulate(
    plan: Plan, ratios: dict[str, float], noise: dict[str, float], runs: int, seed: int
) -> tuple[float, float, float]:
    rng = random.Random(seed)
    fails = undecided = pairs = 0
    for _ in range(runs):
        decision = sequential.decide(one_run(ratios, noise, plan.max_pairs, rng), GATED, plan)
        verdicts = [c.verdict for c in decision.comparisons if c.gated]
        failed = "fail" in verdicts
        fails += failed
        undecided += not failed and any(v != "pass" for v in verdicts)
        pairs += decision.pairs
    return fails / runs, undecided / runs, pairs / runs


def parse_plan(text: str) -> Plan:
    first, _, rest = text.partition("-")
    last, _, every = rest.partition("/")
    return Plan(min_pairs=int(first), max_pairs=int(last), every=int(every or 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="0.06,0.08", help="p95 per-pair spreads to try")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--plans", default="8-16/2,8-28/4,8-28/10")
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    plans = [parse_plan(p) for p in opts.plans.split(",")]
    default = Plan()
    print(f"default plan: {default.min_pairs}-{default.max_pairs}/{default.every}")
    print(f"{'p95 noise':>9} {'case':24} {'plan':8} {'fail':>6} {'~':>6} {'pairs':>6}")
    for p95 in (float(x) for x in opts.noise.split(",")):
        noise = {"p95_latency": p95, **NOISE}
        for label, ratios in CASES:
            for plan in plans:
                fail, undecided, pairs = simulate(plan, ratios, noise, opts.runs, opts.seed)
                name = f"{plan.min_pairs}-{plan.max_pairs}/{plan.every}"
                print(
                    f"{p95:>9.0%} {label:24} {name:8} {fail:>6.0%} {undecided:>6.0%} {pairs:>6.1f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
