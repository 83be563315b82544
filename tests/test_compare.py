from __future__ import annotations

import math

import pytest
from scipy import stats

from leakgate import compare as cmp
from leakgate.metrics import Threshold, metric_values
from leakgate.model import Environment

from .factories import trial

MS = 1e-3
GATED = Threshold(max_increase=0.10)
LATENCY = {"p95_latency": Threshold(max_increase=0.10, floor=0.5 * MS)}

# Five trials around 10 ms: tight enough that +20% is unmistakable.
BASE_MS = [10.0, 10.1, 9.9, 10.2, 9.8]


def ms(values: list[float], scale: float = 1.0) -> list[float]:
    return [v * scale * MS for v in values]


def one(
    baseline: list[float],
    candidate: list[float],
    metric: str = "p95_latency",
    threshold: Threshold | None = None,
    min_trials: int = cmp.MIN_TRIALS,
) -> cmp.Comparison:
    thresholds = {metric: threshold} if threshold is not None else LATENCY
    (result,) = cmp.compare(
        {metric: baseline}, {metric: candidate}, thresholds, min_trials=min_trials
    )
    return result


# -- the U test's smallest p-values ---------------------------------------------------------


def test_three_trials_a_side_cannot_reach_significance() -> None:
    """Fully separated, 3 against 3: the exact one-sided p is 1/C(6,3) = 0.05, not < 0.05."""
    base, cand = ms([10, 10.1, 10.2]), ms([12, 12.1, 12.2])
    r = one(base, cand, min_trials=3)
    assert r.p_value == pytest.approx(0.05)
    expected = stats.mannwhitneyu(cand, base, alternative="greater", method="exact").pvalue
    assert r.p_value == pytest.approx(expected)
    assert r.verdict == "inconclusive" and r.symbol == "~"


def test_four_trials_a_side_can() -> None:
    """4 against 4: the smallest one-sided p is 1/C(8,4) = 1/70 ≈ 0.0143."""
    base, cand = ms([10, 10.1, 10.2, 9.9]), ms([12, 12.1, 12.2, 11.9])
    r = one(base, cand)
    assert r.p_value == pytest.approx(1 / 70)
    expected = stats.mannwhitneyu(cand, base, alternative="greater", method="exact").pvalue
    assert r.p_value == pytest.approx(expected)
    assert r.verdict == "fail" and r.symbol == "✗"


def test_default_min_trials_refuses_three() -> None:
    r = one(ms([10, 10.1, 10.2]), ms([12, 12.1, 12.2]))
    assert r.verdict == "too_few" and r.symbol == "?"
    assert r.p_value is None and r.p_adjusted is None
    assert r.change == pytest.approx(0.19, abs=0.01)  # the change is still reported
    assert "at least 4 a side" in r.reason


# -- direction ----------------------------------------------------------------------------


def test_throughput_lower_in_candidate_is_worse() -> None:
    base = [5000.0, 5010, 4990, 5020, 4980]
    worse = [v * 0.8 for v in base]
    r = one(base, worse, "throughput", GATED)
    assert r.direction == "higher"
    assert r.change == pytest.approx(0.2)
    assert r.verdict == "fail"
    assert "-20.0%" in r.reason and "beyond -10%" in r.reason


def test_throughput_higher_in_candidate_is_an_improvement() -> None:
    base = [5000.0, 5010, 4990, 5020, 4980]
    r = one(base, [v * 1.5 for v in base], "throughput", GATED)
    assert r.change == pytest.approx(-0.5)
    assert r.p_value is not None and r.p_value > 0.9
    assert r.verdict == "pass"


def test_faster_latency_is_a_pass() -> None:
    r = one(ms(BASE_MS), ms(BASE_MS, 0.5))
    assert r.change == pytest.approx(-0.5)
    assert r.verdict == "pass" and "no worse" in r.reason


# -- Holm ---------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 -> kept monotone at 0.06
    assert cmp.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert cmp.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert cmp.holm([]) == []


