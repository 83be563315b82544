"""Paired blocks, judged sequentially: a signed-rank test on per-pair log-ratios, looked at
several times as the pairs come in, with the false-fail rate held over all the looks.

Pure: per-block values in, `PairedComparison`s out; the runner asks `decide` after each look
whether it may stop.

A paired compare measures both builds in short alternating blocks (ABBA: base, cand, cand,
base, ...). Each adjacent base/candidate pair gives one observation per metric, the log of the
candidate's value over the base's in the *worse* direction (d > 0: the candidate is worse).
Noise that lasts longer than a pair (a neighbour burning a core, thermal drift) hits both
blocks of a pair and cancels in d.

The test and its interval:
- p: the exact one-sided Wilcoxon signed-rank test of "d is centred above 0" (ties in |d| get
  average ranks and the null distribution is computed for those ranks; zeros are dropped). It
  needs no assumption beyond "under no change, d is as likely + as −", which pairing in time
  makes true, and one disturbed block moves it by one rank, not by its size.
- the estimate: the Hodges–Lehmann median of the Walsh averages of d, as a ratio exp(·) − 1;
  the 95% interval: the Walsh averages' order statistics at the signed-rank critical values
  (the interval that inverts the same test).

Sequential looks, and why the false-fail rate holds: the decision is taken at fixed looks
(after `min_pairs`, then every `every` pairs up to `max_pairs`, all fixed before the run), and
each look spends a fixed part of alpha: `first_share` at the first, the rest split evenly.
The parts sum to alpha, so by the union bound the chance of any false fail over all looks is
at most alpha whatever the dependence between looks (Bonferroni alpha spending; a group-
sequential boundary would be less conservative but needs a normal model the signed-rank test
avoids). Within a look, every gated metric with data is one Holm family. The first look gets
the largest part because an exact test of n pairs cannot reach below 2^-n: with 4 gated
metrics, 8 pairs and 0.4 × 0.05 the strongest metric needs p < 0.005 > 1/256, so a clear
regression can fail at the first look.

A gated metric fails when, at a look, it is significantly worse than half its threshold (the
signed-rank test of d − log1p(max_increase / 2), Holm-adjusted, under that look's alpha: see
_gate_p for why neither against no change nor against the whole threshold) AND its estimate is
beyond the threshold AND beyond the floor. It passes (and stays
passed) when the interval's upper end is within the threshold or within the floor: it cannot be
that large.
Otherwise it is undecided, and after the last look `~`, with how noisy the run was and how many
pairs would settle it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from leakgate import analysis
from leakgate.compare import ALPHA, holm
from leakgate.config import CompareConfig
from leakgate.metrics import METRICS, Direction, Metric, Threshold
from leakgate.model import Block, Trial
from leakgate.units import format_metric

PairedVerdict = Literal["pass", "fail", "inconclusive", "too_few", "no_data"]

CONFIDENCE = 0.95
FIRST_SHARE = 0.4
# A gated metric's test is of "worse by more than this share of max_increase", not of "worse
# at all" (with several looks, a small change whose noisy estimate crosses the threshold at one
# look would fail far more often than alpha) nor of "worse than the threshold itself" (blind to
# a change just beyond it): see _gate_p.
TEST_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Plan:
    """When the decision is looked at, and how alpha is spent over the looks."""

    min_pairs: int = 8
    max_pairs: int = 28
    every: int = 10
    alpha: float = ALPHA
    first_share: float = FIRST_SHARE

    def __post_init__(self) -> None:
        if not 2 <= self.min_pairs <= self.max_pairs:
            raise ValueError(f"need 2 <= min_pairs <= max_pairs, got {self}")
        if self.every < 1 or not 0.0 < self.alpha < 1.0 or not 0.0 < self.first_share <= 1.0:
            raise ValueError(f"bad sequential plan {self}")

    def looks(self) -> tuple[int, ...]:
        """The numbers of pairs after which the decision is taken, the last one max_pairs."""
        looks = list(range(self.min_pairs, self.max_pairs + 1, self.every))
        if looks[-1] != self.max_pairs:
            looks.append(self.max_pairs)
        return tuple(looks)

    def alpha_at(self, look: int) -> float:
        """The part of alpha spent at the look-th look (from 0); the parts sum to alpha."""
        count = len(self.looks())
        if count == 1:
            return self.alpha
        if look == 0:
            return self.alpha * self.first_share
        return self.alpha * (1.0 - self.first_share) / (count - 1)


# What one block measures (its load and the counters around it); the leak checks, the heap and
# RSS series and the GC-per-minute figures need checkpoints or samples, judged per side.
BLOCK_METRICS = frozenset(
    {
        "p50_latency",
        "p95_latency",
        "p99_latency",
        "throughput",
        "error_rate",
        "cpu_per_request",
        "alloc_bytes_per_request",
        "allocs_per_request",
        "gc_cycles_per_1k_requests",
    }
)


def can_fail(plan: Plan, gated: int) -> bool:
    """Whether any look of `plan` can fail one of `gated` metrics: the exact test of n pairs
    reaches p = 2^-n at best, and Holm's first step compares it with the look's alpha / gated."""
    return any(
        2.0**-pairs < plan.alpha_at(i) / max(gated, 1) for i, pairs in enumerate(plan.looks())
    )


def plan_of(compare: CompareConfig) -> Plan:
    """The looks of a paired compare configured as `compare`."""
    return Plan(min_pairs=compare.min_pairs, max_pairs=compare.max_pairs, every=compare.look_every)


@dataclass(frozen=True, slots=True)
class PairedComparison:
    """One metric over the pairs, judged at the look the run stopped at (or last reached).

    `change`, `low` and `high` are the estimated change in the worse direction and its 95%
    interval (+0.12 = 12% worse); None without a relative scale (a zero baseline). `spread` is
    the standard deviation of the per-pair log-ratios (≈ the relative noise of one pair).
    """

    metric: str
    pairs: int
    baseline: tuple[float, ...]
    candidate: tuple[float, ...]
    baseline_median: float | None
    candidate_median: float | None
    change: float | None
    low: float | None
    high: float | None
    p_value: float | None
    p_adjusted: float | None
    alpha: float  # the alpha of the look this verdict was taken at
    look: int  # the look (from 1) the verdict was taken at; 0 when none was reached
    threshold: float | None
    floor: float | None
    spread: float | None
    verdict: PairedVerdict
    reason: str

    @property
    def gated(self) -> bool:
        return self.threshold is not None


@dataclass(frozen=True, slots=True)
class Decision:
    """Every metric at one look, and whether the run can stop there."""

    comparisons: tuple[PairedComparison, ...]
    done: bool
    pairs: int


# -- the test, the estimate and the interval ----------------------------------------------------


def log_ratios(base: Sequence[float], cand: Sequence[float], direction: Direction) -> list[float]:
    """Per pair, log(candidate / base) in the worse direction (> 0: the candidate is worse)."""
    sign = 1.0 if direction == "lower" else -1.0
    return [sign * math.log(c / b) for b, c in zip(base, cand, strict=True)]


def signed_rank_p(d: Sequence[float]) -> float:
    """Exact one-sided p of the Wilcoxon signed-rank test that d is centred above 0.

    Zeros are dropped; tied |d| share their average rank, and the null distribution (every
    sign equally likely) is counted for exactly those ranks, so ties cost no approximation.
    """
    values = [x for x in d if x != 0.0]
    n = len(values)
    if n == 0:
        return 1.0
    ranks = _average_ranks([abs(x) for x in values])
    doubled = [round(2 * r) for r in ranks]  # average ranks are multiples of 1/2
    observed = sum(r for r, x in zip(doubled, values, strict=True) if x > 0)
    counts = _sign_counts(tuple(sorted(doubled)))
    at_least = sum(counts[observed:])
    return float(at_least) / float(2**n)


@lru_cache(maxsize=256)
def _sign_counts(doubled: tuple[int, ...]) -> tuple[int, ...]:
    """counts[s]: how many of the 2^n sign choices give a positive-rank sum of s."""
    counts = [1]
    for r in doubled:
        grown = counts + [0] * r
        for s, c in enumerate(counts):
            grown[s + r] += c
        counts = grown
    return tuple(counts)


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def walsh_averages(d: Sequence[float]) -> list[float]:
    """(d_i + d_j) / 2 for every i ≤ j, sorted."""
    return sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


def hodges_lehmann(d: Sequence[float]) -> float:
    """The Hodges–Lehmann estimate of d's centre: the median of its Walsh averages."""
    walsh = walsh_averages(d)
    middle = len(walsh) // 2
    return walsh[middle] if len(walsh) % 2 else (walsh[middle - 1] + walsh[middle]) / 2


