from __future__ import annotations

import dataclasses
import random

import pytest

from leakgate import analysis, leaks
from leakgate.model import Checkpoint, Trial

from .factories import heap_series, trial


def test_rising_heap_is_a_trend() -> None:
    tr = analysis.trend(heap_series(10e6, 500_000).points)
    assert tr.rising is True
    assert tr.p_value is not None and tr.p_value < 0.01
    assert tr.slope_low is not None and tr.slope_low > 0
    assert tr.slope == pytest.approx(500_000, rel=0.1)


def test_flat_noisy_heap_is_not_a_trend() -> None:
    for seed in range(20):
        tr = analysis.trend(heap_series(10e6, 0.0, seed=seed).points)
        assert tr.rising is False


def test_cache_that_fills_then_stays_flat_is_not_a_trend() -> None:
    tr = analysis.trend(heap_series(10e6, 2_000_000, fill_until=8).points)
    assert tr.rising is False


def test_too_few_points_cannot_tell() -> None:
    tr = analysis.trend(heap_series(10e6, 500_000, seconds=10).points)
    assert tr.rising is None and tr.n == 5


def test_constant_series_and_nan_points() -> None:
    assert analysis.trend([(float(t), 5.0) for t in range(20)]).rising is False
    pts = [(float(t), float("nan") if t % 3 == 0 else 1e6 + t * 1e5) for t in range(30)]
    assert analysis.trend(pts).rising is True


def test_slow_leak_under_noise_is_found() -> None:
    # 64 B/request at 2,000 req/s = 128 KB/s under 40 KB of per-sample noise
    found = sum(
        analysis.trend(heap_series(10e6, 128_000, noise=40_000, seed=s).points).rising is True
        for s in range(50)
    )
    assert found >= 48


def test_retained_bytes_per_request() -> None:
    t = trial(heap_before=10_000_000, heap_after=16_400_000, requests=100_000)
    assert analysis.retained_bytes_per_request(t) == pytest.approx(64.0)


def test_retained_bytes_per_request_counts_the_settle_load() -> None:
    """A paired run's settle requests are served between the checkpoints: they count."""
    t = dataclasses.replace(
        trial(heap_before=10_000_000, heap_after=16_400_000, requests=80_000),
        settle_requests=20_000,
    )
    assert analysis.requests_served(t) == 100_000
    assert analysis.retained_bytes_per_request(t) == pytest.approx(64.0)


def test_retained_needs_both_checkpoints_and_requests() -> None:
    assert analysis.retained_bytes_per_request(Trial(index=0)) is None
    t = trial(requests=0)
    assert analysis.retained_bytes_per_request(t) is None
    partial = Trial(index=0, checkpoints={"warmup": Checkpoint("warmup", heap_alloc=1)})
    assert analysis.retained_bytes_per_request(partial) is None


def test_goroutine_growth() -> None:
    assert analysis.goroutine_growth(trial(goroutines_before=10, goroutines_after=1010)) == 1000
    assert analysis.goroutine_growth(Trial(index=0)) is None


def test_median() -> None:
    assert analysis.median([3.0, 1.0, 2.0]) == 2.0
    assert analysis.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert analysis.median([]) is None
    assert analysis.median([float("nan")]) is None
    rng = random.Random(0)
    values = [rng.random() for _ in range(101)]
    assert analysis.median(values) == sorted(values)[50]


def test_retained_noise_per_request_and_requests_to_resolve() -> None:
    assert analysis.retained_noise_per_request(96 * 1024, 600) == pytest.approx(163.84)
    assert analysis.retained_noise_per_request(96 * 1024, 0) == float("inf")
    # noise_floor ÷ |limit − value|: how many requests shrink ± noise to the distance left
    assert analysis.requests_to_resolve(96 * 1024, 16.0, 0.0) == 6144
    assert analysis.requests_to_resolve(96 * 1024, 16.0, 20.31) == 22_809  # issue 14's 600-run
    assert analysis.requests_to_resolve(96 * 1024, 16.0, 40.0) == 4_096  # over the limit as well
    assert analysis.requests_to_resolve(96 * 1024, 16.0, 12.0) == 24_576  # and under it
    assert analysis.requests_to_resolve(1000, 16.0, 0.0) == 63  # rounded up
    assert analysis.requests_to_resolve(0, 16.0, 16.0) == 1  # no noise: any count resolves
    assert analysis.requests_to_resolve(1000, 16.0, 16.0) is None  # on the limit: none can
    assert analysis.requests_to_resolve(1000, 0.0, 0.0) is None  # max: 0B, nothing retained


def test_requests_served() -> None:
    assert analysis.requests_served(trial(requests=600)) == 600
    assert analysis.requests_served(Trial(index=0)) == 0


def test_offered_rate_ignores_a_rate_that_is_not_a_positive_number() -> None:
    import dataclasses

    rates = [float("nan"), float("inf"), -1e308, 0.0, None, 250.0]
    trials = [dataclasses.replace(trial(index=i), offered_rate=r) for i, r in enumerate(rates)]
    assert analysis.offered_rate(trials) == 250.0
    assert analysis.offered_rate(trials[:5]) is None


# -- a leak too plain to need more pairs (leaks.evident_growth) -------------------------------


def _evident(heap: list[tuple[float, float]], goroutines: list[tuple[float, float]], requests: int):
    return leaks.evident_growth(
        heap, goroutines, requests, retained_limit=16.0, goroutine_limit=16.0
    )


def test_a_heap_growing_300_bytes_a_request_is_evident() -> None:
    # 40 s at 725 req/s (a side under load half the time), 300 B/request: 217 KB/s
    heap = list(heap_series(10e6, 217_500, seconds=40).points)
    flat = [(float(t), 30.0) for t in range(40)]
    why = _evident(heap, flat, 29_000)
    assert why is not None and "live heap kept growing" in why and "per request" in why


def test_growth_within_four_times_the_limit_or_levelled_is_not_evident() -> None:
    flat = [(float(t), 30.0) for t in range(40)]
    # 40 B/request: a leak the drain will judge, but not plain enough to stop for
    slow = list(heap_series(10e6, 725 * 40, seconds=40, noise=5_000).points)
    assert analysis.trend(slow).rising is True
    assert _evident(slow, flat, 29_000) is None
    # a cache that filled in the first 10 s and stayed flat: its later half does not rise
    cache = list(heap_series(10e6, 2_000_000, seconds=40, fill_until=10).points)
    assert _evident(cache, flat, 29_000) is None
    for seed in range(10):  # a clean, noisy heap
        assert (
            _evident(list(heap_series(10e6, 0.0, seconds=40, seed=seed).points), flat, 29_000)
            is None
        )
    # no requests, or no limit: nothing to judge
    fast = list(heap_series(10e6, 217_500, seconds=40).points)
    assert _evident(fast, flat, 0) is None
    assert (
        leaks.evident_growth(fast, flat, 29_000, retained_limit=None, goroutine_limit=None) is None
    )


def test_goroutines_that_keep_piling_up_are_evident() -> None:
    heap = [(float(t), 10e6) for t in range(40)]
    rng = random.Random(3)
    # in-flight requests (0-30) over 3 leaked goroutines a second
    piling = [(float(t), 20 + 3.0 * t + rng.randrange(30)) for t in range(40)]
    why = _evident(heap, piling, 29_000)
    assert why is not None and "goroutine count kept growing" in why
    steady = [(float(t), 20.0 + rng.randrange(30)) for t in range(40)]
    assert _evident(heap, steady, 29_000) is None