def test_holm_across_three_gated_metrics() -> None:
    # 4 trials a side; U = 16, 15, 14 give exact one-sided p = 1/70, 2/70, 4/70.
    base = {
        "p50_latency": ms([10, 10.5, 11, 12]),
        "p95_latency": ms([10, 10.5, 11, 13]),
        "p99_latency": ms([10, 10.5, 11, 14]),
    }
    cand = {
        "p50_latency": ms([12.5, 13, 13.5, 14]),  # all above the baseline: U = 16
        "p95_latency": ms([12, 13.5, 14, 14.5]),  # 12 < 13 once: U = 15
        "p99_latency": ms([12, 13, 14.5, 15]),  # 12 and 13 < 14: U = 14
    }
    thresholds = {name: GATED for name in base}
    # An ungated metric is reported but stays out of the family.
    base["gc_cycles_per_min"] = [10, 11, 12, 13]
    cand["gc_cycles_per_min"] = [20, 21, 22, 23]
    results = {r.metric: r for r in cmp.compare(base, cand, thresholds)}

    raw = {n: results[n].p_value for n in thresholds}
    assert raw == pytest.approx(
        {"p50_latency": 1 / 70, "p95_latency": 2 / 70, "p99_latency": 4 / 70}
    )
    for name in thresholds:
        scipy_p = stats.mannwhitneyu(cand[name], base[name], alternative="greater").pvalue
        assert results[name].p_value == pytest.approx(scipy_p)
    # Holm, m = 3: 3·1/70 = 0.0429; max(0.0429, 2·2/70 = 0.0571); max(0.0571, 1·4/70 = 0.0571)
    adjusted = {n: results[n].p_adjusted for n in thresholds}
    assert adjusted == pytest.approx(
        {"p50_latency": 3 / 70, "p95_latency": 4 / 70, "p99_latency": 4 / 70}
    )
    assert results["p50_latency"].verdict == "fail"
    # raw p = 0.029 < 0.05, but not after Holm: over the threshold, so inconclusive
    assert results["p95_latency"].verdict == "inconclusive"
    assert "after Holm" in results["p95_latency"].reason
    assert results["p99_latency"].verdict == "inconclusive"
    gc = results["gc_cycles_per_min"]
    assert gc.p_adjusted is None and not gc.gated
    assert gc.p_value == pytest.approx(1 / 70)


def test_every_gated_metric_is_in_the_holm_family_even_within_its_threshold() -> None:
    """The family is fixed before the data is seen: a cost metric that moved a hair (and is
    significant at it) still counts, so 4 against 4 trials with four gated metrics cannot fail
    anything, and the reason says so and what would settle it."""
    base = {"p95_latency": ms([10, 10.5, 11, 12])}
    cand = {"p95_latency": ms([12.5, 13, 13.5, 14])}  # U = 16 of 16: p = 1/70
    thresholds = {"p95_latency": GATED}
    for name, value in (
        ("cpu_per_request", 40e-6),
        ("alloc_bytes_per_request", 9000.0),
        ("allocs_per_request", 120.0),
    ):
        base[name] = [value * (1 + i / 1000) for i in range(4)]
        cand[name] = [value * (1.02 + i / 1000) for i in range(4)]
        thresholds[name] = GATED
    results = {r.metric: r for r in cmp.compare(base, cand, thresholds)}
    p95 = results["p95_latency"]
    assert p95.p_adjusted == pytest.approx(4 / 70)  # 4 x 1/70: over 0.05
    assert p95.verdict == "inconclusive"
    assert "with 4 gated metrics no change of these trials can be significant" in p95.reason
    assert "run more trials" in p95.reason
    for name in ("cpu_per_request", "alloc_bytes_per_request", "allocs_per_request"):
        assert results[name].verdict == "pass", results[name].reason
    # 5 against 5 can: 4 x 1/252 = 0.016
    base = {k: [*v, v[-1] * 1.001] for k, v in base.items()}
    cand = {k: [*v, v[-1] * 1.001] for k, v in cand.items()}
    results = {r.metric: r for r in cmp.compare(base, cand, thresholds)}
    assert results["p95_latency"].p_adjusted == pytest.approx(4 / 252)
    assert results["p95_latency"].verdict == "fail"


# -- every verdict --------------------------------------------------------------------------


def test_no_change_passes() -> None:
    r = one(ms(BASE_MS), ms(BASE_MS))
    assert r.verdict == "pass" and r.symbol == "✓"
    assert r.change == pytest.approx(0.0)


