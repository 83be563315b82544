from __future__ import annotations

from leakgate.config import Config, parse_config
from leakgate.judge import exit_code, inconclusive_metrics, judge, merge_confirmation
from leakgate.model import Check, ComparisonRow, LeakSite, LeakSites, RunRecord, Verdict

from .factories import heap_series, trial


def _checks(record: RunRecord, config: Config | None = None) -> dict[str, str]:
    verdict = judge(record, config or Config())
    return {c.name: c.status for c in verdict.checks}


def test_clean_run_passes() -> None:
    record = RunRecord(trials=(trial(heap_after=10_000_100),))
    verdict = judge(record, Config())
    assert verdict.status == "pass" and exit_code(verdict) == 0
    assert _checks(record) == {
        "service_alive": "pass",
        "retained_per_request": "pass",
        "goroutine_growth": "pass",
        "error_rate": "pass",
    }


def test_growing_heap_fails_with_evidence() -> None:
    t = trial(heap_after=16_400_000, series=heap_series(10e6, 320_000))
    verdict = judge(RunRecord(trials=(t,)), Config())
    assert verdict.status == "fail" and exit_code(verdict) == 1
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "fail"
    assert check.value is not None and round(check.value) == 64
    assert "+64.0 B/request (limit +16.0 B/request)" in check.summary
    assert any("Mann-Kendall" in e for e in check.evidence)
    assert any("go tool pprof -diff_base" in e for e in check.evidence)


def test_filled_cache_is_not_a_leak() -> None:
    t = trial(heap_after=14_000_000, series=heap_series(10e6, 500_000, fill_until=8))
    verdict = judge(RunRecord(trials=(t,)), Config())
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "pass"
    assert "cache that filled" in check.summary
    assert verdict.status == "pass"


def test_short_window_decides_on_retained_bytes_alone() -> None:
    t = trial(heap_after=16_400_000, series=heap_series(10e6, 320_000, seconds=6))
    check = next(
        c
        for c in judge(RunRecord(trials=(t,)), Config()).checks
        if c.name == "retained_per_request"
    )
    assert check.status == "fail" and "trend untested" in check.summary


def test_goroutine_leak_fails() -> None:
    record = RunRecord(trials=(trial(goroutines_before=10, goroutines_after=5000),))
    assert _checks(record)["goroutine_growth"] == "fail"


def test_service_death_fails_and_names_exit() -> None:
    verdict = judge(RunRecord(trials=(trial(died=True),)), Config())
    alive = verdict.checks[0]
    assert alive.name == "service_alive" and alive.status == "fail"
    assert "exited with code 2 during load" in alive.summary
    assert any("panic: boom" in e for e in alive.evidence)


def test_error_rate_and_p95_limits() -> None:
    cfg = parse_config("thresholds:\n  p95_latency: {max: 1ms}\n")
    checks = _checks(RunRecord(trials=(trial(errors=5_000),)), cfg)
    assert checks["error_rate"] == "fail"
    checks = _checks(RunRecord(trials=(trial(p_ms=5.0),)), cfg)
    assert checks["p95_latency"] == "fail"
    checks = _checks(RunRecord(trials=(trial(p_ms=0.5),)), cfg)
    assert checks["p95_latency"] == "pass"


def test_missing_checkpoints_are_no_data_never_ok() -> None:
    from leakgate.model import Trial

    verdict = judge(RunRecord(trials=(Trial(index=0),)), Config())
    statuses = {c.name: c.status for c in verdict.checks}
    assert statuses["retained_per_request"] == "no_data"
    assert statuses["goroutine_growth"] == "no_data"
    assert statuses["error_rate"] == "no_data"


def test_one_noisy_trial_of_three_does_not_decide() -> None:
    leaky = trial(index=1, heap_after=16_400_000, series=heap_series(10e6, 320_000))
    record = RunRecord(trials=(trial(index=0), leaky, trial(index=2)))
    assert _checks(record)["retained_per_request"] == "warn"
    record = RunRecord(trials=(leaky, leaky, trial(index=2)))
    assert _checks(record)["retained_per_request"] == "fail"


def test_interrupted_run() -> None:
    verdict = judge(RunRecord(trials=(trial(),), interrupted=True), Config())
    assert verdict.status == "interrupted" and exit_code(verdict) == 2