def interval(d: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The signed-rank confidence interval for d's centre (Walsh averages' order statistics);
    (-inf, inf) when there are too few pairs for that confidence."""
    n = len(d)
    walsh = walsh_averages(d)
    k = _critical(n, (1.0 - confidence) / 2)
    if k < 1:
        return -math.inf, math.inf
    return walsh[k - 1], walsh[len(walsh) - k]


@lru_cache(maxsize=128)
def _critical(n: int, tail: float) -> int:
    """The largest k with P(W+ ≤ k − 1) ≤ tail under the null (integer ranks 1..n)."""
    counts = _sign_counts(tuple(2 * r for r in range(1, n + 1)))
    total = 2**n
    cumulative = 0
    k = 0
    for w in range(n * (n + 1) // 2 + 1):
        cumulative += counts[2 * w]
        if cumulative / total > tail:
            break
        k = w + 1
    return k


def spread(d: Sequence[float]) -> float | None:
    """The sample standard deviation of d (None under two values)."""
    if len(d) < 2:
        return None
    mean = sum(d) / len(d)
    return math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1))


# -- the values of the pairs -------------------------------------------------------------------


Values = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def block_values(
    blocks: Sequence[Block], offered_rate: float | None, error_limit: float | None
) -> dict[str, tuple[list[float], list[float]]]:
    """Per metric, (base values, candidate values), one per complete pair in pair order, NaN
    where a block gave none (a latency from a block that missed its rate or error limit).
    Metrics no block gave a value for (the leak checks, which need checkpoints) are left out."""
    pairs: dict[int, dict[str, Block]] = {}
    for b in blocks:
        pairs.setdefault(b.pair, {})[b.side] = b
    complete = [pairs[k] for k in sorted(pairs) if len(pairs[k]) == 2]
    out: dict[str, tuple[list[float], list[float]]] = {}
    for name, metric in METRICS.items():
        base = [_value(p["baseline"], metric, offered_rate, error_limit) for p in complete]
        cand = [_value(p["candidate"], metric, offered_rate, error_limit) for p in complete]
        # kept when a block could give it, even if none did (a latency from blocks that all
        # missed their rate is no data, not an absent metric)
        if any(math.isfinite(_value(b, metric, offered_rate, None, steady=False)) for b in blocks):
            out[name] = (base, cand)
    return out


def _value(
    block: Block,
    metric: Metric,
    offered_rate: float | None,
    error_limit: float | None,
    *,
    steady: bool = True,
) -> float:
    """The metric's value in one block (NaN: none); with `steady`, NaN for a latency of a
    block that missed its offered rate or error limit."""
    trial = Trial(
        index=block.index,
        side=block.side,
        load=block.load,
        cost=block.cost,
        measure_seconds=block.seconds,
        offered_rate=offered_rate,
    )
    if steady and metric.needs_steady_load and analysis.invalid_reason(trial, error_limit):
        return math.nan
    value = metric.per_trial(trial)
    return math.nan if value is None else float(value)


# -- one look -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Measured:
    metric: str
    base: tuple[float, ...]
    cand: tuple[float, ...]
    d: tuple[float, ...]
    relative: bool  # d are log-ratios (else differences in the metric's unit)
    base_median: float | None
    p: float | None


def _measured(
    name: str, base: Sequence[float], cand: Sequence[float], direction: Direction
) -> _Measured:
    pairs = [
        (b, c) for b, c in zip(base, cand, strict=True) if math.isfinite(b) and math.isfinite(c)
    ]
    b = tuple(p[0] for p in pairs)
    c = tuple(p[1] for p in pairs)
    median = analysis.median(b) if b else None
    relative = all(x > 0 for x in (*b, *c))
    if relative:
        d = tuple(log_ratios(b, c, direction))
    else:  # a zero or negative value: differences, in the worse direction
        sign = 1.0 if direction == "lower" else -1.0
        d = tuple(sign * (y - x) for x, y in pairs)
    return _Measured(name, b, c, d, relative, median, signed_rank_p(d) if d else None)


def _as_change(m: _Measured, x: float) -> float | None:
    """A centre or bound of d as a relative change in the worse direction."""
    if math.isinf(x):
        return x
    if m.relative:
        return math.expm1(x)
    if m.base_median:
        return x / abs(m.base_median)
    return None


def _as_worsening(m: _Measured, x: float) -> float:
    """A centre or bound of d as an absolute worsening in the metric's unit."""
    if math.isinf(x) or not m.relative:
        return x
    return math.expm1(x) * abs(m.base_median or 0.0)