def test_identical_constant_samples_have_p_one() -> None:
    r = one(ms([10] * 5), ms([10] * 5))
    assert r.p_value == 1.0 and r.verdict == "pass"


def test_significant_change_beyond_threshold_and_floor_fails() -> None:
    r = one(ms(BASE_MS), ms(BASE_MS, 1.2))
    assert r.verdict == "fail" and r.gated
    assert r.change == pytest.approx(0.2)
    assert r.p_adjusted is not None and r.p_adjusted < 0.05
    assert r.threshold == 0.10 and r.floor == pytest.approx(0.5 * MS)
    assert r.reason.startswith("p95 latency +20.0% (10.0 ms → 12.0 ms), p=")
    assert "< 0.05 after Holm, beyond +10% and the 500 µs floor" in r.reason
    assert r.baseline.n == r.candidate.n == 5
    assert r.baseline.median == pytest.approx(10 * MS)
    assert r.candidate.max == pytest.approx(12.24 * MS)


def test_change_beyond_threshold_with_overlapping_samples_is_inconclusive() -> None:
    base = ms([10, 11, 9, 15, 8, 13])
    cand = ms([12, 9, 16, 12.5, 10, 14])
    r = one(base, cand)
    assert r.change is not None and r.change > 0.10
    assert r.p_adjusted is not None and r.p_adjusted >= 0.05
    assert r.verdict == "inconclusive" and r.symbol == "~"
    assert "not significant with 6 and 6 trials" in r.reason


def test_large_relative_change_below_the_floor_passes() -> None:
    # 20 µs -> 40 µs is +100% and significant, but under the 0.5 ms floor.
    base = [20e-6, 21e-6, 19e-6, 22e-6, 18e-6]
    r = one(base, [2 * v for v in base])
    assert r.change == pytest.approx(1.0)
    assert r.p_adjusted is not None and r.p_adjusted < 0.05
    assert r.verdict == "pass"
    assert "within the 500 µs floor" in r.reason


def test_change_within_threshold_passes_even_when_significant() -> None:
    r = one(ms(BASE_MS), ms(BASE_MS, 1.08), threshold=GATED)
    assert r.p_adjusted is not None and r.p_adjusted < 0.05
    assert r.verdict == "pass" and "within +10%" in r.reason


def test_no_data_on_either_side() -> None:
    assert one([], ms(BASE_MS)).verdict == "no_data"
    r = one(ms(BASE_MS), [])
    assert r.verdict == "no_data" and r.symbol == "?"
    assert "no data in the candidate" in r.reason
    assert r.change is None and r.p_value is None


def test_metric_missing_from_one_side_is_not_compared() -> None:
    results = cmp.compare({"p95_latency": ms(BASE_MS)}, {"heap_live": [1.0] * 5}, LATENCY)
    assert results == []


def test_zero_baseline_decides_on_floor_and_significance() -> None:
    base = [0.0] * 5
    cand = [2.0, 3.0, 2.0, 3.0, 2.0]
    r = one(base, cand, "goroutine_growth", Threshold(max_increase=0.10))
    assert r.change is None  # relative change of a zero median is undefined
    assert r.p_value is not None and r.p_value < 0.05
    assert r.verdict == "fail"
    assert "zero baseline" in r.reason
    floored = one(base, cand, "goroutine_growth", Threshold(max_increase=0.10, floor=5))
    assert floored.verdict == "pass" and "floor" in floored.reason
    steady = one(base, [0.0] * 5, "error_rate", Threshold(max_increase=0.10))
    assert steady.p_value == 1.0 and steady.verdict == "pass"


def test_zero_baseline_without_significance_is_inconclusive() -> None:
    r = one([0.0] * 5, [0.0, 0.0, 0.0, 0.0, 4.0], "goroutine_growth", GATED)
    assert r.change is None
    assert r.verdict == "pass"  # the median did not move
    r = one([0.0, 1, 0, 2, 0], [3.0, 0, 2, 0, 1], "goroutine_growth", GATED)
    assert r.baseline.median == 0 and r.change is None
    assert r.verdict == "inconclusive"


