"""Absolute limits (SLOs): each trial judged against a metric's `max`, then one check per metric.

Pure functions from trials to Checks. With several trials a check takes the median value and
fails when at least half of the trials fail it, so one noisy trial cannot decide alone; a
service that died fails at once. Leak limits (retained bytes, goroutine growth) have rules of
their own in leaks.py and are combined here like the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from leakgate import analysis
from leakgate.metrics import METRICS, Metric
from leakgate.model import Check, CheckStatus, Trial
from leakgate.units import format_duration, format_metric


@dataclass(frozen=True, slots=True)
class TrialResult:
    """One trial judged against one limit: its status, value and the lines that show why."""

    status: CheckStatus
    value: float | None
    evidence: tuple[str, ...] = ()
    note: str = ""


def combine(
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
    text = f"{format_value(value, unit, name)} (limit {format_value(limit, unit, name)})"
    if len(results) > 1:
        text = f"median {text} over {len(results)} trials"
    if notes:
        text += f"; {notes[0]}"
    return text


def format_value(value: float | None, unit: str, name: str = "") -> str:
    """A check's value in its unit; the growth figures of the leak checks carry their sign."""
    metric = METRICS.get(name.removesuffix("_vs_baseline"))
    return format_metric(value, unit, signed=metric is not None and metric.leak is not None)


# -- per-trial rules ---------------------------------------------------------------------------

TrialRule = Callable[[Trial], TrialResult]


def service_alive(trial: Trial) -> TrialResult:
    """Fails when the trial's service died (how, in which phase, and its last log lines)."""
    s = trial.service
    if not s.died:
        return TrialResult("pass", 1.0)
    how = s.reason or (f"killed by {s.signal}" if s.signal else f"exited with code {s.exit_code}")
    note = f"the service {how} during {s.phase or 'the run'}"
    evidence = [note]
    if s.log_tail:
        evidence.append("last log lines:\n" + s.log_tail)
    return TrialResult("fail", 0.0, tuple(evidence), note)


def error_rate(trial: Trial, *, limit: float) -> TrialResult:
    """Fails when errors ÷ requests is over `limit`; no data without a completed request."""
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


def latency(
    trial: Trial, *, metric: Metric, limit: float, error_limit: float | None = None
) -> TrialResult:
    """Fails when the metric's percentile is over `limit`; a trial that missed its offered
    rate or its error limit gets no latency verdict (a warning that says why)."""
    load = trial.load
    if load is None or load.latency.count == 0:
        return TrialResult("no_data", None, note="no successful request to time")
    value = metric.per_trial(trial)
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


def value_limit(trial: Trial, *, metric: Metric, limit: float) -> TrialResult:
    """Any other metric: fails when its value is over `limit`; no data when not measured."""
    value = metric.per_trial(trial)
    if value is None:
        return TrialResult("no_data", None, note=f"no data: {metric.label} was not measured")
    evidence = (f"{metric.label}: {format_metric(value, metric.unit)}",)
    return TrialResult("fail" if value > limit else "pass", value, evidence)


def why_no_data(trial: Trial, what: str) -> str:
    """The note of a check with no data: the service died first, or `what` was not taken."""
    if trial.service.died:
        return f"no data: the service died before the {what} were taken"
    return f"no data: the {what} could not be taken"