def look(
    values: Values,
    thresholds: Mapping[str, Threshold],
    plan: Plan,
    pairs: int,
    passed: Mapping[str, PairedComparison] | None = None,
) -> Decision:
    """Every metric judged on its first `pairs` pairs at the look that many pairs make.

    `values` maps a metric to (base values, candidate values), one per pair, in pair order
    (NaN where a block gave no value: that pair is left out for that metric). `passed` holds
    the gated metrics that settled as passing at an earlier look: they stay passed.
    """
    looks = plan.looks()
    index = looks.index(pairs) if pairs in looks else -1
    alpha = plan.alpha_at(index) if index >= 0 else 0.0
    passed = dict(passed or {})
    measured = {
        name: _measured(name, b[:pairs], c[:pairs], METRICS[name].direction)
        for name, (b, c) in values.items()
        if name in METRICS
    }
    gated = [
        n for n, m in measured.items() if _gate(thresholds.get(n)) is not None and m.p is not None
    ]
    tested = [_gate_p(measured[n], _gate(thresholds.get(n)) or 0.0) for n in gated]
    adjusted = dict(zip(gated, holm(tested), strict=True))
    out = []
    for name in (n for n in METRICS if n in measured):
        m = measured[name]
        threshold = thresholds.get(name) or Threshold()
        out.append(
            passed.get(name)
            or _judge(m, threshold, adjusted.get(name), alpha, index + 1, plan, pairs)
        )
    undecided = [c for c in out if _open(c)]
    failed = [c.metric for c in out if c.gated and c.verdict == "fail"]
    if failed and index >= 0:
        # The gate has failed: the run stops, and what is still open stays open.
        out = stopped_here(out, f"{', '.join(failed)} failed")
    done = bool(failed) or (index >= 0 and not undecided and any(c.gated for c in out))
    return Decision(comparisons=tuple(out), done=done or pairs >= plan.max_pairs, pairs=pairs)


