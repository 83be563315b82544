"""The metric registry: every entry is parsed from leakgate.yml, compared, judged and rendered.

The walk below is what makes adding a metric one entry in leakgate/metrics.py: a metric that
the config cannot read, the comparison skips, the judge cannot limit or a reporter leaves out
fails here by name.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from leakgate import compare as cmp
from leakgate.config import Config, load_config, quick
from leakgate.judge import judge
from leakgate.metrics import DEFAULT_THRESHOLDS, METRICS, Metric, Threshold, metric_values
from leakgate.model import Counters, Environment, RunRecord, Series, Trial, WindowCost
from leakgate.report import Judged, console, html, junit, markdown, openmetrics, table

from .factories import heap_series, trial

MS = 1e-3

# -- metric values from trials ---------------------------------------------------------------


def test_metric_values_reads_one_value_per_trial() -> None:
    trials = [
        trial(index=0, heap_before=10_000_000, heap_after=10_100_000, goroutines_after=14),
        trial(index=1, heap_before=10_000_000, heap_after=10_000_000, errors=1000, p_ms=4.0),
        Trial(index=2),  # nothing measured: skipped everywhere
    ]
    values = metric_values(trials)
    assert set(values) == set(METRICS)
    assert values["heap_live"] == [10_100_000.0, 10_000_000.0]
    assert values["retained_per_request"] == [1.0, 0.0]
    assert values["goroutine_growth"] == [2.0, 0.0]
    assert all(isinstance(v, float) for v in values["goroutine_growth"])
    assert values["throughput"] == [5000.0, 5000.0]
    assert values["error_rate"] == [0.0, 0.01]
    p95 = values["p95_latency"]
    assert len(p95) == 2 and p95[1] > p95[0] > 1 * MS
    assert values["p50_latency"][0] < p95[0] <= values["p99_latency"][0]
    # no GC series, no RSS and no counters in these trials
    assert values["rss_peak"] == values["gc_cycles_per_min"] == values["gc_cpu_fraction"] == []
    assert values["cpu_per_request"] == values["alloc_bytes_per_request"] == []


def test_metric_table_directions() -> None:
    assert [n for n, m in METRICS.items() if m.direction == "higher"] == ["throughput"]
    assert set(METRICS) == {
        "p50_latency",
        "p95_latency",
        "p99_latency",
        "throughput",
        "error_rate",
        "cpu_per_request",
        "alloc_bytes_per_request",
        "allocs_per_request",
        "gc_cycles_per_1k_requests",
        "heap_live",
        "retained_per_request",
        "goroutine_growth",
        "rss_peak",
        "gc_cycles_per_min",
        "gc_cpu_fraction",
    }


def test_defaults_and_quick_come_from_the_registry() -> None:
    assert set(DEFAULT_THRESHOLDS) == {
        "p95_latency",
        "retained_per_request",
        "goroutine_growth",
        "error_rate",
        "cpu_per_request",
        "alloc_bytes_per_request",
        "allocs_per_request",
    }
    # the cost metrics are gated against a baseline at +10% beyond a floor, with no limit
    for name in ("cpu_per_request", "alloc_bytes_per_request", "allocs_per_request"):
        t = DEFAULT_THRESHOLDS[name]
        assert t.max_increase == pytest.approx(0.10) and t.floor and t.floor > 0
        assert t.max is None
    assert Config().thresholds == DEFAULT_THRESHOLDS
    # --quick answers "does it leak?": the leak checks, and error_rate (leak figures from a
    # service answering errors mean nothing)
    quick_names = {"retained_per_request", "goroutine_growth", "error_rate"}
    assert {n for n, m in METRICS.items() if m.quick} == quick_names
    assert set(quick(Config()).thresholds) == quick_names
    assert all(t.max_increase is None for t in quick(Config()).thresholds.values())


def test_limit_checks_come_leaks_first_then_errors_then_p95_then_table_order() -> None:
    record = run_record(1.0, 1.0)
    thresholds = {name: Threshold(max=1e12) for name, m in METRICS.items() if m.has_max}
    names = [c.name for c in judge(record, Config(thresholds=thresholds)).checks]
    first = ["service_alive", "retained_per_request", "goroutine_growth", "error_rate"]
    assert names[:5] == [*first, "p95_latency"]
    rest = [n for n in METRICS if n not in names[:5] and METRICS[n].has_max]
    assert names[5:] == rest


def test_latency_and_throughput_leave_out_a_trial_that_missed_its_rate() -> None:
    """needs_steady_load: a trial that reached under 95% of its offered rate measured another
    load, so its latency and throughput are not compared; its other figures are."""
    record = run_record()
    short = []
    for t in record.trials:
        if t.side == "candidate" and t.index in (1, 3):
            assert t.load is not None
            t = dataclasses.replace(t, load=dataclasses.replace(t.load, achieved_rate=2000.0))
        short.append(t)
    record = dataclasses.replace(record, trials=tuple(short))
    rows = {r.metric: r for r in judge(record, Config(thresholds={})).comparisons}
    steady = {n for n, m in METRICS.items() if m.needs_steady_load}
    assert steady == {"p50_latency", "p95_latency", "p99_latency", "throughput"}
    for name in METRICS:
        assert rows[name].n_candidate == (3 if name in steady else 5), name


# -- the walk --------------------------------------------------------------------------------


def measured(index: int, worse: float) -> Trial:
    """A trial in which every metric has a value, `worse` times as bad as at worse=1 (with a
    per-trial jitter of under 5%, so no two trials tie)."""
    jitter = 1 + index / 100
    scale = worse * jitter
    requests = int(100_000 / scale)
    growth = int(10_000_000 * scale)
    t = trial(
        index=index,
        heap_before=10_000_000,
        heap_after=10_000_000 + growth,
        series=heap_series(10_000_000, growth / 20, noise=100, seed=index),
        goroutines_after=12 + round(4 * scale),
        requests=requests,
        errors=round(requests * 0.004 * scale),
        p_ms=2.0 * scale,
    )
    cumulative = {
        "gc_cycles": ("count", 20 * scale),
        "gc_cpu_seconds": ("seconds", 0.1 * scale),
        "total_cpu_seconds": ("seconds", 10.0),
    }
    series = dict(t.series)
    for name, (unit, end) in cumulative.items():
        series[name] = Series(name, unit, ((0.0, 0.0), (20.0, end)))
    # per request: 40 µs of CPU, 9 KB and 120 objects allocated, a GC every 500 requests
    spent = Counters(
        cpu_seconds=40e-6 * scale * requests,
        alloc_bytes=9000 * scale * requests,
        alloc_objects=120 * scale * requests,
        gc_cycles=requests * scale / 500,
    )
    cost = WindowCost(start=Counters(0.0, 0.0, 0.0, 0.0), end=spent, seconds=20.0)
    return dataclasses.replace(
        t, series=series, rss_peak=int(50_000_000 * scale), offered_rate=5000.0, cost=cost
    )


def run_record(baseline: float = 1.0, candidate: float = 2.0, n: int = 5) -> RunRecord:
    trials = []
    for i in range(n):
        trials.append(dataclasses.replace(measured(2 * i, baseline), side="baseline"))
        trials.append(dataclasses.replace(measured(2 * i + 1, candidate), side="candidate"))
    return RunRecord(
        created="2026-12-02T00:00:00+00:00",
        package="/src/orders",
        command="compare",
        environment=Environment(go_version="go1.26.8"),
        trials=tuple(trials),
    )


def _limit(metric: Metric, record: RunRecord) -> float:
    """An absolute limit between the baseline's median and the candidate's."""
    base = metric_values(t for t in record.trials if t.side == "baseline")[metric.name]
    cand = metric_values(t for t in record.trials if t.side == "candidate")[metric.name]
    low, high = sorted((max(base), min(cand)))
    assert low < high, f"{metric.name}: the candidate is not worse in every trial"
    return (low + high) / 2


_YAML_VALUES = {"duration": ("3ms", 0.003), "size": ("2KiB", 2048.0), "count": ("12", 12.0)}
_YAML_VALUES["fraction"] = ("2%", 0.02)


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_is_parsed_from_the_config(name: str, tmp_path: Path) -> None:
    metric = METRICS[name]
    text, value = _YAML_VALUES[metric.kind]
    keys = {"max_increase": "7%", "floor": text}
    if metric.has_max:
        keys["max"] = text
    body = ", ".join(f"{k}: {v}" for k, v in keys.items())
    path = tmp_path / "leakgate.yml"
    path.write_text(f"thresholds:\n  {name}: {{{body}}}\n")
    t = load_config(path).threshold(name)
    assert t.max_increase == pytest.approx(0.07)
    assert t.floor == pytest.approx(value)
    assert t.max == (
        pytest.approx(value) if metric.has_max else DEFAULT_THRESHOLDS.get(name, Threshold()).max
    )


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_is_compared(name: str) -> None:
    record = run_record()
    values = {
        side: metric_values(t for t in record.trials if t.side == side)
        for side in ("baseline", "candidate")
    }
    assert all(len(v[name]) == 5 for v in values.values()), "not measured in every trial"
    rows = cmp.compare(
        values["baseline"], values["candidate"], {name: Threshold(max_increase=0.10)}
    )
    by_metric = {r.metric: r for r in rows}
    assert by_metric[name].verdict == "fail", by_metric[name].reason
    assert by_metric[name].change is not None and by_metric[name].change > 0.10
    # and the other way round it is an improvement
    back = {r.metric: r for r in cmp.compare(values["candidate"], values["baseline"], {})}
    assert back[name].verdict == "pass"


@pytest.mark.parametrize("name", list(METRICS))
def test_every_metric_is_judged_against_the_baseline_and_its_limit(name: str) -> None:
    metric = METRICS[name]
    record = run_record()
    limit = _limit(metric, record) if metric.has_max else None
    cfg = Config(thresholds={name: Threshold(max_increase=0.10, max=limit)})
    verdict = judge(record, cfg)
    checks = {c.name: c for c in verdict.checks}
    assert checks[f"{name}_vs_baseline"].status == "fail", checks[f"{name}_vs_baseline"].summary
    assert verdict.status == "fail"
    if metric.has_max:
        assert checks[name].status == "fail", checks[name].summary
        assert checks[name].unit == metric.unit
        passing = judge(run_record(1.0, 1.0), cfg)
        assert {c.name: c for c in passing.checks}[name].status == "pass"
    else:
        assert name not in checks


def test_every_metric_is_rendered_by_every_reporter() -> None:
    # 6 trials a side: with every metric gated, Holm multiplies the smallest p by 15, and 5
    # against 5 cannot go below 1/252.
    record = run_record(n=6)
    # error_rate gets no absolute limit here: a candidate over it would keep its latencies out
    # of the comparison (no latency verdict from a trial over its error limit).
    thresholds = {
        name: Threshold(
            max_increase=0.10,
            max=_limit(m, record) if m.has_max and name != "error_rate" else None,
        )
        for name, m in METRICS.items()
    }
    verdict = judge(record, Config(thresholds=thresholds))
    rows = {r.metric: r for r in verdict.comparisons}
    assert set(rows) == set(METRICS)
    assert {r.verdict for r in rows.values()} == {"fail"}, [r.reason for r in rows.values()]
    judged = Judged(verdict, record)
    texts = {
        "console": console.render(judged),
        "markdown": markdown.render(judged),
        "html": html.render(judged),
        "junit": junit.render(judged),
        "openmetrics": openmetrics.render(judged),
    }
    for name, metric in METRICS.items():
        label, base, cand, change = table.comparison_cells(rows[name])[:4]
        for reporter in ("console", "markdown", "html"):
            text = texts[reporter]
            cells = (label, base, cand, change)
            row = [ln for ln in text.splitlines() if all(cell in ln for cell in cells)]
            assert row, f"{reporter} has no table row {cells}"
        assert f"{name}_vs_baseline" in texts["junit"]
        assert (
            f'comparison_change_ratio{{service="orders",metric="{name}"}}' in texts["openmetrics"]
        )
        assert f'check="{name}_vs_baseline"' in texts["openmetrics"]
        if metric.has_max and name != "error_rate":
            assert f'name="{name}"' in texts["junit"], f"junit leaves out the {name} limit"
            assert f'check="{name}"' in texts["openmetrics"]
