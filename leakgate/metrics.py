"""Every metric leakgate judges, described once: config, compare, judge and the reports read this.

A metric is one figure per trial (`per_trial` reads it from a Trial), with a label, a unit and
the direction that is better. Its entry also says what its thresholds look like in leakgate.yml,
what the gate does without one (`default`), whether `check --quick` judges it, and how its
absolute limit (`max`) is judged. Adding a metric is one entry in `METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Literal

from leakgate import analysis
from leakgate.model import Trial

Direction = Literal["lower", "higher"]
# How `max` and `floor` are written in leakgate.yml: 5ms, 64KiB, 12, 1%.
ThresholdKind = Literal["duration", "size", "count", "fraction"]
# How a metric's absolute limit is judged per trial (slo.py and leaks.py hold the rules).
LimitRule = Literal["retained", "goroutines", "errors", "latency", "value"]
LeakKind = Literal["heap", "goroutines"]
CostKind = Literal["cpu", "alloc"]

_KINDS: dict[str, ThresholdKind] = {
    "s": "duration",
    "s/request": "duration",
    "bytes": "size",
    "B/request": "size",
    "fraction": "fraction",
}
THRESHOLD_KEYS = ("max_increase", "floor", "max")


@dataclass(frozen=True, slots=True)
class Threshold:
    max_increase: float | None = None  # relative, vs a baseline: 0.10 = +10%
    floor: float | None = None  # absolute change below which a difference is ignored
    max: float | None = None  # absolute limit on the candidate's own value
    # retained_per_request only: how far a clean service's live heap moves between the two
    # checkpoints (bytes), and the fewest requests a trial needs before it is judged at all.
    noise_floor: float | None = None
    min_requests: int | None = None


@dataclass(frozen=True, slots=True)
class Metric:
    """How one per-trial figure is read, which way is better, and how the gate judges it."""

    name: str
    label: str
    per_trial: Callable[[Trial], float | None]
    direction: Direction
    unit: str  # "s", "s/request", "req/s", "fraction", "bytes", "B/request", "goroutines", ...
    default: Threshold | None = None  # the gate's threshold when leakgate.yml names none
    quick: bool = False  # `check --quick` judges its absolute limit
    limit_rule: LimitRule = "value"
    has_max: bool = True  # whether an absolute `max` makes sense (not for throughput)
    extra_keys: tuple[str, ...] = ()  # threshold keys of its own, beyond THRESHOLD_KEYS
    # A leak check: judged before the other limits, "no data" is never a pass, and a failing
    # check names the leak sites of this kind.
    leak: LeakKind | None = None
    sites: LeakKind | None = None  # which leak sites explain a failing comparison
    costs: CostKind | None = None  # which cost profile (costsites) explains a failing one
    # Not judged from a trial that missed its offered rate or its error limit.
    needs_steady_load: bool = False
    limit_rank: int = 9  # order of its limit check in the reports (leaks first, then errors)

    @property
    def kind(self) -> ThresholdKind:
        return _KINDS.get(self.unit, "count")

    @property
    def threshold_keys(self) -> tuple[str, ...]:
        keys = THRESHOLD_KEYS if self.has_max else THRESHOLD_KEYS[:2]
        return (*keys, *self.extra_keys)


def _latency(q: float) -> Callable[[Trial], float | None]:
    return partial(analysis.latency_percentile, q=q)


# The live heap of a leak-free service moves between the warm-up and drain checkpoints by
# itself (runtime and agent bookkeeping, timers, pools). Measured on the sample service: 36
# clean `leakgate check sample-go-service --out DIR` runs, the checkpoints' heap_alloc read
# from DIR/run.json -- `--duration 3s --warmup 1s` at rate auto and at rate 200, 10 s, the
# default 20 s, and 20 s and 60 s at rate 200, on a 2-core machine shared with other jobs.
# The drain heap was 24 KB below to 48.9 KB (47.7 KiB) above the warm-up heap; the largest
# at 200 req/s, where 20 s and 60 s moved alike (about 45 KB), so it levels off rather than
# growing with the window. 96 KiB is twice the largest. Divided by a trial's requests it is
# the resolution of retained_per_request: 16 B/request from 6,144 requests on.
RETAINED_NOISE_FLOOR = 96.0 * 1024
# Fewer requests than this and the per-request figure means nothing, whatever the heap did.
RETAINED_MIN_REQUESTS = 100

# The cost metrics' floors: a change smaller than these is not worth blocking a release for,
# however significant (see README, "Cost per request", for the measurements behind them).
CPU_FLOOR = 1e-6  # 1 µs of CPU per request: 1% of a core at 10,000 req/s
ALLOC_BYTES_FLOOR = 64.0
ALLOCS_FLOOR = 1.0

# In table order: the order of comparison rows in every report.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "p50_latency",
            "p50 latency",
            _latency(50),
            "lower",
            "s",
            limit_rule="latency",
            needs_steady_load=True,
        ),
        Metric(
            "p95_latency",
            "p95 latency",
            _latency(95),
            "lower",
            "s",
            limit_rule="latency",
            needs_steady_load=True,
            limit_rank=3,
            default=Threshold(max_increase=0.10, floor=0.5e-3),
        ),
        Metric(
            "p99_latency",
            "p99 latency",
            _latency(99),
            "lower",
            "s",
            limit_rule="latency",
            needs_steady_load=True,
        ),
        Metric(
            "throughput",
            "throughput",
            analysis.throughput,
            "higher",
            "req/s",
            has_max=False,
            needs_steady_load=True,
        ),
        Metric(
            "error_rate",
            "error rate",
            analysis.error_rate,
            "lower",
            "fraction",
            limit_rule="errors",
            quick=True,
            limit_rank=2,
            default=Threshold(max=0.01),
        ),
        # What a request costs, from the runtime's own counters over the measure window: nearly
        # deterministic, so they see a regression that latency's spread hides (see README,
        # "Cost per request", for the floors).
        Metric(
            "cpu_per_request",
            "CPU per request",
            analysis.cpu_per_request,
            "lower",
            "s/request",
            costs="cpu",
            default=Threshold(max_increase=0.10, floor=CPU_FLOOR),
        ),
        Metric(
            "alloc_bytes_per_request",
            "bytes allocated per request",
            analysis.alloc_bytes_per_request,
            "lower",
            "B/request",
            costs="alloc",
            default=Threshold(max_increase=0.10, floor=ALLOC_BYTES_FLOOR),
        ),
        Metric(
            "allocs_per_request",
            "allocations per request",
            analysis.allocs_per_request,
            "lower",
            "allocs/request",
            costs="alloc",
            default=Threshold(max_increase=0.10, floor=ALLOCS_FLOOR),
        ),
        Metric(
            "gc_cycles_per_1k_requests",
            "GC cycles per 1k requests",
            analysis.gc_cycles_per_1k_requests,
            "lower",
            "GC/1k requests",
        ),
        Metric(
            "heap_live",
            "live heap after drain",
            analysis.heap_live_after_drain,
            "lower",
            "bytes",
            sites="heap",
        ),
        # Heap *growth* is gated, not the live heap's size: a cache that fills during warm-up
        # and stays bounded costs memory but is not a leak, and must not fail a compare.
        Metric(
            "retained_per_request",
            "retained bytes per request",
            analysis.retained_bytes_per_request,
            "lower",
            "B/request",
            limit_rule="retained",
            quick=True,
            leak="heap",
            sites="heap",
            limit_rank=0,
            extra_keys=("noise_floor", "min_requests"),
            default=Threshold(
                max_increase=0.10,
                floor=16.0,
                max=16.0,
                noise_floor=RETAINED_NOISE_FLOOR,
                min_requests=RETAINED_MIN_REQUESTS,
            ),
        ),
        Metric(
            "goroutine_growth",
            "goroutine growth",
            analysis.goroutine_growth,
            "lower",
            "goroutines",
            limit_rule="goroutines",
            quick=True,
            leak="goroutines",
            sites="goroutines",
            limit_rank=1,
            default=Threshold(max=16.0),
        ),
        Metric("rss_peak", "peak RSS", analysis.rss_peak, "lower", "bytes"),
        Metric(
            "gc_cycles_per_min",
            "GC cycles per minute",
            analysis.gc_cycles_per_minute,
            "lower",
            "GC/min",
        ),
        Metric("gc_cpu_fraction", "GC CPU share", analysis.gc_cpu_fraction, "lower", "fraction"),
    )
}

# The order run.json and baselines have always stored the defaults in; a new default goes last.
_STORED_ORDER = ("p95_latency", "retained_per_request", "goroutine_growth", "error_rate")
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    name: m.default
    for name, m in sorted(
        METRICS.items(),
        key=lambda item: _STORED_ORDER.index(item[0]) if item[0] in _STORED_ORDER else 99,
    )
    if m.default is not None
}
LEAK_METRICS = tuple(name for name, m in METRICS.items() if m.leak is not None)


def sites_explaining(check: str) -> LeakKind | None:
    """Which leak sites explain the check named `check` when it fails: a leak check's own kind,
    a comparison's (`<metric>_vs_baseline`) its metric's `sites`; None for any other check."""
    name = check.removesuffix("_vs_baseline")
    metric = METRICS.get(name)
    if metric is None:
        return None
    return metric.sites if name != check else metric.leak


def trial_values(trial: Trial) -> dict[str, float]:
    """Every metric this trial measured, by name, in `METRICS` order (finite values only)."""
    values = {name: m.per_trial(trial) for name, m in METRICS.items()}
    return {name: float(v) for name, v in values.items() if v is not None and math.isfinite(v)}


def metric_values(trials: Iterable[Trial]) -> dict[str, list[float]]:
    """One value per trial for every metric in `METRICS`, in trial order.

    Trials where a metric is unavailable (None) or not finite are skipped for that metric, so
    lists may be shorter than the trial count or empty; every metric name is present, so a
    gated metric without data shows up as `no_data` instead of vanishing.
    """
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    for t in trials:
        for name, value in trial_values(t).items():
            values[name].append(value)
    return values