def test_no_latency_verdict_from_an_invalid_trial() -> None:
    import dataclasses

    cfg = parse_config("thresholds:\n  p95_latency: {max: 1ms}\n")
    short = trial(p_ms=5.0)
    short = dataclasses.replace(short, load=dataclasses.replace(short.load, achieved_rate=4000.0))
    check = next(
        c for c in judge(RunRecord(trials=(short,)), cfg).checks if c.name == "p95_latency"
    )
    assert check.status == "warn"
    assert "no latency verdict: the trial reached 80% of its offered rate" in check.summary
    erring = trial(p_ms=5.0, errors=5_000)
    verdict = judge(RunRecord(trials=(erring,)), cfg)
    check = next(c for c in verdict.checks if c.name == "p95_latency")
    assert check.status == "warn" and "error rate 5.00% is over the 1.00% limit" in check.summary
    assert verdict.status == "fail"  # the error rate itself fails the gate


def _comparison_verdict(inconclusive: bool, fail: bool = False) -> Verdict:
    status = "fail" if fail else ("warn" if inconclusive else "pass")
    verdict = "fail" if fail else ("inconclusive" if inconclusive else "pass")
    check = Check(name="p95_latency_vs_baseline", status=status, summary=verdict)  # type: ignore[arg-type]
    heap = Check(name="heap_live_vs_baseline", status="pass", summary="pass")
    row = ComparisonRow(
        metric="p95_latency",
        label="p95 latency",
        unit="s",
        baseline_median=1.0,
        candidate_median=1.2,
        change=0.2,
        p_value=0.1,
        n_baseline=5,
        n_candidate=5,
        verdict=verdict,
        symbol="~",
        gated=True,
        reason=verdict,
    )
    return Verdict(status="fail" if fail else "pass", checks=(check, heap), comparisons=(row,))


def test_confirm_redecides_only_inconclusive_metrics() -> None:
    first = _comparison_verdict(inconclusive=True)
    assert inconclusive_metrics(first) == {"p95_latency"}
    merged = merge_confirmation(first, _comparison_verdict(inconclusive=False, fail=True))
    assert merged.status == "fail"
    assert {c.name: c.status for c in merged.checks}["p95_latency_vs_baseline"] == "fail"
    assert merged.comparisons[0].verdict == "fail"
    assert "confirmed with more trials: p95_latency" in merged.notes[-1]
    # a metric that was decided the first time keeps its verdict
    decided = _comparison_verdict(inconclusive=False)
    assert inconclusive_metrics(decided) == set()


def test_trial_order_is_balanced_and_randomised() -> None:
    from leakgate.runner import trial_order

    order = trial_order(20, ["baseline", "candidate"], seed=1)
    assert order.count("baseline") == order.count("candidate") == 20
    pairs = [tuple(order[i : i + 2]) for i in range(0, 40, 2)]
    assert all(sorted(p) == ["baseline", "candidate"] for p in pairs)
    assert len(set(pairs)) == 2  # both orders occur
    assert trial_order(3, ["candidate"], seed=5) == ["candidate"] * 3
    assert trial_order(20, ["baseline", "candidate"], seed=1) == order  # reproducible from the seed


def test_confirm_keeps_the_leak_sites_on_a_check_decided_the_first_time() -> None:
    import dataclasses

    site = LeakSite(kind="heap", function="main.audit", file="a.go", line=3, growth=9e6)
    first = _comparison_verdict(inconclusive=True)
    heap_fail = Check(name="heap_live_vs_baseline", status="fail", summary="+300%")
    first = dataclasses.replace(first, checks=(first.checks[0], heap_fail))
    confirmed = dataclasses.replace(
        _comparison_verdict(inconclusive=False), leak_sites=LeakSites(heap=(site,))
    )
    merged = merge_confirmation(first, confirmed)
    heap = next(c for c in merged.checks if c.name == "heap_live_vs_baseline")
    assert heap.status == "fail" and heap.leak_sites == (site,)
    assert merged.leak_sites.heap == (site,)


def test_fail_on_inconclusive_turns_a_gated_tilde_into_a_failure() -> None:
    import dataclasses

    base = [20.0, 26.0, 21.0, 25.0, 22.0]
    cand = [26.0, 23.0, 27.0, 24.0, 28.0]
    trials = [
        dataclasses.replace(trial(index=i, p_ms=ms), side=side, offered_rate=5000.0)
        for i, (side, ms) in enumerate(
            [("baseline", b) for b in base] + [("candidate", c) for c in cand]
        )
    ]
    record = RunRecord(trials=tuple(trials))
    lenient = judge(record, parse_config(""))
    p95 = next(c for c in lenient.checks if c.name == "p95_latency_vs_baseline")
    assert p95.status == "warn" and p95.summary.startswith("~") and lenient.status == "pass"
    strict = judge(record, parse_config("fail_on_inconclusive: true\n"))
    p95 = next(c for c in strict.checks if c.name == "p95_latency_vs_baseline")
    assert p95.status == "fail" and "(fail_on_inconclusive)" in p95.summary
    assert strict.status == "fail" and exit_code(strict) == 1


