"""Judge one run: leaks within it, absolute limits (SLOs) and the comparison with a baseline.

Pure functions from (RunRecord, Config) to a Verdict, assembled from slo.py (limits),
leaks.py (leak rules and leak sites) and compare.py (baseline against candidate). A regression
or a leak is a failing Check, never an exception.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from leakgate import analysis, costtext, leaks, sequential, slo
from leakgate.compare import SYMBOLS as _SYMBOLS
from leakgate.compare import Comparison, compare, environment_mismatches
from leakgate.config import Config
from leakgate.errors import EXIT_ENVIRONMENT, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK
from leakgate.metrics import (
    LEAK_METRICS,
    METRICS,
    Metric,
    Threshold,
    metric_values,
    sites_explaining,
)
from leakgate.model import (
    Check,
    CheckStatus,
    ComparisonRow,
    CostSites,
    Environment,
    LeakSites,
    RunRecord,
    Trial,
    Verdict,
    VerdictStatus,
)


def judge(
    record: RunRecord,
    config: Config,
    baseline: RunRecord | None = None,
    sites: LeakSites | None = None,
    costs: CostSites | None = None,
) -> Verdict:
    """Every check of a run, in the order a reader wants them.

    Leak and limit checks judge the candidate's trials on their own. Against a baseline (the
    `baseline` side of a `compare` record, or a stored RunRecord) each gated metric is compared
    too, one value per trial and side. `sites` (from leaksites.find) are attached to the
    failing leak checks, top three first; `costs` (from costsites.find) name the functions
    whose cost grew beside a failing or inconclusive comparison of a cost metric.
    """
    trials = [t for t in record.trials if t.side == "candidate"]
    checks: list[Check] = []
    notes: list[str] = []
    rows: tuple[ComparisonRow, ...] = ()
    if not trials:
        notes.append("no trial completed: nothing was judged")
    else:
        checks.extend(_limit_checks(trials, config))
    dead = [t for t in record.trials if t.side == "baseline" and t.service.died]
    if dead:
        checks.append(_baseline_died(dead[0]))
    if baseline is not None:
        base_trials, base_env = analysis.baseline_trials(baseline), baseline.environment
    else:
        base_trials = [t for t in record.trials if t.side == "baseline" and not t.service.died]
        base_env = record.environment
    if trials and baseline is None and record.design == "paired":
        paired = _paired(record, config)
        rows = tuple(_paired_row(c) for c in paired)
        checks.extend(_paired_check(c, config.fail_on_inconclusive) for c in paired if c.gated)
        notes.append(_paired_note(record, config, paired))
        notes.extend(_comparability_notes(base_trials, base_env, trials, record.environment))
    elif trials and (base_trials or baseline is not None):
        comparisons = _compare(base_trials, trials, config)
        rows = tuple(_row(c) for c in comparisons)
        checks.extend(
            _comparison_check(c, config.fail_on_inconclusive) for c in comparisons if c.gated
        )
        notes.extend(_comparability_notes(base_trials, base_env, trials, record.environment))
    notes.extend(_trial_notes(record.trials))
    unjudged = [c.name for c in checks if c.name in LEAK_METRICS and c.status == "no_data"]
    if unjudged:
        notes.append(f"could not judge {', '.join(unjudged)}: no data is never a pass")
    sites = sites or LeakSites()
    costs = _shown_costs(costs or CostSites(), checks)
    return Verdict(
        status=_status(record, checks, unjudged),
        checks=tuple(_with_costs(leaks.with_sites(c, sites), costs) for c in checks),
        notes=tuple(notes),
        comparisons=rows,
        measured=() if rows else _measured(trials),
        leak_sites=sites,
        costs=costs,
    )


def _shown_costs(costs: CostSites, checks: Sequence[Check]) -> CostSites:
    """The cost profiles a reader needs: CPU and allocations always, the live-heap growth only
    beside a heap leak that failed or could not be settled (a clean service's heap moves by a
    few one-off allocations between the checkpoints, which explain nothing)."""
    heap_flagged = any(
        c.status in ("fail", "warn") and sites_explaining(c.name) == "heap" for c in checks
    )
    shown = tuple(p for p in costs.profiles if p.kind != "heap" or heap_flagged)
    return dataclasses.replace(costs, profiles=shown)


def _with_costs(check: Check, costs: CostSites) -> Check:
    """A failing or inconclusive comparison of a cost metric, with the functions whose cost
    grew most first in its evidence ("where: main.priceWork +14.2 µs/request ...")."""
    metric = METRICS.get(check.name.removesuffix("_vs_baseline"))
    if metric is None or metric.costs is None or check.name == metric.name:
        return check
    profile = costs.get(metric.costs)
    if profile is None or check.status not in ("fail", "warn"):
        return check
    objects = metric.name == "allocs_per_request"
    if profile.compared:
        sites, prefix = costtext.grown(profile, objects=objects), "where"
    else:  # a stored baseline: its profiles are not here, so the candidate's costliest
        sites, prefix = list(profile.sites[:3]), "costliest"
    lines = [f"{prefix}: {costtext.describe(s, profile, objects=objects)}" for s in sites]
    return dataclasses.replace(check, evidence=(*lines, *check.evidence)) if lines else check


def _status(record: RunRecord, checks: Sequence[Check], unjudged: Sequence[str]) -> VerdictStatus:
    if record.interrupted:
        return "interrupted"
    if any(c.status == "fail" for c in checks):
        return "fail"
    if record.error or unjudged or any(c.status == "error" for c in checks):
        return "error"
    return "pass"


def _baseline_died(trial: Trial) -> Check:
    return Check(
        name="baseline_service_alive",
        status="error",
        summary=f"the baseline's service died in trial {trial.index + 1}: the comparison "
        "cannot be trusted",
        evidence=tuple(slo.service_alive(trial).evidence),
    )


def _comparability_notes(
    base: Sequence[Trial], base_env: Environment, cand: Sequence[Trial], cand_env: Environment
) -> list[str]:
    """What makes the two sides less comparable: a different machine, rate or load tool."""
    notes = environment_mismatches(
        base_env, cand_env, analysis.offered_rate(base), analysis.offered_rate(cand)
    )
    tools = {t.load.tool for t in (*base, *cand) if t.load}
    if len(tools) > 1:
        used = ", ".join(sorted(tools))
        notes.append(
            f"baseline and candidate were loaded with different tools ({used}): "
            "their latencies are not comparable"
        )
    return notes


def _limit_checks(trials: Sequence[Trial], config: Config) -> list[Check]:
    """service_alive, then one check per metric with an absolute `max`: leak checks first,
    then the error rate and p95, then the rest in table order."""
    # One trial whose service died is enough: a crash is never noise.
    checks = [
        slo.combine("service_alive", trials, slo.service_alive, None, "", any_fail_fails=True)
    ]
    error_limit = config.threshold("error_rate").max
    limited = [
        m for m in METRICS.values() if m.has_max and config.threshold(m.name).max is not None
    ]
    for metric in sorted(limited, key=lambda m: m.limit_rank):
        threshold = config.threshold(metric.name)
        assert threshold.max is not None
        rule = _limit_rule(metric, threshold, error_limit)
        checks.append(slo.combine(metric.name, trials, rule, threshold.max, metric.unit))
    return checks


def _limit_rule(metric: Metric, threshold: Threshold, error_limit: float | None) -> slo.TrialRule:
    limit = threshold.max
    assert limit is not None
    match metric.limit_rule:
        case "retained":
            noise_floor = threshold.noise_floor or 0.0
            min_requests = max(1, threshold.min_requests or 1)
            return lambda t: leaks.retained(
                t, limit=limit, noise_floor=noise_floor, min_requests=min_requests
            )
        case "goroutines":
            return lambda t: leaks.goroutines(t, limit=limit)
        case "errors":
            return lambda t: slo.error_rate(t, limit=limit)
        case "latency":
            return lambda t: slo.latency(t, metric=metric, limit=limit, error_limit=error_limit)
        case "value":
            return lambda t: slo.value_limit(t, metric=metric, limit=limit)


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


def _compare(base: Sequence[Trial], cand: Sequence[Trial], config: Config) -> list[Comparison]:
    error_limit = config.threshold("error_rate").max
    retained = config.threshold("retained_per_request")

    def values(trials: Sequence[Trial]) -> dict[str, list[float]]:
        out = metric_values(trials)
        # No latency verdict from a trial that missed its offered rate or its error limit.
        valid = [t for t in trials if analysis.invalid_reason(t, error_limit) is None]
        latency = metric_values(valid)
        for name, metric in METRICS.items():
            if metric.needs_steady_load:
                out[name] = latency[name]
        # Nor a retained figure from a trial too short for the leak check to judge it.
        out["retained_per_request"] = metric_values(leaks.enough_requests(trials, retained))[
            "retained_per_request"
        ]
        return out

    thresholds = leaks.with_noise_floor(config.thresholds, [*base, *cand], retained)
    return compare(values(base), values(cand), thresholds)


def _paired(record: RunRecord, config: Config) -> list[sequential.PairedComparison]:
    """The paired compare's metrics, judged at the look where it stopped (sequential.py)."""
    rate = analysis.offered_rate(record.trials)
    values = sequential.block_values(record.blocks, rate, config.threshold("error_rate").max)
    plan = sequential.plan_of(config.compare)
    comparisons = sequential.decide(values, config.thresholds, plan).comparisons
    if record.stopped_early:
        return sequential.stopped_here(comparisons, record.stopped_early)
    return list(comparisons)


