"""Pure analysis of measured trials: retained bytes per request, trends, goroutine growth.

No I/O, no clocks, no processes: every function takes model objects or plain numbers and
returns plain results, so each can be tested with small hand-made inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import stats

from leakgate.model import RunRecord, Trial

TREND_ALPHA = 0.01
MIN_TREND_POINTS = 8


@dataclass(frozen=True, slots=True)
class Trend:
    """Mann–Kendall test (Kendall's tau of value against time) plus the Theil–Sen slope.

    `rising` is True when the series climbs significantly (one-sided p < alpha) and the whole
    confidence interval of the slope lies above zero; False when it does not; None when there
    were too few points to tell.
    """

    n: int
    rising: bool | None
    p_value: float | None = None
    tau: float | None = None
    slope: float | None = None  # units per second
    slope_low: float | None = None
    slope_high: float | None = None


def trend(
    points: Sequence[tuple[float, float]],
    *,
    later_fraction: float = 0.5,
    alpha: float = TREND_ALPHA,
    min_points: int = MIN_TREND_POINTS,
) -> Trend:
    """Test the later part of a series for a rising trend.

    Only the last `later_fraction` of the points is used so that a cache filling early in the
    window, then staying flat, is not mistaken for a leak.
    """
    usable = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    start = int(len(usable) * (1.0 - later_fraction))
    later = usable[start:]
    n = len(later)
    if n < min_points:
        return Trend(n=n, rising=None)
    ts = [t for t, _ in later]
    vs = [v for _, v in later]
    if max(vs) == min(vs):
        return Trend(
            n=n, rising=False, p_value=1.0, tau=0.0, slope=0.0, slope_low=0.0, slope_high=0.0
        )
    tau_result = stats.kendalltau(ts, vs, alternative="greater")
    tau = float(tau_result.statistic)
    p = float(tau_result.pvalue)
    slope, _intercept, low, high = stats.theilslopes(vs, ts, alpha=1.0 - 2 * alpha)
    if not math.isfinite(p):
        p = 1.0
    rising = p < alpha and float(low) > 0.0
    return Trend(
        n=n,
        rising=rising,
        p_value=p,
        tau=tau,
        slope=float(slope),
        slope_low=float(low),
        slope_high=float(high),
    )


LEVELLED_SHARE = 0.25


def heap_levelled(tr: Trend, window_growth_per_second: float) -> bool:
    """True when the heap stopped growing: the later half shows no rising trend and even the
    upper confidence bound of its slope is under a quarter of the average growth over the whole
    window. A noisy series that merely fails to confirm a trend is not called levelled."""
    if tr.rising is not False or tr.slope_high is None or window_growth_per_second <= 0:
        return False
    return tr.slope_high < LEVELLED_SHARE * window_growth_per_second


def window_seconds(trial: Trial) -> float | None:
    """Length of the measure window: as timed by the runner, else the heap series' span."""
    if trial.measure_seconds > 0:
        return trial.measure_seconds
    series = trial.series.get("heap_live")
    if series and len(series.points) >= 2:
        return series.points[-1][0] - series.points[0][0]
    return None


def retained_bytes_per_request(trial: Trial) -> float | None:
    """(live heap after drain − live heap after warm-up) ÷ requests served in between.

    Both heaps are HeapAlloc right after a forced GC with the load stopped. None when either
    checkpoint is missing or no request was served.
    """
    before = trial.checkpoints.get("warmup")
    after = trial.checkpoints.get("drain")
    if before is None or after is None or before.heap_alloc is None or after.heap_alloc is None:
        return None
    requests = requests_served(trial)
    if trial.load is None or requests <= 0:
        return None
    return (after.heap_alloc - before.heap_alloc) / requests


def requests_served(trial: Trial) -> int:
    """Requests completed between the warm-up and drain checkpoints: the measure window's and
    a paired run's settle load (0 without a load result)."""
    return trial.load.requests + trial.settle_requests if trial.load else 0


def retained_noise_per_request(noise_floor: float, requests: int) -> float:
    """How far retained bytes per request can be off from heap noise alone: a clean service's
    live heap moves by up to `noise_floor` bytes between the checkpoints, and that movement is
    divided by the requests served. Infinite without requests."""
    return noise_floor / requests if requests > 0 else math.inf


def requests_to_resolve(noise_floor: float, limit: float, value: float) -> int | None:
    """The fewest requests with which heap noise of `noise_floor` bytes, spread over them, no
    longer spans `limit` from a figure of `value` bytes per request: noise_floor ÷ |limit −
    value|, on the figure staying where it is. None when no count would (value on the limit)."""
    if noise_floor <= 0:
        return 1
    gap = abs(limit - value)
    if not gap > 0 or not math.isfinite(gap):
        return None
    return math.ceil(noise_floor / gap)


def goroutine_growth(trial: Trial) -> int | None:
    """Quiet goroutine count after drain minus after warm-up, or None without both counts."""
    before = trial.checkpoints.get("warmup")
    after = trial.checkpoints.get("drain")
    if before is None or after is None or before.goroutines is None or after.goroutines is None:
        return None
    return after.goroutines - before.goroutines


OFFERED_RATE_SHARE = 0.95


def invalid_reason(trial: Trial, error_limit: float | None) -> str | None:
    """Why a trial's latency cannot be judged, or None when it can.

    A trial that fell short of 95% of its offered rate measured a different load than the one
    asked for; one whose error rate is over its limit timed only the requests that succeeded.
    """
    load = trial.load
    if load is None or load.requests == 0:
        return "no request completed"
    if load.mode == "open" and load.target_rate > 0:
        share = load.achieved_rate / load.target_rate
        if share < OFFERED_RATE_SHARE:
            return (
                f"the trial reached {share:.0%} of its offered rate "
                f"({load.achieved_rate:,.0f} of {load.target_rate:,.0f} req/s)"
            )
    rate = load.error_rate or 0.0
    if error_limit is not None and rate > error_limit:
        return f"its error rate {rate:.2%} is over the {error_limit:.2%} limit"
    return None


def error_rate(trial: Trial) -> float | None:
    return trial.load.error_rate if trial.load else None


def median(values: Sequence[float]) -> float | None:
    clean = sorted(v for v in values if math.isfinite(v))
    if not clean:
        return None
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2.0


def spread(values: Sequence[float]) -> float | None:
    """The coefficient of variation over trials (sample standard deviation ÷ |mean|): how far
    one trial's figure strays from another's. None for fewer than two values or a mean of 0."""
    clean = [v for v in values if math.isfinite(v)]
    if len(clean) < 2:
        return None
    mean = sum(clean) / len(clean)
    if mean == 0:
        return None
    variance = sum((v - mean) ** 2 for v in clean) / (len(clean) - 1)
    return math.sqrt(variance) / abs(mean)


def _series_delta(trial: Trial, name: str) -> tuple[float, float] | None:
    """(change in value, seconds) between the first and last sample of a cumulative series."""
    series = trial.series.get(name)
    if series is None or len(series.points) < 2:
        return None
    (t0, v0), (t1, v1) = series.points[0], series.points[-1]
    if t1 <= t0:
        return None
    return v1 - v0, t1 - t0


def gc_cycles_per_minute(trial: Trial) -> float | None:
    """GC cycles per minute during the measure window (forced checkpoint GCs excluded)."""
    delta = _series_delta(trial, "gc_cycles")
    return None if delta is None else delta[0] / delta[1] * 60.0


def gc_cpu_fraction(trial: Trial) -> float | None:
    """Share of the service's CPU time spent in the GC during the measure window."""
    gc = _series_delta(trial, "gc_cpu_seconds")
    total = _series_delta(trial, "total_cpu_seconds")
    if gc is None or total is None or total[0] <= 0:
        return None
    return gc[0] / total[0]


def _per_request(trial: Trial, counter: str) -> float | None:
    """(counter at the end of the measure window - at its start) ÷ the window's requests."""
    cost, load = trial.cost, trial.load
    if cost is None or load is None or load.requests <= 0:
        return None
    start, end = getattr(cost.start, counter), getattr(cost.end, counter)
    if start is None or end is None or end < start:
        return None  # not read, or a counter that went back: another process behind the URL
    return float(end - start) / load.requests


# A CPU counter in 10 ms clock ticks (process_cpu_seconds_total) needs this much CPU time over
# the window before one tick is within 0.1% of it; under it there is no figure.
COARSE_CPU_MIN_SECONDS = 10.0


def cpu_per_request(trial: Trial) -> float | None:
    """The service's CPU time (user + system) per request in the measure window, in seconds;
    None from a counter in clock ticks that counted too few of them (see coarse_cpu_note)."""
    if coarse_cpu_note(trial):
        return None
    return _per_request(trial, "cpu_seconds")


def coarse_cpu_note(trial: Trial) -> str:
    """Why a trial's CPU per request is not given although its CPU time was read: a counter in
    10 ms ticks that counted under COARSE_CPU_MIN_SECONDS over the window ("" otherwise)."""
    cost = trial.cost
    if cost is None or not cost.cpu_coarse:
        return ""
    start, end = cost.start.cpu_seconds, cost.end.cpu_seconds
    if start is None or end is None or end - start >= COARSE_CPU_MIN_SECONDS:
        return ""
    return (
        f"no CPU per request: {cost.cpu_source} counts 10 ms ticks, and the window used "
        f"{end - start:.2f} s of CPU (one tick is {0.01 / max(end - start, 0.01):.1%} of it; "
        f"{COARSE_CPU_MIN_SECONDS:g} s are needed)"
    )


def alloc_bytes_per_request(trial: Trial) -> float | None:
    """Heap bytes allocated per request in the measure window (garbage included)."""
    return _per_request(trial, "alloc_bytes")


def allocs_per_request(trial: Trial) -> float | None:
    """Heap objects allocated per request in the measure window."""
    return _per_request(trial, "alloc_objects")


def gc_cycles_per_1k_requests(trial: Trial) -> float | None:
    """GC cycles per 1,000 requests in the measure window: GC frequency normalised by the work
    done, so a different offered rate does not look like a change."""
    per_request = _per_request(trial, "gc_cycles")
    return None if per_request is None else per_request * 1000.0


def throughput(trial: Trial) -> float | None:
    """Requests completed per second in the measure window."""
    if trial.load is None or trial.load.duration_s <= 0:
        return None
    return trial.load.requests / trial.load.duration_s


def latency_percentile(trial: Trial, q: float) -> float | None:
    return trial.load.latency.percentile(q) if trial.load else None


def heap_live_after_drain(trial: Trial) -> float | None:
    drain = trial.checkpoints.get("drain")
    return float(drain.heap_alloc) if drain and drain.heap_alloc is not None else None


def rss_peak(trial: Trial) -> float | None:
    return float(trial.rss_peak) if trial.rss_peak else None


BASELINE_SIDES = ("candidate", "baseline")


def baseline_trials(record: RunRecord) -> list[Trial]:
    """The trials of `record` that stand for the baseline, in record order.

    The record's own measurement: its "candidate" trials (what `baseline record` and `check`
    store; in a `compare` record, the code that would become the new baseline), or its
    "baseline" trials when it has no candidate side. Trials whose service died are left out:
    what they measured stopped partway.
    """
    for side in BASELINE_SIDES:
        side_trials = [t for t in record.trials if t.side == side]
        if side_trials:
            return [t for t in side_trials if not t.service.died]
    return []


def offered_rate(trials: Iterable[Trial]) -> float | None:
    """The rate the trials were offered (the same for every trial of a run), if any; a rate
    that is not a positive finite number (a damaged record) is none."""
    return next(
        (
            t.offered_rate
            for t in trials
            if t.offered_rate and math.isfinite(t.offered_rate) and t.offered_rate > 0
        ),
        None,
    )