def test_nan_and_infinity_are_dropped() -> None:
    base = [*ms(BASE_MS), math.nan, math.inf]
    cand = [*ms(BASE_MS, 1.2), -math.inf]
    r = one(base, cand)
    assert r.baseline.n == 5 and r.candidate.n == 5
    assert all(math.isfinite(v) for v in r.baseline.values + r.candidate.values)
    assert r.verdict == "fail"
    short = one([*ms([10, 10.1, 10.2]), math.nan], ms(BASE_MS, 1.2))
    assert short.verdict == "too_few"  # NaNs do not count as trials
    assert one([math.nan] * 5, ms(BASE_MS)).verdict == "no_data"


def test_ungated_metric_never_fails() -> None:
    base = [10.0, 11, 12, 10.5, 11.5]
    worse = [v * 3 for v in base]
    for thresholds in ({}, {"gc_cycles_per_min": Threshold(max=1.0)}):
        (r,) = cmp.compare({"gc_cycles_per_min": base}, {"gc_cycles_per_min": worse}, thresholds)
        assert not r.gated and r.threshold is None
        assert r.verdict == "inconclusive" and r.p_value is not None and r.p_value < 0.05
        assert "not gated" in r.reason
    (same,) = cmp.compare({"gc_cycles_per_min": base}, {"gc_cycles_per_min": base}, {})
    assert same.verdict == "pass"


def test_unknown_metric_and_bad_alpha_are_errors() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        cmp.compare({"latency": [1.0]}, {"latency": [1.0]}, {})
    with pytest.raises(ValueError, match="alpha"):
        cmp.compare({}, {}, {}, alpha=1.5)


def test_ties_use_the_normal_approximation() -> None:
    base = [1.0, 1.0, 2.0, 2.0, 1.0, 2.0]
    cand = [3.0, 3.0, 4.0, 4.0, 3.0, 4.0]
    r = one(base, cand, "goroutine_growth", GATED)
    expected = stats.mannwhitneyu(cand, base, alternative="greater", method="auto").pvalue
    assert r.p_value == pytest.approx(expected)
    assert r.verdict == "fail"


def test_compare_metric_values_end_to_end() -> None:
    base = [trial(index=i, p_ms=2.0) for i in range(5)]
    leaky = [trial(index=i, heap_after=40_000_000, p_ms=2.0) for i in range(5)]
    results = {
        r.metric: r
        for r in cmp.compare(
            metric_values(base),
            metric_values(leaky),
            {"heap_live": Threshold(max_increase=0.10, floor=1024 * 1024)},
        )
    }
    assert results["heap_live"].verdict == "fail"
    assert results["rss_peak"].verdict == "no_data"
    assert results["p95_latency"].verdict == "pass"


# -- environment ----------------------------------------------------------------------------


def env(**kwargs: object) -> Environment:
    defaults: dict[str, object] = {
        "go_version": "go1.22.5",
        "cpu_model": "AMD EPYC 7763",
        "gomaxprocs": 4,
        "num_cpu": 8,
    }
    return Environment(**{**defaults, **kwargs})  # type: ignore[arg-type]


def test_same_environment_has_no_mismatches() -> None:
    assert cmp.environment_mismatches(env(), env(hostname="other"), 5000.0, 5200.0) == []
    assert cmp.environment_mismatches(env(), env(), None, 5000.0) == []


def test_environment_mismatches_name_each_difference() -> None:
    problems = cmp.environment_mismatches(
        env(),
        env(go_version="go1.23.0", cpu_model="Intel Xeon", gomaxprocs=2, num_cpu=16),
        5000.0,
        5300.0,
    )
    assert len(problems) == 5
    text = "\n".join(problems)
    for expected in ("go1.22.5", "go1.23.0", "Intel Xeon", "GOMAXPROCS", "CPU count", "+6.0%"):
        assert expected in text


def test_unknown_environment_values_are_not_differences() -> None:
    assert cmp.environment_mismatches(env(go_version="", gomaxprocs=None), env(), None, None) == []


def test_offered_rate_tolerance_is_five_percent() -> None:
    assert cmp.environment_mismatches(env(), env(), 5000.0, 5250.0) == []
    assert len(cmp.environment_mismatches(env(), env(), 5000.0, 4700.0)) == 1
    assert len(cmp.environment_mismatches(env(), env(), 0.0, 5000.0)) == 1