def _open(c: PairedComparison) -> bool:
    return c.gated and c.verdict in ("inconclusive", "too_few")


def stopped_here(comparisons: Sequence[PairedComparison], why: str) -> list[PairedComparison]:
    """The comparisons, each gated one still open saying that the run stopped, and why."""
    return [
        dataclasses.replace(c, reason=f"{c.reason} (the run stopped here: {why})")
        if _open(c)
        else c
        for c in comparisons
    ]


def decide(
    values: Values,
    thresholds: Mapping[str, Threshold],
    plan: Plan,
) -> Decision:
    """The decision over every look the pairs in `values` reached, in order: where the run
    stopped (a gated metric failed, or every gated one passed), or the last look reached.
    With fewer pairs than the first look, every metric is `too_few`."""
    available = min((len(b) for b, _ in values.values()), default=0)
    passed: dict[str, PairedComparison] = {}
    decision: Decision | None = None
    for pairs in plan.looks():
        if pairs > available:
            break
        decision = look(values, thresholds, plan, pairs, passed)
        passed.update(
            (c.metric, c) for c in decision.comparisons if c.gated and c.verdict == "pass"
        )
        if decision.done:
            return decision
    if decision is None:
        return look(values, thresholds, plan, available)
    return decision


def _gate(threshold: Threshold | None) -> float | None:
    return None if threshold is None else threshold.max_increase


