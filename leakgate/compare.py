"""Baseline against candidate, metric by metric: one value per trial, a rank test, a verdict.

Pure, like golang.org/x/perf's benchmath: plain numbers in, `Comparison`s out; no I/O.

For each metric the candidate's trials are tested against the baseline's with a one-sided
Mann–Whitney U test (is the candidate *worse*?). The p-values of the gated metrics (those with a
`max_increase` threshold) are Holm-corrected as one family. A gated metric fails only when the
change is significant after Holm AND beyond its relative threshold AND beyond its absolute
floor; beyond both but not significant is inconclusive (`~`). Too few trials is a stated
warning, never a guess: with 3 trials a side the smallest one-sided p-value is exactly 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

from leakgate import analysis
from leakgate.metrics import METRICS, Direction, Metric, Threshold
from leakgate.model import Environment
from leakgate.units import format_metric

ComparisonVerdict = Literal["pass", "fail", "inconclusive", "too_few", "no_data"]

ALPHA = 0.05
MIN_TRIALS = 4
EXACT_MAX_N = 8
RATE_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class Sample:
    """The finite values of one metric on one side; median/min/max are None when empty."""

    values: tuple[float, ...]
    n: int
    median: float | None
    min: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Sample:
        """Build a Sample, dropping NaN and infinities."""
        clean = tuple(float(v) for v in values if math.isfinite(v))
        if not clean:
            return cls(values=(), n=0, median=None, min=None, max=None)
        return cls(
            values=clean,
            n=len(clean),
            median=analysis.median(clean),
            min=min(clean),
            max=max(clean),
        )


SYMBOLS: dict[str, str] = {
    "pass": "✓",
    "fail": "✗",
    "inconclusive": "~",
    "too_few": "?",
    "no_data": "?",
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One metric, baseline against candidate, judged.

    `change` is the relative change of the medians in the *worse* direction (+0.12 = 12% worse,
    negative = better), or None when the baseline median is 0 or either side has no data.
    `p_value` is the raw one-sided p (None when not tested: no_data, too_few); `p_adjusted` the
    Holm-corrected one for gated metrics (None for ungated ones, which are not in the family).
    """

    metric: str
    unit: str
    direction: Direction
    baseline: Sample
    candidate: Sample
    change: float | None
    p_value: float | None
    p_adjusted: float | None
    alpha: float
    threshold: float | None
    floor: float | None
    verdict: ComparisonVerdict
    reason: str

    @property
    def gated(self) -> bool:
        """Whether the metric had a max_increase threshold, i.e. whether it can fail."""
        return self.threshold is not None

    @property
    def symbol(self) -> str:
        """✓ pass, ✗ fail, ~ inconclusive, ? too few trials or no data."""
        return SYMBOLS[self.verdict]


