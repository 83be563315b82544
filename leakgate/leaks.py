"""Leaks within one run: retained heap bytes per request and goroutine growth, per trial.

The rules behind the `retained_per_request` and `goroutine_growth` checks (combined over the
trials like every limit, in slo.py), which leak sites explain a failing check, and the noise
floor a comparison of retained bytes inherits from the leak check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from leakgate import analysis
from leakgate.metrics import Threshold, sites_explaining
from leakgate.model import Check, CheckStatus, LeakSites, Trial
from leakgate.slo import TrialResult, why_no_data
from leakgate.units import format_size

CHECKPOINTS = ("warmup", "drain")
TOP_SITES = 3


def retained(trial: Trial, *, limit: float, noise_floor: float, min_requests: int) -> TrialResult:
    """Fails only on growth beyond the heap's own noise: with `noise_floor` bytes of movement
    a clean service shows between the checkpoints, the figure is known to within
    ±noise_floor/requests. Under `limit` even at its top: pass; over it even at its bottom:
    judged as a leak (the trend test may still call it a filled cache). In between, the heap
    series decides: a confirmed rising trend with the figure over `limit` fails, a heap that
    levelled off passes, anything else is ~. Below `min_requests`: no data, never a fail."""
    value = analysis.retained_bytes_per_request(trial)
    requests = analysis.requests_served(trial)
    heaps = [trial.checkpoints[c].heap_alloc for c in CHECKPOINTS if c in trial.checkpoints]
    if value is None and (requests or len(heaps) < 2 or None in heaps):
        return TrialResult("no_data", None, note=why_no_data(trial, "live heap checkpoints"))
    before = trial.checkpoints["warmup"].heap_alloc or 0
    after = trial.checkpoints["drain"].heap_alloc or 0
    series = trial.series.get("heap_live")
    tr = analysis.trend(series.points if series else ())
    evidence = _heap_evidence(before, after, requests, tr)
    evidence.extend(profile_evidence(trial, "heap_profile"))
    if requests < min_requests:
        served = f"{requests:,} request{'s' if requests != 1 else ''}"
        note = (
            f"no data: {served}, fewer than min_requests {min_requests:,}: too few to tell "
            "retained bytes per request"
        )
        return TrialResult("no_data", None, tuple(evidence), note)
    assert value is not None  # both heaps and at least one request
    noise = analysis.retained_noise_per_request(noise_floor, requests)
    if value + noise <= limit:
        return TrialResult("pass", value, tuple(evidence))
    seconds = analysis.window_seconds(trial)
    window_rate = (after - before) / seconds if seconds else 0.0
    levelled = analysis.heap_levelled(tr, window_rate)
    if value - noise <= limit:
        # Inside the noise band the retained figure alone cannot decide; the heap series can.
        return _within_noise(value, limit, noise_floor, requests, tr, levelled, evidence)
    if levelled:
        note = "heap retained, but flat in the later half of the window (a cache that filled?)"
        return TrialResult("pass", value, tuple(evidence), note)
    if tr.rising is None:
        return TrialResult("fail", value, tuple(evidence), "trend untested: window too short")
    if tr.rising is False:
        note = "the heap series neither confirms nor rules out growth; retained bytes decide"
        return TrialResult("fail", value, tuple(evidence), note)
    return TrialResult("fail", value, tuple(evidence), "live heap keeps growing")


def _heap_evidence(before: int, after: int, requests: int, tr: analysis.Trend) -> list[str]:
    evidence = [
        f"live heap after forced GC: {format_size(before)} after warm-up -> "
        f"{format_size(after)} after drain "
        f"({format_size(after - before)} over {requests:,} requests)"
    ]
    if tr.rising is None:
        evidence.append(
            f"heap trend: not testable ({tr.n} samples in the later half of the window)"
        )
    else:
        evidence.append(
            f"heap trend over the later half ({tr.n} samples): {format_size(tr.slope or 0)}/s "
            f"(98% CI {format_size(tr.slope_low or 0)}/s .. {format_size(tr.slope_high or 0)}/s), "
            f"Mann-Kendall p={tr.p_value:.2g}"
        )
    return evidence


def _within_noise(
    value: float,
    limit: float,
    noise_floor: float,
    requests: int,
    tr: analysis.Trend,
    levelled: bool,
    evidence: list[str],
) -> TrialResult:
    """A retained figure over `limit` only within the heap's noise: a heap that kept rising
    fails, one that levelled off passes, anything else is ~ with the requests that would tell."""
    noise = analysis.retained_noise_per_request(noise_floor, requests)
    band = (
        f"within the heap's {format_size(noise_floor)} noise floor: ±{noise:,.1f} B/request "
        f"over {requests:,} requests"
    )
    noise_line = (
        f"heap noise: a leak-free service's live heap moves by up to "
        f"{format_size(noise_floor)} between the checkpoints "
        "(thresholds.retained_per_request.noise_floor)"
    )
    if tr.rising is True and value > limit:
        evidence.append(
            f"{noise_line}: the retained figure alone was within the noise, but the heap "
            "kept rising through the later half of the window: a leak"
        )
        note = f"live heap keeps growing, though the retained figure alone is {band}"
        return TrialResult("fail", value, tuple(evidence), note)
    if levelled:
        evidence.append(
            f"{noise_line}: the retained figure alone was within the noise, and the heap "
            "levelled off in the later half of the window: not a leak"
        )
        note = f"{band}, and the heap levelled off in the later half of the window"
        return TrialResult("pass", value, tuple(evidence), note)
    need = analysis.requests_to_resolve(noise_floor, limit, value)
    settle = (
        f"{need:,} requests would resolve the limit at this value"
        if need
        else "no request count resolves the limit at this value"
    )
    evidence.append(
        f"{noise_line}; the heap series neither confirms growth nor shows it levelled off: "
        "not a leak, not yet a pass"
    )
    return TrialResult("warn", value, tuple(evidence), f"{band}; {settle}")


def goroutines(trial: Trial, *, limit: float) -> TrialResult:
    value = analysis.goroutine_growth(trial)
    if value is None:
        return TrialResult("no_data", None, note=why_no_data(trial, "goroutine counts"))
    before = trial.checkpoints["warmup"]
    after = trial.checkpoints["drain"]
    evidence = [
        f"quiet goroutines: {before.goroutines} after warm-up -> {after.goroutines} after drain"
    ]
    if not after.goroutines_stable:
        evidence.append("the count was still changing when the quiet period ran out")
    evidence.extend(profile_evidence(trial, "goroutine_profile"))
    status: CheckStatus = "fail" if value > limit else "pass"
    return TrialResult(status, float(value), tuple(evidence))


# A paired compare's look stops the blocks for a leak (and drains, where the leak checks
# decide) only when the growth so far is this many times its limit even at the lower end of
# its slope's interval: a leak that plain needs no more pairs, and waiting for the cost metrics
# near their thresholds to settle only delays the verdict (the sample's LEAK=globalmap and
# LEAK=context ran to the last look, 134 s, for a leak of ~300 B/request).
EVIDENT_FACTOR = 4.0


def evident_growth(
    heap: Sequence[tuple[float, float]],
    goroutines: Sequence[tuple[float, float]],
    requests: int,
    *,
    retained_limit: float | None,
    goroutine_limit: float | None,
) -> str | None:
    """Why a service's 1 Hz series so far show a leak too plain to need more measuring, or None.

    Plain means the leak checks' own trend test (Mann–Kendall and Theil–Sen over the later
    half of the series) finds the series rising, and even the lower end of the slope's
    interval, over the series' span, is beyond EVIDENT_FACTOR times the limit: for the live
    heap, the retained bytes per request limit over the `requests` served in that span; for
    goroutines, the goroutine growth limit. A cache that fills and then stays flat has no
    rising later half; one still filling that fast is judged by the drain like a leak."""
    if retained_limit is not None and retained_limit > 0 and requests > 0:
        tr = analysis.trend(heap)
        growth = _least_growth(heap, tr)
        if growth is not None and growth / requests > EVIDENT_FACTOR * retained_limit:
            return (
                f"live heap kept growing, by at least {format_size(growth / requests)} "
                f"per request over {requests:,} requests (trend p={tr.p_value:.2g}), "
                f"over {EVIDENT_FACTOR:g}× the {format_size(retained_limit)}/request limit"
            )
    if goroutine_limit is not None and goroutine_limit >= 0:
        tr = analysis.trend(goroutines)
        growth = _least_growth(goroutines, tr)
        if growth is not None and growth > EVIDENT_FACTOR * max(goroutine_limit, 1.0):
            return (
                f"goroutine count kept growing, by at least {growth:,.0f} "
                f"(trend p={tr.p_value:.2g}), over {EVIDENT_FACTOR:g}× the growth limit of "
                f"{goroutine_limit:g}"
            )
    return None


def _least_growth(points: Sequence[tuple[float, float]], tr: analysis.Trend) -> float | None:
    """The lower end of a rising series' slope over its span, or None when it is not rising."""
    if not tr.rising or tr.slope_low is None or len(points) < 2:
        return None
    return tr.slope_low * (points[-1][0] - points[0][0])