def _gate_p(m: _Measured, max_increase: float) -> float:
    """The one-sided signed-rank p of "the candidate is worse by more than TEST_SHARE of
    `max_increase`" (log-ratios shifted by log1p(share × max_increase); differences, which
    have no relative scale, unshifted). A fail also needs the estimate beyond the threshold.

    Simulated with 5% noise per pair on CPU per request and a +10% gate, looks at 8, 18 and 28
    pairs (bench/plans.py, 400 runs), true change → share of runs failed:
    - against no change at all (share 0): +8% 16%, +10% 67%: a change inside the threshold
      fails whenever one noisy look puts its estimate beyond it;
    - against the threshold itself (share 1): +8% none, +10% 2%, but +15% only 96%, and on the
      sample, whose CPU per pair varies by 6-8%, CPU=60 (a measured +16% on average) was
      missed in 2 of 20 quiet runs and 6 of 14 busy ones: blind to a change just beyond it;
    - against half of it (share 0.5, the default): +5% none, +8% 10%, +10% 61%, +12% 98.5%,
      +15% and +20% every run: a change at the threshold is a coin toss, a change within half
      of it fails under alpha however many looks, and one well beyond it is caught, sooner
      (10 pairs on average at +15%, 18 with share 1)."""
    if not m.relative or max_increase <= 0:
        return m.p if m.p is not None else 1.0
    shift = math.log1p(TEST_SHARE * max_increase)
    return signed_rank_p([x - shift for x in m.d])