def _paired_note(
    record: RunRecord, config: Config, paired: Sequence[sequential.PairedComparison]
) -> str:
    pairs = max((c.pairs for c in paired), default=0)
    look = max((c.look for c in paired if c.gated), default=0)
    block = config.compare.block
    text = (
        f"paired compare: {pairs} pairs of {block:g} s blocks, one process a side, alternating ABBA"
    )
    if look:
        text += f"; decided at look {look} (first after {config.compare.min_pairs} pairs, "
        text += f"at most {config.compare.max_pairs}); intervals are 95%"
    if record.stopped_early:
        text += f"; the blocks stopped early: {record.stopped_early}, so the leak checks decide"
    return text


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _paired_row(c: sequential.PairedComparison) -> ComparisonRow:
    return ComparisonRow(
        metric=c.metric,
        label=METRICS[c.metric].label,
        unit=METRICS[c.metric].unit,
        baseline_median=c.baseline_median,
        candidate_median=c.candidate_median,
        change=_finite(c.change),
        p_value=c.p_adjusted if c.p_adjusted is not None else c.p_value,
        n_baseline=c.pairs,
        n_candidate=c.pairs,
        verdict=c.verdict,
        symbol=_SYMBOLS[c.verdict],
        gated=c.gated,
        reason=c.reason,
        baseline_spread=analysis.spread(c.baseline),
        candidate_spread=analysis.spread(c.candidate),
        interval_low=_finite(c.low),
        interval_high=_finite(c.high),
        pairs=c.pairs,
    )