def profile_evidence(trial: Trial, attr: str) -> list[str]:
    before = getattr(trial.checkpoints["warmup"], attr)
    after = getattr(trial.checkpoints["drain"], attr)
    if not (before and after):
        return []
    return [f"profiles: go tool pprof -diff_base {before} {after}"]


def with_sites(check: Check, sites: LeakSites) -> Check:
    """A failing leak check, or a failing comparison of a leak metric, with the top leak sites
    of its kind attached."""
    kind = sites_explaining(check.name)
    if check.status != "fail" or kind is None:
        return check
    top = (sites.heap if kind == "heap" else sites.goroutines)[:TOP_SITES]
    held = tuple(h for h in sites.holders if kind == "heap" or h.kind == "goroutines")
    return dataclasses.replace(check, leak_sites=top, holders=held[:TOP_SITES])


def enough_requests(trials: Sequence[Trial], retained: Threshold) -> list[Trial]:
    """The trials that served enough requests for retained bytes per request to mean anything."""
    least = max(1, retained.min_requests or 1)
    return [t for t in trials if analysis.requests_served(t) >= least]


def with_noise_floor(
    thresholds: Mapping[str, Threshold], trials: Sequence[Trial], retained: Threshold
) -> Mapping[str, Threshold]:
    """The thresholds with retained_per_request's `floor` raised to what heap noise alone can
    move the figure in the shortest trial compared: the leak check does not fail on that
    noise, and neither may a comparison whose two sides carry the same noise."""
    counted = [analysis.requests_served(t) for t in enough_requests(trials, retained)]
    if not retained.noise_floor or not counted or "retained_per_request" not in thresholds:
        return thresholds
    noise = analysis.retained_noise_per_request(retained.noise_floor, min(counted))
    if noise <= (retained.floor or 0.0):
        return thresholds
    raised = dataclasses.replace(thresholds["retained_per_request"], floor=noise)
    return {**thresholds, "retained_per_request": raised}