# -- retained_per_request: heap noise and few requests (issue 14, item 4) ----------------------


def _retained_check(record: RunRecord, config: Config | None = None) -> Check:
    verdict = judge(record, config or Config())
    return next(c for c in verdict.checks if c.name == "retained_per_request")


def test_heap_noise_over_few_requests_is_inconclusive_not_a_leak() -> None:
    # The reproduction: 11.9 KiB over 600 requests read as a +20.3 B/request leak. The
    # heap series (flat, 20 KB of noise a sample) neither rises nor provably levels off, so
    # nothing settles it: ~, exit 0.
    t = trial(heap_after=10_000_000 + 12_186, requests=600)
    verdict = judge(RunRecord(trials=(t,)), Config())
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "warn", check.summary
    assert "+20.3 B/request" in check.summary
    assert "within the heap's 96.0 KiB noise floor: ±163.8 B/request over 600 requests" in (
        check.summary
    )
    # 98,304 B ÷ (20.31 − 16) B/request: the count at which ± noise no longer spans the limit
    assert "22,809 requests would resolve the limit at this value" in check.summary
    assert any("thresholds.retained_per_request.noise_floor" in e for e in check.evidence)
    assert any("neither confirms growth nor shows it levelled off" in e for e in check.evidence)
    assert verdict.status == "pass" and exit_code(verdict) == 0


# 20 s at rate 200: 4,000 requests, so the 96 KiB noise floor is ±24.6 B/request around the
# figure, more than the 16 B limit itself.
_BAND_REQUESTS = 4_000


def test_a_leak_inside_the_noise_band_fails_when_the_heap_keeps_rising() -> None:
    growth = 40 * _BAND_REQUESTS  # +40 B/request: 40 − 24.6 is under the limit, 40 + 24.6 over
    t = trial(
        heap_after=10_000_000 + growth,
        requests=_BAND_REQUESTS,
        series=heap_series(10e6, growth / 20, noise=2_000),
    )
    verdict = judge(RunRecord(trials=(t,)), Config())
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "fail", check.summary
    assert verdict.status == "fail" and exit_code(verdict) == 1
    assert "+40.0 B/request" in check.summary and "live heap keeps growing, though" in check.summary
    assert any(
        "the retained figure alone was within the noise, but the heap kept rising" in e
        for e in check.evidence
    ), check.evidence


def test_a_figure_inside_the_noise_band_passes_when_the_heap_levelled_off() -> None:
    growth = 30 * _BAND_REQUESTS  # a cache that filled in the first 5 s, then stayed flat
    t = trial(
        heap_after=10_000_000 + growth,
        requests=_BAND_REQUESTS,
        series=heap_series(10e6, growth / 5, fill_until=5, noise=2_000),
    )
    verdict = judge(RunRecord(trials=(t,)), Config())
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "pass", check.summary
    assert "levelled off" in check.summary
    assert verdict.status == "pass" and exit_code(verdict) == 0


def test_a_figure_inside_the_noise_band_stays_inconclusive_when_the_trend_is_undecided() -> None:
    growth = 30 * _BAND_REQUESTS
    noisy = trial(  # the trend test sees 20 KB of noise and cannot tell either way
        heap_after=10_000_000 + growth,
        requests=_BAND_REQUESTS,
        series=heap_series(10e6, 0.0),
    )
    short = trial(  # 6 samples: too few to test the trend at all
        heap_after=10_000_000 + growth,
        requests=_BAND_REQUESTS,
        series=heap_series(10e6, growth / 6, seconds=6, noise=2_000),
    )
    for t in (noisy, short):
        verdict = judge(RunRecord(trials=(t,)), Config())
        check = next(c for c in verdict.checks if c.name == "retained_per_request")
        assert check.status == "warn", check.summary
        assert "within the heap's 96.0 KiB noise floor: ±24.6 B/request" in check.summary
        assert "7,022 requests would resolve the limit at this value" in check.summary
        assert verdict.status == "pass" and exit_code(verdict) == 0


def test_a_rising_heap_below_min_requests_is_still_no_data() -> None:
    growth = 40 * 99  # in the band, with a heap series the trend test confirms as rising
    series = heap_series(10e6, growth / 20, noise=20)
    t = trial(heap_after=10_000_000 + growth, requests=99, series=series)
    check = _retained_check(RunRecord(trials=(t,)))
    assert any("Mann-Kendall p=" in e for e in check.evidence), check.evidence
    assert check.status == "no_data", check.summary


