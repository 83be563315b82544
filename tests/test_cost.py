"""Cost per request: the counters bracketing the measure window, where they are read, the
figures made of them, and how a failing cost comparison names the function responsible."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from leakgate import analysis, cpuclock
from leakgate.config import Config
from leakgate.judge import judge
from leakgate.measure import CostMeter
from leakgate.model import (
    CostProfile,
    CostSite,
    CostSites,
    Counters,
    RunRecord,
    WindowCost,
)
from leakgate.probes import AgentSource, PprofSource, ProbeError, PrometheusSource, RuntimeSource
from leakgate.units import format_change, format_cost, format_metric, format_per_request

from .factories import fixed_record, trial
from .fakes import fake_service

# -- figures from the counters ----------------------------------------------------------------


def test_the_window_counters_make_the_cost_of_a_request() -> None:
    t = trial(requests=50_000, cpu_us=40.0, alloc_bytes=9000.0, allocs=120.0)
    assert analysis.cpu_per_request(t) == pytest.approx(40e-6)
    assert analysis.alloc_bytes_per_request(t) == pytest.approx(9000.0)
    assert analysis.allocs_per_request(t) == pytest.approx(120.0)
    # factories.trial: one GC per 2,000 requests
    assert analysis.gc_cycles_per_1k_requests(t) == pytest.approx(0.5)


def test_no_counters_or_no_requests_is_no_figure() -> None:
    assert analysis.cpu_per_request(trial()) is None  # no cost recorded (an older record)
    none_served = trial(requests=0, cpu_us=40.0)
    assert analysis.cpu_per_request(none_served) is None
    only_cpu = trial(cpu_us=40.0)
    assert analysis.alloc_bytes_per_request(only_cpu) is None


def test_a_counter_that_went_back_is_no_figure() -> None:
    """Another process behind the URL (a restart) starts its counters again: no figure."""
    t = trial(cpu_us=40.0, alloc_bytes=9000.0)
    assert t.cost is not None
    back = dataclasses.replace(t.cost, end=dataclasses.replace(t.cost.end, alloc_bytes=1.0))
    t = dataclasses.replace(t, cost=back)
    assert analysis.alloc_bytes_per_request(t) is None
    assert analysis.cpu_per_request(t) == pytest.approx(40e-6)


def test_the_spread_is_the_coefficient_of_variation() -> None:
    assert analysis.spread([10.0, 10.0, 10.0]) == 0.0
    assert analysis.spread([9.0, 11.0]) == pytest.approx(2**0.5 / 10)
    assert analysis.spread([5.0]) is None
    assert analysis.spread([-1.0, 1.0]) is None  # a mean of 0


def test_cost_figures_read_to_three_digits() -> None:
    assert format_cost(14.2e-6) == "14.2 µs"
    assert format_cost(3.5e-6) == "3.50 µs"
    assert format_cost(4e-7) == "400 ns"
    assert format_cost(2.5e-3) == "2.5 ms"
    assert format_metric(91.2e-6, "s/request") == "91.2 µs/request"
    assert format_metric(1.4e-6, "s/request", signed=True) == "+1.40 µs/request"
    # bytes to the byte below 10 KiB (a leak's size is read off these), in KiB above
    assert format_metric(4677.2, "B/request") == "4677.2 B/request"
    assert format_metric(16384.0 + 4677.2, "B/request") == "20.6 KiB/request"
    assert format_per_request(1536.0, "B/request", signed=True) == "+1.5 KiB"
    assert format_change(0.5, -0.25) == "+300.0%"  # a heap that had shrunk, now grows


# -- where the counters are read ------------------------------------------------------------


def test_the_agent_serves_the_counters() -> None:
    body = json.dumps(
        {
            "process_cpu_seconds": 12.5,
            "alloc_bytes": 2_000_000,
            "alloc_objects": 30_000,
            "gc_cycles": 40,
            "num_goroutine": 8,
        }
    ).encode()
    with fake_service({"/leakgate/counters": lambda: (200, "application/json", body)}) as url:
        source = AgentSource(url.removeprefix("http://"), "token")
        assert source.counters() == Counters(12.5, 2_000_000.0, 30_000.0, 40.0)
    assert "getrusage" in source.cpu_source and not source.cpu_coarse
    assert "ReadMemStats" in source.alloc_source


def test_expvar_serves_allocations_and_no_cpu() -> None:
    memstats = {"TotalAlloc": 5_000_000, "Mallocs": 70_000, "NumGC": 12, "NextGC": 4 << 20}
    body = json.dumps({"memstats": memstats}).encode()
    with fake_service({"/debug/vars": lambda: (200, "application/json", body)}) as url:
        counters = PprofSource(url).counters()
    assert counters == Counters(None, 5_000_000.0, 70_000.0, 12.0)


def test_prometheus_serves_every_counter_and_says_its_cpu_is_coarse() -> None:
    text = (
        b"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.21\n"
        b"# TYPE go_memstats_alloc_bytes_total counter\ngo_memstats_alloc_bytes_total 6e+06\n"
        b"# TYPE go_memstats_mallocs_total counter\ngo_memstats_mallocs_total 80000\n"
        b"# TYPE go_gc_duration_seconds summary\ngo_gc_duration_seconds_sum 0.1\n"
        b"go_gc_duration_seconds_count 14\n"
    )
    with fake_service({"/metrics": lambda: (200, "text/plain", text)}) as url:
        source = PrometheusSource(url, "/metrics")
        assert source.counters() == Counters(3.21, 6e6, 80_000.0, 14.0)
    assert source.cpu_coarse


class _Counting(RuntimeSource):
    """A source whose counters are given, one reading at a time."""

    def __init__(self, readings: list[Counters], cpu: str = "", coarse: bool = False) -> None:
        self.readings = readings
        self.cpu_source, self.cpu_coarse, self.alloc_source = cpu, coarse, "test allocs"

    def counters(self) -> Counters:
        if not self.readings:
            raise ProbeError("gone")
        return self.readings.pop(0)


def test_without_cpu_from_the_source_a_local_service_is_read_from_the_kernel() -> None:
    source = _Counting([Counters(None, 100.0, 10.0, 1.0), Counters(None, 300.0, 30.0, 2.0)])
    meter = CostMeter(source, os.getpid())
    start = meter.read()
    _burn(0.05)
    end = meter.read()
    window = meter.window(start, end, 1.0)
    assert window.cpu_source == cpuclock.SCHEDSTAT_SOURCE and not window.cpu_coarse
    assert start.cpu_seconds is not None and end.cpu_seconds is not None
    assert end.cpu_seconds - start.cpu_seconds >= 0.04  # the burn, at ns resolution
    assert (start.alloc_bytes, end.alloc_bytes) == (100.0, 300.0)
    assert window.alloc_source == "test allocs"


def test_a_coarse_source_gives_way_to_the_kernel_but_a_fine_one_does_not() -> None:
    coarse = CostMeter(_Counting([], cpu="process_cpu_seconds_total", coarse=True), os.getpid())
    assert coarse.cpu_source == cpuclock.SCHEDSTAT_SOURCE and not coarse.cpu_coarse
    fine = CostMeter(_Counting([Counters(1.0)], cpu="getrusage (agent)"), os.getpid())
    assert fine.cpu_source == "getrusage (agent)" and fine.read().cpu_seconds == 1.0
    # attached: no local process, so the coarse figure stays, and says so
    remote = CostMeter(_Counting([], cpu="process_cpu_seconds_total", coarse=True), None)
    assert remote.cpu_source == "process_cpu_seconds_total" and remote.cpu_coarse


def test_a_source_that_cannot_answer_reads_as_no_counters() -> None:
    meter = CostMeter(_Counting([], cpu="getrusage (agent)"), None)
    start = meter.read()
    assert start == Counters()
    window = meter.window(start, Counters(), 20.0)
    assert window.cpu_source == window.alloc_source == ""  # nothing was read from them


def test_a_cgroup_of_its_own_is_read_from_cpu_stat(tmp_path: Path) -> None:
    (tmp_path / "cpu.stat").write_text("usage_usec 1234567\nuser_usec 1000000\n")
    assert cpuclock.cgroup_usage(tmp_path) == pytest.approx(1.234567)
    (tmp_path / "cpu.stat").write_text("nr_periods 0\n")
    assert cpuclock.cgroup_usage(tmp_path) is None
    assert cpuclock.cgroup_usage(tmp_path / "gone") is None


def test_no_process_has_no_cpu_clock() -> None:
    assert cpuclock.read(0) is None
    assert cpuclock.schedstat_seconds(2**22 + 12345) is None  # no such process


def test_a_cpu_counter_that_changed_between_the_readings_gives_no_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first reading came from the per-thread schedstat, the second from a cgroup: two
    counters that do not subtract."""
    readings = iter([(1.0, cpuclock.SCHEDSTAT_SOURCE), (1.0, cpuclock.SCHEDSTAT_SOURCE),
                     (5.0, cpuclock.CGROUP_SOURCE)])  # fmt: skip
    monkeypatch.setattr(cpuclock, "read", lambda pid: next(readings))
    meter = CostMeter(_Counting([Counters(), Counters()]), 1234)
    assert meter.read().cpu_seconds == 1.0
    assert meter.read().cpu_seconds is None