def compare(
    baseline: Mapping[str, Sequence[float]],
    candidate: Mapping[str, Sequence[float]],
    thresholds: Mapping[str, Threshold],
    alpha: float = ALPHA,
    min_trials: int = MIN_TRIALS,
) -> list[Comparison]:
    """Compare every metric present on both sides, in `METRICS` order.

    Verdicts, for a gated metric (threshold with max_increase):
      no_data       either side has no finite value;
      too_few       either side has fewer than `min_trials` values (not tested);
      fail          Holm-adjusted p < alpha AND change > max_increase AND the worse-direction
                    difference of medians > floor (floor None = 0);
      inconclusive  beyond max_increase and floor, but not significant;
      pass          otherwise (improvements, changes within the threshold or floor).
    When the baseline median is 0 the relative change is undefined: the threshold is then
    "any worsening", so the decision rests on the floor and significance alone.

    The Holm family is every gated metric that was tested (enough trials on both sides), fixed
    before looking at the data: choosing it by which medians moved would pick the family with
    the same event that makes p small, and let noisy metrics spend a whole alpha each. With k
    gated metrics the smallest p a side of n trials can reach, 1/C(2n, n), must be under
    alpha/k for anything to fail: an inconclusive reason says so when it is not. Ungated metrics
    are tested (raw p, outside the Holm family) but never fail: "inconclusive" when the
    candidate is worse beyond the floor with raw p < alpha, else "pass".

    Raises ValueError for a metric name not in `METRICS` or an alpha outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if min_trials < 1:
        raise ValueError(f"min_trials must be at least 1, got {min_trials}")
    unknown = sorted((set(baseline) | set(candidate)) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s): {', '.join(unknown)}")

    names = [n for n in METRICS if n in baseline and n in candidate]
    samples = {n: (Sample.of(baseline[n]), Sample.of(candidate[n])) for n in names}
    tested = {
        n: _one_sided_p(b.values, c.values, METRICS[n].direction)
        for n, (b, c) in samples.items()
        if b.n >= min_trials and c.n >= min_trials
    }
    gated = [n for n in tested if _gate(thresholds.get(n)) is not None]
    adjusted = dict(zip(gated, holm([tested[n] for n in gated]), strict=True))

    results = []
    for name in names:
        b, c = samples[name]
        threshold = thresholds.get(name) or Threshold()
        results.append(
            _judge(
                METRICS[name],
                b,
                c,
                p=tested.get(name),
                p_adjusted=adjusted.get(name),
                alpha=alpha,
                max_increase=_gate(threshold),
                floor=threshold.floor,
                min_trials=min_trials,
                family=len(gated),
            )
        )
    return results


def _gate(threshold: Threshold | None) -> float | None:
    return None if threshold is None else threshold.max_increase


def _one_sided_p(base: Sequence[float], cand: Sequence[float], direction: Direction) -> float:
    """p of "the candidate is worse": greater for lower-is-better, less for higher-is-better."""
    pooled = [*base, *cand]
    if min(pooled) == max(pooled):
        return 1.0  # every value equal: no evidence either way (and scipy would divide by 0)
    ties = len(set(pooled)) < len(pooled)
    method = (
        "exact" if len(base) <= EXACT_MAX_N and len(cand) <= EXACT_MAX_N and not ties else "auto"
    )
    alternative = "greater" if direction == "lower" else "less"
    result = stats.mannwhitneyu(cand, base, alternative=alternative, method=method)
    p = float(result.pvalue)
    return p if math.isfinite(p) else 1.0


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order.

    The i-th smallest p (from 1) is multiplied by (m − i + 1), kept monotone non-decreasing,
    and capped at 1. Rejecting where the adjusted p < alpha controls the family-wise error rate.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _judge(
    metric: Metric,
    b: Sample,
    c: Sample,
    *,
    p: float | None,
    p_adjusted: float | None,
    alpha: float,
    max_increase: float | None,
    floor: float | None,
    min_trials: int,
    family: int = 1,
) -> Comparison:
    def result(verdict: ComparisonVerdict, reason: str, change: float | None = None) -> Comparison:
        return Comparison(
            metric=metric.name,
            unit=metric.unit,
            direction=metric.direction,
            baseline=b,
            candidate=c,
            change=change,
            p_value=p,
            p_adjusted=p_adjusted,
            alpha=alpha,
            threshold=max_increase,
            floor=floor,
            verdict=verdict,
            reason=reason,
        )

    if b.median is None or c.median is None:
        missing = (
            "either side" if b.n == c.n == 0 else "the baseline" if b.n == 0 else "the candidate"
        )
        return result("no_data", f"{metric.label}: no data in {missing}")

    sign = 1.0 if metric.direction == "lower" else -1.0
    worse_by = sign * (c.median - b.median)  # > 0: the candidate is worse
    change = worse_by / abs(b.median) if b.median != 0 else None
    moved = _movement(metric, b.median, c.median)

    if p is None:
        return result(
            "too_few",
            f"{moved} from {b.n} baseline and {c.n} candidate trials: at least {min_trials} a side "
            "are needed to tell a change from noise, so it was not judged",
            change,
        )
    over_floor = worse_by > (floor or 0.0)
    if max_increase is None:
        if over_floor and p < alpha:
            return result(
                "inconclusive",
                f"{moved}, p={p:.3g} < {alpha:g}; not gated (no max_increase), for information",
                change,
            )
        return result("pass", f"{moved}, p={p:.3g}; not gated (no max_increase)", change)
    assert p_adjusted is not None  # every tested gated metric is in the Holm family
    verdict, reason = _gated(metric, worse_by, change, p_adjusted, alpha, max_increase, floor)
    if verdict == "inconclusive":
        reason += f" with {b.n} and {c.n} trials"
        smallest = 1 / math.comb(b.n + c.n, b.n)
        if family * smallest >= alpha:
            reason += (
                f" (with {family} gated metrics no change of these trials can be significant:"
                f" the smallest p, {smallest:.3g}, times {family} is not under {alpha:g};"
                " run more trials)"
            )
    return result(verdict, f"{moved}, {reason}", change)


def _gated(
    metric: Metric,
    worse_by: float,
    change: float | None,
    p_adjusted: float,
    alpha: float,
    max_increase: float,
    floor: float | None,
) -> tuple[ComparisonVerdict, str]:
    """A gated metric's verdict and why: fail only when significant after Holm AND beyond the
    threshold AND beyond the floor; beyond both but not significant is ~."""
    if change is None:
        # Zero baseline: no relative change exists, so any worsening is beyond the threshold
        # and the floor and the test decide alone.
        over_threshold = worse_by > 0
        threshold_text = "a zero baseline"
    else:
        over_threshold = change > max_increase
        threshold_text = f"{'+' if metric.direction == 'lower' else '-'}{max_increase * 100:g}%"
    floor_text = f"the {_format(metric.unit, floor)} floor" if floor else ""
    significant = p_adjusted < alpha
    stat = f"p={p_adjusted:.3g} {'<' if significant else '≥'} {alpha:g} after Holm"
    if worse_by <= 0:
        return "pass", f"{stat}: no worse"
    if not over_threshold:
        return "pass", f"{stat}, within {threshold_text}"
    if not worse_by > (floor or 0.0):
        return "pass", f"{stat}, within {floor_text}"
    beyond = " and ".join(t for t in (threshold_text, floor_text) if t)
    if significant:
        return "fail", f"{stat}, beyond {beyond}"
    return "inconclusive", f"beyond {beyond} but {stat}: not significant"


def _movement(metric: Metric, base: float, cand: float) -> str:
    """ "p95 latency +14.2% (1.2 ms → 1.4 ms)"; with a zero baseline the absolute difference."""
    values = f"({_format(metric.unit, base)} → {_format(metric.unit, cand)})"
    if base == 0:
        sign = "+" if cand >= 0 else "-"
        return f"{metric.label} {sign}{_format(metric.unit, abs(cand))} {values}"
    return f"{metric.label} {(cand - base) / abs(base) * 100:+.1f}% {values}"


def _format(unit: str, value: float) -> str:
    return format_metric(value, unit)


def environment_mismatches(
    baseline: Environment,
    candidate: Environment,
    baseline_rate: float | None,
    candidate_rate: float | None,
) -> list[str]:
    """Sentences naming what differs between the baseline's machine and this run's.

    Compares the Go version, CPU model, GOMAXPROCS and CPU count (only when both sides recorded
    them: an unknown value is not a known difference) and the offered rate (a difference of
    more than 5% of the baseline's rate).
    """
    problems = []
    fields: tuple[tuple[str, object, object], ...] = (
        ("Go version", baseline.go_version, candidate.go_version),
        ("CPU model", baseline.cpu_model, candidate.cpu_model),
        ("GOMAXPROCS", baseline.gomaxprocs, candidate.gomaxprocs),
        ("CPU count", baseline.num_cpu, candidate.num_cpu),
    )
    for label, base, cand in fields:
        if base not in (None, "") and cand not in (None, "") and base != cand:
            problems.append(f"{label} differs: {base} in the baseline, {cand} in this run")
    if (
        baseline_rate is not None
        and candidate_rate is not None
        and math.isfinite(baseline_rate)
        and math.isfinite(candidate_rate)
        and abs(candidate_rate - baseline_rate) > RATE_TOLERANCE * abs(baseline_rate)
    ):
        share = (
            f" ({(candidate_rate - baseline_rate) / baseline_rate * 100:+.1f}%)"
            if baseline_rate
            else ""
        )
        problems.append(
            f"offered rate differs: {_format('req/s', baseline_rate)} in the baseline, "
            f"{_format('req/s', candidate_rate)} in this run{share}; latency is only comparable "
            "at the same load"
        )
    return problems