def _judge(
    m: _Measured,
    threshold: Threshold,
    p_adjusted: float | None,
    alpha: float,
    look_number: int,
    plan: Plan,
    pairs: int,
) -> PairedComparison:
    metric = METRICS[m.metric]
    max_increase = _gate(threshold)
    floor = threshold.floor
    n = len(m.d)

    def result(
        verdict: PairedVerdict,
        reason: str,
        centre: float | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> PairedComparison:
        low, high = bounds if bounds is not None else (None, None)
        return PairedComparison(
            metric=m.metric,
            pairs=n,
            baseline=m.base,
            candidate=m.cand,
            baseline_median=m.base_median,
            candidate_median=analysis.median(m.cand) if m.cand else None,
            change=_as_change(m, centre) if centre is not None else None,
            low=_as_change(m, low) if low is not None else None,
            high=_as_change(m, high) if high is not None else None,
            p_value=m.p,
            p_adjusted=p_adjusted,
            alpha=alpha,
            look=look_number if look_number > 0 else 0,
            threshold=max_increase,
            floor=floor,
            spread=spread(m.d) if m.relative else None,
            verdict=verdict,
            reason=reason,
        )

    if n == 0:
        return result("no_data", f"{metric.label}: no pair with a value on both sides")
    centre = hodges_lehmann(m.d)
    bounds = interval(m.d)
    moved = _movement(m, centre, bounds)
    if look_number <= 0:
        return result(
            "too_few",
            f"{moved} from {n} pairs: the first decision is taken after {plan.min_pairs}, "
            "so it was not judged",
            centre,
            bounds,
        )
    worse = _as_worsening(m, centre)
    high = _as_worsening(m, bounds[1])
    change, high_change = _as_change(m, centre), _as_change(m, bounds[1])
    if max_increase is None:
        over_floor = worse > (floor or 0.0)
        if over_floor and m.p is not None and m.p < plan.alpha:
            return result(
                "inconclusive",
                f"{moved}, p={m.p:.3g}; not gated (no max_increase), for information",
                centre,
                bounds,
            )
        return result("pass", f"{moved}; not gated (no max_increase)", centre, bounds)
    assert p_adjusted is not None
    significant = p_adjusted < alpha
    against = f"of worse than +{TEST_SHARE * max_increase * 100:g}%, " if m.relative else ""
    stat = (
        f"p={p_adjusted:.3g} {'<' if significant else '≥'} {alpha:.3g}"
        f" ({against}look {look_number} of {len(plan.looks())}, after Holm)"
    )
    limit = f"+{max_increase * 100:g}%" if change is not None else "a zero baseline"
    floor_text = f"the {format_metric(floor, metric.unit)} floor" if floor else ""
    beyond_threshold = worse > 0 if change is None else change > max_increase
    beyond_floor = worse > (floor or 0.0)
    if significant and beyond_threshold and beyond_floor:
        beyond = " and ".join(t for t in (limit, floor_text) if t)
        return result("fail", f"{moved}, {stat}, beyond {beyond}", centre, bounds)
    within_threshold = high_change is not None and high_change <= max_increase
    within_floor = high <= (floor or 0.0)
    if within_threshold or within_floor:
        what = limit if within_threshold else floor_text
        return result(
            "pass", f"{moved}: the interval rules out a change beyond {what}", centre, bounds
        )
    return result(
        "inconclusive",
        f"{moved}, {stat}: {_unsettled(m, centre, bounds, max_increase, pairs, plan)}",
        centre,
        bounds,
    )


def _unsettled(
    m: _Measured,
    centre: float,
    bounds: tuple[float, float],
    max_increase: float,
    pairs: int,
    plan: Plan,
) -> str:
    """What is left open, and what would settle it: the run's noise and the pairs needed."""
    n = len(m.d)
    s = spread(m.d) if m.relative else None
    noise = f"one pair varies by ±{s * 100:.1f}%" if s is not None else "the pairs vary"
    target = math.log1p(max_increase) if m.relative else None
    half = bounds[1] - centre
    if target is None or math.isinf(half) or half <= 0:
        return f"not settled after {n} pairs ({noise})"
    if centre >= target:
        return f"beyond +{max_increase * 100:g}% but not yet significant after {n} pairs ({noise})"
    needed = math.ceil(n * (half / (target - centre)) ** 2)
    if pairs < plan.max_pairs:
        return f"not settled after {n} pairs ({noise}); about {needed} pairs would settle it"
    at_max = half * math.sqrt(n / plan.max_pairs)
    hint = (
        "this machine is too noisy to rule out +"
        f"{max_increase * 100:g}% within max_pairs {plan.max_pairs}"
        if at_max >= target
        else f"about {needed} pairs would settle it"
    )
    return (
        f"the interval still reaches +{max_increase * 100:g}% after {n} pairs ({noise}); "
        f"{hint} (compare.max_pairs), or run on a quieter machine"
    )


def _movement(m: _Measured, centre: float, bounds: tuple[float, float]) -> str:
    """ "p95 latency +14.2% (−1.2% … +30.1%, 95%; 1.2 ms → 1.4 ms)"."""
    metric = METRICS[m.metric]
    cand_median = analysis.median(m.cand)
    values = (
        f"{format_metric(m.base_median or 0.0, metric.unit)} → "
        f"{format_metric(cand_median, metric.unit)}"
    )
    change = _as_change(m, centre)
    low, high = _as_change(m, bounds[0]), _as_change(m, bounds[1])
    if change is None or low is None or high is None:
        worse = _as_worsening(m, centre)
        sign = "+" if worse >= 0 else "-"
        return f"{metric.label} {sign}{format_metric(abs(worse), metric.unit)} ({values})"
    return f"{metric.label} {format_change(change)} ({format_interval(low, high)}; {values})"


def format_change(change: float) -> str:
    return f"{change * 100:+.1f}%"


def format_interval(low: float, high: float) -> str:
    """ "−1.2% … +3.4%, 95%" (∞ for an unbounded end)."""

    def end(x: float) -> str:
        return ("+∞" if x > 0 else "−∞") if math.isinf(x) else f"{x * 100:+.1f}%"

    return f"{end(low)} … {end(high)}, {CONFIDENCE:.0%}"