def test_a_cpu_counter_in_ticks_that_counted_too_few_gives_no_figure() -> None:
    t = trial(requests=4000, cpu_us=20.0)  # 80 ms of CPU: 8 ticks
    assert t.cost is not None
    coarse = dataclasses.replace(t.cost, cpu_coarse=True, cpu_source="process_cpu_seconds_total")
    t = dataclasses.replace(t, cost=coarse)
    assert analysis.cpu_per_request(t) is None
    assert "counts 10 ms ticks" in analysis.coarse_cpu_note(t)
    enough = trial(requests=1_000_000, cpu_us=20.0)  # 20 s of CPU
    assert enough.cost is not None
    enough = dataclasses.replace(enough, cost=dataclasses.replace(enough.cost, cpu_coarse=True))
    assert analysis.cpu_per_request(enough) == pytest.approx(20e-6)
    assert analysis.coarse_cpu_note(enough) == ""


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


# -- judged, with the function responsible ------------------------------------------------------


def _with_cpu(record: RunRecord, candidate_us: float) -> RunRecord:
    trials = []
    for t in record.trials:
        us = candidate_us if t.side == "candidate" else 40.0
        spent = trial(cpu_us=us * (1 + t.index / 1000), requests=100_000).cost
        trials.append(dataclasses.replace(t, cost=spent))
    return dataclasses.replace(record, trials=tuple(trials))


