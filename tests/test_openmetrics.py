"""--openmetrics output, read back by prometheus_client's OpenMetrics parser."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from leakgate.report import Judged, openmetrics

from .factories import fixed_verdict


def parsed() -> dict[str, list[tuple[dict[str, str], float]]]:
    verdict, record = fixed_verdict()
    text = openmetrics.render(Judged(verdict, record))
    assert text.endswith("# EOF\n") and "NaN" not in text
    return {
        family.name: [(dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_verdict_and_checks_are_one_hot_gauges() -> None:
    families = parsed()
    verdict = {labels["status"]: value for labels, value in families["leakgate_verdict"]}
    assert verdict == {"pass": 0.0, "fail": 1.0, "error": 0.0, "interrupted": 0.0}
    status = {
        (labels["check"], labels["status"]): value
        for labels, value in families["leakgate_check_status"]
    }
    assert status[("retained_per_request_vs_baseline", "fail")] == 1.0
    assert status[("service_alive", "pass")] == 1.0
    assert all(labels["service"] == "orders-service" for labels, _ in families["leakgate_verdict"])


def test_comparisons_and_per_trial_values_are_exported() -> None:
    families = parsed()
    change = {labels["metric"]: v for labels, v in families["leakgate_comparison_change_ratio"]}
    assert 2.9 < change["heap_live"] < 3.1
    p95 = [
        v
        for labels, v in families["leakgate_candidate_trial_value"]
        if labels["metric"] == "p95_latency"
    ]
    assert len(p95) == 5 and all(0.001 < v < 0.01 for v in p95)  # seconds, not ms
    info = families["leakgate_run_info"][0][0]
    assert info["go_version"] == "go1.26.8" and info["command"] == "compare"