def _paired_check(c: sequential.PairedComparison, fail_on_inconclusive: bool = False) -> Check:
    values = (("baseline blocks", c.baseline), ("candidate blocks", c.candidate))
    return _gate_check(
        c.metric, c.verdict, c.reason, _finite(c.change), c.threshold, values, fail_on_inconclusive
    )


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
        baseline_spread=analysis.spread(c.baseline.values),
        candidate_spread=analysis.spread(c.candidate.values),
    )


def _measured(trials: Sequence[Trial]) -> tuple[ComparisonRow, ...]:
    """What each metric measured over the candidate's trials, for a run without a baseline."""
    rows = []
    for name, values in metric_values(t for t in trials if not t.service.died).items():
        if not values:
            continue
        metric = METRICS[name]
        rows.append(
            ComparisonRow(
                metric=name,
                label=metric.label,
                unit=metric.unit,
                baseline_median=None,
                candidate_median=analysis.median(values),
                change=None,
                p_value=None,
                n_baseline=0,
                n_candidate=len(values),
                verdict="measured",
                symbol="",
                gated=False,
                reason="",
                candidate_spread=analysis.spread(values),
            )
        )
    return tuple(rows)


_COMPARISON_STATUS: dict[str, CheckStatus] = {
    "pass": "pass",
    "fail": "fail",
    "inconclusive": "warn",
    "too_few": "warn",
    "no_data": "no_data",
}


def _comparison_check(c: Comparison, fail_on_inconclusive: bool = False) -> Check:
    values = (("baseline trials", c.baseline.values), ("candidate trials", c.candidate.values))
    return _gate_check(
        c.metric, c.verdict, c.reason, c.change, c.threshold, values, fail_on_inconclusive
    )


def _gate_check(
    metric: str,
    verdict: str,
    reason: str,
    change: float | None,
    threshold: float | None,
    values: Sequence[tuple[str, Sequence[float]]],
    fail_on_inconclusive: bool,
) -> Check:
    """A gated comparison as a Check, each side's values in its evidence."""
    unit = METRICS[metric].unit
    evidence = [
        f"{label}: {', '.join(slo.format_value(v, unit, metric) for v in side)}"
        for label, side in values
    ]
    summary = reason if verdict != "inconclusive" else f"~ {reason}"
    status = _COMPARISON_STATUS[verdict]
    if verdict == "inconclusive" and fail_on_inconclusive:
        status, summary = "fail", f"{summary} (fail_on_inconclusive)"
    return Check(
        name=f"{metric}_vs_baseline",
        status=status,
        summary=summary,
        value=change,
        limit=threshold,
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
        leaks.with_sites(first_by_name[c.name], confirmed.leak_sites)
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
        measured=confirmed.measured,
        leak_sites=confirmed.leak_sites,
        costs=confirmed.costs,
    )


def exit_code(verdict: Verdict) -> int:
    """pass 0, fail 1, interrupted 2; a run that could not judge at all is an environment error."""
    return {
        "pass": EXIT_OK,
        "fail": EXIT_GATE_FAILED,
        "interrupted": EXIT_INTERRUPTED,
        "error": EXIT_ENVIRONMENT,
    }[verdict.status]