def test_a_kib_a_request_leak_over_a_thousand_requests_fails() -> None:
    growth = 1_000 * 1024  # ±98.3 B/request of noise is far below +1024 B/request
    t = trial(
        heap_after=10_000_000 + growth,
        requests=1_000,
        series=heap_series(10e6, growth / 20),
    )
    check = _retained_check(RunRecord(trials=(t,)))
    assert check.status == "fail" and "+1024.0 B/request" in check.summary


def test_one_request_is_no_data_never_a_fail() -> None:
    t = trial(heap_after=10_000_000 + 17_080, requests=1)  # rate: 0.01
    verdict = judge(RunRecord(trials=(t,)), Config())
    check = next(c for c in verdict.checks if c.name == "retained_per_request")
    assert check.status == "no_data"
    assert check.summary == (
        "no data: 1 request, fewer than min_requests 100: too few to tell retained bytes "
        "per request"
    )
    assert any("17 KiB" in e or "16.7 KiB" in e for e in check.evidence), check.evidence
    assert verdict.status == "error" and exit_code(verdict) == 5  # could not judge, not a leak


def test_no_request_at_all_is_no_data_with_the_count() -> None:
    import dataclasses

    t = trial()
    assert t.load is not None
    t = dataclasses.replace(t, load=dataclasses.replace(t.load, requests=0, ok=0))
    assert "0 requests, fewer than min_requests" in _retained_check(RunRecord(trials=(t,))).summary


def test_a_leak_beyond_the_noise_still_fails_a_short_run() -> None:
    growth = 600 * 1024  # 1 KiB a request, climbing all through the window
    t = trial(heap_after=10_000_000 + growth, requests=600, series=heap_series(10e6, growth / 20))
    check = _retained_check(RunRecord(trials=(t,)))
    assert check.status == "fail" and "+1024.0 B/request" in check.summary


def test_a_long_clean_run_still_passes_outright() -> None:
    t = trial(heap_after=10_000_000 + 48_880, requests=30_000)  # the largest noise measured
    assert _retained_check(RunRecord(trials=(t,))).status == "pass"


def test_noise_floor_and_min_requests_are_configurable() -> None:
    short = RunRecord(trials=(trial(heap_after=10_000_000 + 12_186, requests=600),))
    off = parse_config("thresholds:\n  retained_per_request: {noise_floor: null}\n")
    assert _retained_check(short, off).status == "fail"  # no floor: the old reading
    small = parse_config("thresholds:\n  retained_per_request: {noise_floor: 1KiB}\n")
    assert _retained_check(short, small).status == "fail"  # 11.9 KiB is well beyond 1 KiB
    strict = parse_config("thresholds:\n  retained_per_request: {min_requests: 1000}\n")
    assert _retained_check(short, strict).status == "no_data"


def _short_compare(base_growth: list[int], cand_growth: list[int], requests: int) -> RunRecord:
    import dataclasses

    trials = []
    for i, (b, c) in enumerate(zip(base_growth, cand_growth, strict=True)):
        for side, growth in (("baseline", b), ("candidate", c)):
            t = trial(index=2 * i, heap_after=10_000_000 + growth, requests=requests)
            trials.append(dataclasses.replace(t, side=side, index=len(trials)))
    return RunRecord(command="compare", trials=tuple(trials))


def test_heap_noise_does_not_make_a_regression_in_a_compare() -> None:
    # Both sides leak-free, the candidate's checkpoints a few KiB further apart by chance: over
    # 600 requests that used to read as +25 B/request, significant, beyond the 16 B floor.
    record = _short_compare(
        [0, 1_000, 2_000, 3_000, 4_000], [14_000, 16_000, 18_000, 19_000, 20_000], 600
    )
    verdict = judge(record, Config())
    row = next(r for r in verdict.comparisons if r.metric == "retained_per_request")
    assert row.verdict == "pass", row.reason
    assert "163.8 B/request floor" in row.reason


def test_a_real_regression_beyond_the_noise_still_fails_a_compare() -> None:
    record = _short_compare(
        [0, 1_000, 2_000, 3_000, 4_000], [600_000, 610_000, 620_000, 630_000, 640_000], 600
    )
    row = next(r for r in judge(record, Config()).comparisons if r.metric == "retained_per_request")
    assert row.verdict == "fail", row.reason


def test_trials_too_short_to_judge_are_left_out_of_a_compare() -> None:
    record = _short_compare([0] * 5, [17_080] * 5, 1)
    row = next(r for r in judge(record, Config()).comparisons if r.metric == "retained_per_request")
    assert row.verdict == "no_data" and row.n_baseline == row.n_candidate == 0
