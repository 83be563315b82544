"""Judge one run on its own: leaks within the run and absolute limits (SLOs).

Pure functions from (RunRecord, Config) to a Verdict. A regression or a leak is a failing
Check, never an exception. With several trials each check takes the median value and fails when
at least half of the trials fail it, so one noisy trial cannot decide alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from leakgate import analysis
from leakgate.compare import METRICS, Comparison, compare, environment_mismatches, metric_values
from leakgate.config import Config, Threshold
from leakgate.model import (
    Check,
    CheckStatus,
    ComparisonRow,
    LeakSites,
    RunRecord,
    Trial,
    Verdict,
)
from leakgate.units import format_duration, format_metric, format_size


@dataclass(frozen=True, slots=True)
class TrialResult:
    status: CheckStatus
    value: float | None
    evidence: tuple[str, ...] = ()
    note: str = ""


def judge(
    record: RunRecord,
    config: Config,
    baseline: RunRecord | None = None,
    sites: LeakSites | None = None,
) -> Verdict:
    """Every check of a run, in the order a reader wants them.

    Leak and limit checks judge the candidate's trials on their own. Against a baseline (the
    `baseline` side of a `compare` record, or a stored RunRecord) each gated metric is compared
    too, one value per trial and side. `sites` (from leaksites.find) are attached to the
    failing leak checks, top three first.
    """
    trials = [t for t in record.trials if t.side == "candidate"]
    checks: list[Check] = []
    notes: list[str] = []
    rows: tuple[ComparisonRow, ...] = ()
    error_limit = config.threshold("error_rate").max
    if not trials:
        notes.append("no trial completed: nothing was judged")
    else:
        # One trial whose service died is enough: a crash is never noise.
        checks.append(
            _combine("service_alive", trials, _service_alive, None, "", any_fail_fails=True)
        )
        for name in _limit_order(config):
            threshold = config.threshold(name)
            assert threshold.max is not None
            checks.append(
                _combine(
                    name,
                    trials,
                    _limit_rule(name, threshold, error_limit),
                    threshold.max,
                    METRICS[name].unit,
                )
            )
    if baseline is not None:
        base_trials, base_env = analysis.baseline_trials(baseline), baseline.environment
    else:
        base_trials = [t for t in record.trials if t.side == "baseline" and not t.service.died]
        base_env = record.environment
    dead = [t for t in record.trials if t.side == "baseline" and t.service.died]
    if dead:
        checks.append(
            Check(
                name="baseline_service_alive",
                status="error",
                summary=f"the baseline's service died in trial {dead[0].index + 1}: the "
                "comparison cannot be trusted",
                evidence=tuple(_service_alive(dead[0]).evidence),
            )
        )
    if trials and (base_trials or baseline is not None):
        comparisons = _compare(base_trials, trials, config, error_limit)
        rows = tuple(_row(c) for c in comparisons)
        checks.extend(
            _comparison_check(c, config.fail_on_inconclusive) for c in comparisons if c.gated
        )
        notes.extend(
            environment_mismatches(
                base_env,
                record.environment,
                analysis.offered_rate(base_trials),
                analysis.offered_rate(trials),
            )
        )
        tools = {t.load.tool for t in (*base_trials, *trials) if t.load}
        if len(tools) > 1:
            used = ", ".join(sorted(tools))
            notes.append(
                f"baseline and candidate were loaded with different tools ({used}): "
                "their latencies are not comparable"
            )
    notes.extend(_trial_notes(record.trials))
    unjudged = [c.name for c in checks if c.name in _LEAK_CHECKS and c.status == "no_data"]
    if unjudged:
        notes.append(f"could not judge {', '.join(unjudged)}: no data is never a pass")
    if record.interrupted:
        status = "interrupted"
    elif any(c.status == "fail" for c in checks):
        status = "fail"
    elif record.error or unjudged or any(c.status == "error" for c in checks):
        status = "error"
    else:
        status = "pass"
    sites = sites or LeakSites()
    return Verdict(
        status=status,  # type: ignore[arg-type]
        checks=tuple(_with_sites(c, sites) for c in checks),
        notes=tuple(notes),
        comparisons=rows,
        leak_sites=sites,
    )


def _trial_notes(trials: Sequence[Trial]) -> list[str]:
    """What the trials noted (a profile not taken, samples lost), each once, with its trials."""
    where: dict[str, list[int]] = {}
    for t in trials:
        for note in t.notes:
            where.setdefault(note, []).append(t.index + 1)
    out = []
    for note, indexes in where.items():
        label = "trial" if len(indexes) == 1 else "trials"
        out.append(f"{note} ({label} {', '.join(map(str, indexes))})")
    return out


# Which leak sites explain which failing check.
_HEAP_CHECKS = ("retained_per_request", "heap_live_vs_baseline", "retained_per_request_vs_baseline")
_GOROUTINE_CHECKS = ("goroutine_growth", "goroutine_growth_vs_baseline")
TOP_SITES = 3


def _with_sites(check: Check, sites: LeakSites) -> Check:
    if check.status != "fail":
        return check
    if check.name in _HEAP_CHECKS:
        top = sites.heap[:TOP_SITES]
    elif check.name in _GOROUTINE_CHECKS:
        top = sites.goroutines[:TOP_SITES]
    else:
        return check
    return dataclasses.replace(check, leak_sites=top) if top else check


_LATENCY_METRICS = ("p50_latency", "p95_latency", "p99_latency", "throughput")


def _compare(
    base: Sequence[Trial], cand: Sequence[Trial], config: Config, error_limit: float | None
) -> list[Comparison]:
    retained = config.threshold("retained_per_request")

    def values(trials: Sequence[Trial]) -> dict[str, list[float]]:
        out = metric_values(trials)
        # No latency verdict from a trial that missed its offered rate or its error limit.
        valid = [t for t in trials if analysis.invalid_reason(t, error_limit) is None]
        latency = metric_values(valid)
        for name in _LATENCY_METRICS:
            out[name] = latency.get(name, [])
        # Nor a retained figure from a trial too short for the leak check to judge it.
        out["retained_per_request"] = metric_values(_enough_requests(trials, retained))[
            "retained_per_request"
        ]
        return out

    thresholds = _with_noise_floor(config.thresholds, [*base, *cand], retained)
    return compare(values(base), values(cand), thresholds)


def _enough_requests(trials: Sequence[Trial], retained: Threshold) -> list[Trial]:
    least = max(1, retained.min_requests or 1)
    return [t for t in trials if analysis.requests_served(t) >= least]


def _with_noise_floor(
    thresholds: Mapping[str, Threshold], trials: Sequence[Trial], retained: Threshold
) -> Mapping[str, Threshold]:
    """The thresholds with retained_per_request's `floor` raised to what heap noise alone can
    move the figure in the shortest trial compared: the leak check does not fail on that
    noise, and neither may a comparison whose two sides carry the same noise."""
    counted = [analysis.requests_served(t) for t in _enough_requests(trials, retained)]
    if not retained.noise_floor or not counted or "retained_per_request" not in thresholds:
        return thresholds
    noise = analysis.retained_noise_per_request(retained.noise_floor, min(counted))
    if noise <= (retained.floor or 0.0):
        return thresholds
    raised = dataclasses.replace(thresholds["retained_per_request"], floor=noise)
    return {**thresholds, "retained_per_request": raised}


def _row(c: Comparison) -> ComparisonRow:
    return ComparisonRow(
        metric=c.metric,
        label=METRICS[c.metric].label,
        unit=c.unit,
        baseline_median=c.baseline.median,
        candidate_median=c.candidate.median,
        change=c.change,
        p_value=c.p_adjusted if c.p_adjusted is not None else c.p_value,
        n_baseline=c.baseline.n,
        n_candidate=c.candidate.n,
        verdict=c.verdict,
        symbol=c.symbol,
        gated=c.gated,
        reason=c.reason,
    )


_COMPARISON_STATUS: dict[str, CheckStatus] = {
    "pass": "pass",
    "fail": "fail",
    "inconclusive": "warn",
    "too_few": "warn",
    "no_data": "no_data",
}


def _comparison_check(c: Comparison, fail_on_inconclusive: bool = False) -> Check:
    evidence = [
        f"baseline trials: {', '.join(format_value(v, c.unit) for v in c.baseline.values)}",
        f"candidate trials: {', '.join(format_value(v, c.unit) for v in c.candidate.values)}",
    ]
    summary = c.reason if c.verdict != "inconclusive" else f"~ {c.reason}"
    status = _COMPARISON_STATUS[c.verdict]
    if c.verdict == "inconclusive" and fail_on_inconclusive:
        status, summary = "fail", f"{summary} (fail_on_inconclusive)"
    return Check(
        name=f"{c.metric}_vs_baseline",
        status=status,
        summary=summary,
        value=c.change,
        limit=c.threshold,
        unit="change",
        evidence=tuple(evidence),
    )


def inconclusive_metrics(verdict: Verdict) -> set[str]:
    """Gated metrics whose comparison was over the threshold but not significant (`~`)."""
    return {r.metric for r in verdict.comparisons if r.gated and r.verdict == "inconclusive"}


def merge_confirmation(first: Verdict, confirmed: Verdict) -> Verdict:
    """`confirm`: the comparisons inconclusive in `first` take their verdict from `confirmed`
    (judged on every trial, the extra ones included), the other comparisons keep their first
    verdict, and every other check comes from `confirmed`. The second look is a second test at
    the same alpha, so a metric that needed confirming carries a somewhat higher false-fail
    risk than one decided at once (the README says so)."""
    redo = inconclusive_metrics(first)
    first_by_name = {c.name: c for c in first.checks}
    # Comparisons decided the first time keep that verdict; everything else (leaks, limits,
    # the service staying up) is judged again on every trial, the extra ones included.
    checks = tuple(
        _with_sites(first_by_name[c.name], confirmed.leak_sites)
        if c.name.endswith("_vs_baseline")
        and c.name.removesuffix("_vs_baseline") not in redo
        and c.name in first_by_name
        else c
        for c in confirmed.checks
    )
    rows_again = {r.metric: r for r in confirmed.comparisons}
    rows = tuple(rows_again.get(r.metric, r) if r.metric in redo else r for r in first.comparisons)
    status = confirmed.status
    if status in ("pass", "fail"):
        status = "fail" if any(c.status == "fail" for c in checks) else "pass"
    notes = (*confirmed.notes, f"confirmed with more trials: {', '.join(sorted(redo))}")
    return Verdict(
        status=status,
        checks=checks,
        notes=notes,
        comparisons=rows,
        leak_sites=confirmed.leak_sites,
    )


def exit_code(verdict: Verdict) -> int:
    """pass 0, fail 1, interrupted 2; a run that could not judge at all is an environment error."""
    return {"pass": 0, "fail": 1, "interrupted": 2, "error": 5}[verdict.status]


def _combine(
    name: str,
    trials: Sequence[Trial],
    judge_trial: Callable[[Trial], TrialResult],
    limit: float | None,
    unit: str,
    *,
    any_fail_fails: bool = False,
) -> Check:
    """One check over every trial: the median value; fails when at least half the trials fail
    it, or when any does with `any_fail_fails`."""
    results = [judge_trial(t) for t in trials]
    values = [r.value for r in results if r.value is not None]
    value = analysis.median(values) if values else None
    fails = sum(r.status == "fail" for r in results)
    judged = [r for r in results if r.status != "no_data"]
    status: CheckStatus
    if not judged:
        status = "no_data"
    elif fails and (any_fail_fails or fails * 2 >= len(results)):
        status = "fail"
    elif any(r.status in ("fail", "warn") for r in results):
        status = "warn"
    else:
        status = "pass"
    evidence: list[str] = []
    for trial, r in zip(trials, results, strict=True):
        prefix = f"trial {trial.index + 1}: " if len(trials) > 1 else ""
        evidence.extend(prefix + line for line in r.evidence)
    summary = _summary(name, status, value, limit, unit, results)
    return Check(
        name=name,
        status=status,
        summary=summary,
        value=value,
        limit=limit,
        unit=unit,
        evidence=tuple(evidence),
    )


def _summary(
    name: str,
    status: CheckStatus,
    value: float | None,
    limit: float | None,
    unit: str,
    results: Sequence[TrialResult],
) -> str:
    notes = [r.note for r in results if r.note]
    if name == "service_alive":
        return notes[0] if notes else "the service stayed up through every phase"
    if value is None:
        return notes[0] if notes else "no data: the metric had no samples"
    text = f"{format_value(value, unit)} (limit {format_value(limit, unit)})"
    if len(results) > 1:
        text = f"median {text} over {len(results)} trials"
    if notes:
        text += f"; {notes[0]}"
    return text


def format_value(value: float | None, unit: str) -> str:
    return format_metric(value, unit, signed=unit in ("B/request", "goroutines"))


# -- per-trial rules ---------------------------------------------------------------------------


def _service_alive(trial: Trial) -> TrialResult:
    s = trial.service
    if not s.died:
        return TrialResult("pass", 1.0)
    how = s.reason or (f"killed by {s.signal}" if s.signal else f"exited with code {s.exit_code}")
    note = f"the service {how} during {s.phase or 'the run'}"
    evidence = [note]
    if s.log_tail:
        evidence.append("last log lines:\n" + s.log_tail)
    return TrialResult("fail", 0.0, tuple(evidence), note)


def _retained(trial: Trial, *, limit: float, noise_floor: float, min_requests: int) -> TrialResult:
    """Fails only on growth beyond the heap's own noise: with `noise_floor` bytes of movement
    a clean service shows between the checkpoints, the figure is known to within
    ±noise_floor/requests. Under `limit` even at its top: pass; over it even at its bottom:
    judged as a leak (the trend test may still call it a filled cache). In between, the heap
    series decides: a confirmed rising trend with the figure over `limit` fails, a heap that
    levelled off passes, anything else is ~. Below `min_requests`: no data, never a fail."""
    value = analysis.retained_bytes_per_request(trial)
    requests = analysis.requests_served(trial)
    heaps = [trial.checkpoints[c].heap_alloc for c in _CHECKPOINTS if c in trial.checkpoints]
    if value is None and (requests or len(heaps) < 2 or None in heaps):
        return TrialResult("no_data", None, note=_why_no_data(trial, "live heap checkpoints"))
    before = trial.checkpoints["warmup"].heap_alloc or 0
    after = trial.checkpoints["drain"].heap_alloc or 0
    evidence = [
        f"live heap after forced GC: {format_size(before)} after warm-up -> "
        f"{format_size(after)} after drain "
        f"({format_size(after - before)} over {requests:,} requests)"
    ]
    series = trial.series.get("heap_live")
    tr = analysis.trend(series.points if series else ())
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
    evidence.extend(_profile_evidence(trial, "heap_profile"))
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
    if levelled:
        note = "heap retained, but flat in the later half of the window (a cache that filled?)"
        return TrialResult("pass", value, tuple(evidence), note)
    if tr.rising is None:
        return TrialResult("fail", value, tuple(evidence), "trend untested: window too short")
    if tr.rising is False:
        note = "the heap series neither confirms nor rules out growth; retained bytes decide"
        return TrialResult("fail", value, tuple(evidence), note)
    return TrialResult("fail", value, tuple(evidence), "live heap keeps growing")


def _goroutines(trial: Trial, *, limit: float) -> TrialResult:
    value = analysis.goroutine_growth(trial)
    if value is None:
        return TrialResult("no_data", None, note=_why_no_data(trial, "goroutine counts"))
    before = trial.checkpoints["warmup"]
    after = trial.checkpoints["drain"]
    evidence = [
        f"quiet goroutines: {before.goroutines} after warm-up -> {after.goroutines} after drain"
    ]
    if not after.goroutines_stable:
        evidence.append("the count was still changing when the quiet period ran out")
    evidence.extend(_profile_evidence(trial, "goroutine_profile"))
    status: CheckStatus = "fail" if value > limit else "pass"
    return TrialResult(status, float(value), tuple(evidence))


def _error_rate(trial: Trial, *, limit: float) -> TrialResult:
    load = trial.load
    if load is None or load.requests == 0:
        return TrialResult("no_data", None, note="no request completed")
    rate = load.error_count / load.requests
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(load.errors.items()) if v)
    evidence = [
        f"{load.error_count:,} errors in {load.requests:,} requests"
        + (f" ({kinds})" if kinds else "")
    ]
    if load.first_error:
        evidence.append(f"first error: {load.first_error}")
    return TrialResult("fail" if rate > limit else "pass", rate, tuple(evidence))


def _latency(
    trial: Trial, *, q: float, limit: float, error_limit: float | None = None
) -> TrialResult:
    load = trial.load
    if load is None or load.latency.count == 0:
        return TrialResult("no_data", None, note="no successful request to time")
    value = load.latency.percentile(q)
    p50, p95, p99 = (load.latency.percentile(x) or 0.0 for x in (50, 95, 99))
    evidence = [
        f"p50 {format_duration(p50)}, p95 {format_duration(p95)}, p99 {format_duration(p99)}"
        f" over {load.latency.count:,} requests ({load.mode} loop, {load.achieved_rate:,.0f} req/s)"
    ]
    invalid = analysis.invalid_reason(trial, error_limit)
    if invalid is not None:
        note = f"no latency verdict: {invalid}"
        return TrialResult("warn", value, (*evidence, note), note)
    status: CheckStatus = "fail" if value is not None and value > limit else "pass"
    return TrialResult(status, value, tuple(evidence))


_LEAK_CHECKS = ("retained_per_request", "goroutine_growth")
_CHECKPOINTS = ("warmup", "drain")
_LATENCY_QUANTILES = {"p50_latency": 50.0, "p95_latency": 95.0, "p99_latency": 99.0}


def _limit_order(config: Config) -> list[str]:
    """Metrics with an absolute `max`, leak checks first, then the rest in table order."""
    first = [*_LEAK_CHECKS, "error_rate", "p95_latency"]
    rest = [m for m in METRICS if m not in first]
    return [m for m in (*first, *rest) if config.threshold(m).max is not None]


def _limit_rule(
    name: str, threshold: Threshold, error_limit: float | None
) -> Callable[[Trial], TrialResult]:
    limit = threshold.max
    assert limit is not None
    if name == "retained_per_request":
        return partial(
            _retained,
            limit=limit,
            noise_floor=threshold.noise_floor or 0.0,
            min_requests=max(1, threshold.min_requests or 1),
        )
    if name == "goroutine_growth":
        return partial(_goroutines, limit=limit)
    if name == "error_rate":
        return partial(_error_rate, limit=limit)
    if name in _LATENCY_QUANTILES:
        return partial(_latency, q=_LATENCY_QUANTILES[name], limit=limit, error_limit=error_limit)
    return partial(_metric_limit, name=name, limit=limit)


def _metric_limit(trial: Trial, *, name: str, limit: float) -> TrialResult:
    metric = METRICS[name]
    value = metric.per_trial(trial)
    if value is None:
        return TrialResult("no_data", None, note=f"no data: {metric.label} was not measured")
    evidence = (f"{metric.label}: {format_metric(value, metric.unit)}",)
    return TrialResult("fail" if value > limit else "pass", value, evidence)


def _profile_evidence(trial: Trial, attr: str) -> list[str]:
    before = getattr(trial.checkpoints["warmup"], attr)
    after = getattr(trial.checkpoints["drain"], attr)
    if not (before and after):
        return []
    return [f"profiles: go tool pprof -diff_base {before} {after}"]


def _why_no_data(trial: Trial, what: str) -> str:
    if trial.service.died:
        return f"no data: the service died before the {what} were taken"
    return f"no data: the {what} could not be taken"