CPU_SITES = CostProfile(
    kind="cpu",
    unit="s/request",
    sites=(
        CostSite("main.priceWork", "/src/leaks.go", 188, candidate=37.5e-6, baseline=23.3e-6),
        CostSite("main.describe", "/src/main.go", 493, candidate=9.0e-6, baseline=9.1e-6),
    ),
    candidate_total=52e-6,
    baseline_total=40e-6,
)
HEAP_SITES = CostProfile(kind="heap", unit="B/request", candidate_total=0.4)


def test_a_failing_cpu_comparison_names_the_function_whose_cost_grew() -> None:
    record = _with_cpu(fixed_record(), 52.0)
    verdict = judge(record, Config(), costs=CostSites(profiles=(CPU_SITES, HEAP_SITES)))
    check = {c.name: c for c in verdict.checks}["cpu_per_request_vs_baseline"]
    assert check.status == "fail", check.summary
    assert check.evidence[0] == (
        "where: main.priceWork (leaks.go:188) +14.2 µs/request (+60.9%: 23.3 µs → 37.5 µs)"
    )
    assert not any("main.describe" in line for line in check.evidence)  # it shrank
    # the golden run's candidate leaks: the live-heap profile is kept beside the heap leak
    assert [p.kind for p in verdict.costs.profiles] == ["cpu", "heap"]


def test_a_passing_cost_comparison_carries_no_sites_and_a_clean_heap_no_heap_profile() -> None:
    record = _with_cpu(fixed_record(), 40.5)
    clean = tuple(
        dataclasses.replace(t, checkpoints={}) if t.side == "candidate" else t
        for t in record.trials
    )
    verdict = judge(
        dataclasses.replace(record, trials=clean),
        Config(),
        costs=CostSites(profiles=(CPU_SITES, HEAP_SITES)),
    )
    check = {c.name: c for c in verdict.checks}["cpu_per_request_vs_baseline"]
    assert check.status == "pass" and not any(e.startswith("where") for e in check.evidence)
    assert [p.kind for p in verdict.costs.profiles] == ["cpu"]


def test_against_a_stored_baseline_the_candidates_costliest_functions_are_named() -> None:
    record = _with_cpu(fixed_record(), 60.0)
    stored = dataclasses.replace(
        record, trials=tuple(t for t in record.trials if t.side == "baseline"), command="check"
    )
    stored = dataclasses.replace(
        stored, trials=tuple(dataclasses.replace(t, side="candidate") for t in stored.trials)
    )
    candidate = dataclasses.replace(
        record, trials=tuple(t for t in record.trials if t.side == "candidate"), command="check"
    )
    only = CostProfile(
        kind="cpu",
        unit="s/request",
        sites=(CostSite("main.priceWork", "/src/leaks.go", 188, candidate=37.5e-6),),
        candidate_total=60e-6,
    )
    verdict = judge(candidate, Config(), stored, costs=CostSites(profiles=(only,)))
    check = {c.name: c for c in verdict.checks}["cpu_per_request_vs_baseline"]
    assert check.status == "fail", check.summary
    assert check.evidence[0] == (
        "costliest: main.priceWork (leaks.go:188) 37.5 µs/request (62% of the total)"
    )


def test_a_run_without_a_baseline_shows_what_each_metric_measured() -> None:
    t = [trial(index=i, cpu_us=40.0 + i, alloc_bytes=9000.0, allocs=120.0) for i in range(3)]
    record = RunRecord(trials=tuple(t))
    verdict = judge(record, Config())
    rows = {r.metric: r for r in verdict.measured}
    assert not verdict.comparisons
    cpu = rows["cpu_per_request"]
    assert cpu.candidate_median == pytest.approx(41e-6) and cpu.n_candidate == 3
    assert cpu.candidate_spread == pytest.approx(analysis.spread([40.0, 41.0, 42.0]))
    assert rows["alloc_bytes_per_request"].candidate_spread == 0.0
    assert "rss_peak" not in rows  # nothing measured, no row


def test_the_window_is_stored_and_read_back() -> None:
    t = trial(cpu_us=40.0, alloc_bytes=9000.0, allocs=120.0)
    record = RunRecord(trials=(t,))
    back = RunRecord.from_json(record.to_json())
    assert back.trials[0].cost == t.cost
    assert isinstance(back.trials[0].cost, WindowCost)
