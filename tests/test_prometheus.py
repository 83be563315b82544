"""Reading a service's Prometheus /metrics: client_golang names, strict about malformed lines."""

from __future__ import annotations

import pytest

from leakgate import prometheus
from leakgate.config import parse_config
from leakgate.errors import ConfigError

CLIENT_GOLANG = """\
# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 42
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 7.340032e+06
# TYPE go_memstats_heap_objects gauge
go_memstats_heap_objects 51234
# TYPE go_memstats_next_gc_bytes gauge
go_memstats_next_gc_bytes 1.2e+07
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds{quantile="1"} 0.000311
go_gc_duration_seconds_sum 0.0123
go_gc_duration_seconds_count 87
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 3.1e+07
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} 1027
http_requests_total{code="500",method="get"} 3
"""


def test_client_golang_names_are_read() -> None:
    g = prometheus.parse(CLIENT_GOLANG)
    assert g.goroutines == 42 and g.heap_alloc == 7_340_032 and g.heap_objects == 51_234
    assert g.gc_cycles == 87 and g.total_cpu_seconds == 12.5 and g.rss == 31_000_000
    assert g.heap_live == pytest.approx(12e6 / 2)  # the heap goal at Go's default GOGC=100


def test_live_heap_prefers_the_runtime_metric_and_honours_gogc() -> None:
    exact = prometheus.parse(CLIENT_GOLANG + "go_gc_heap_live_bytes 5.5e+06\n")
    assert exact.heap_live == 5_500_000
    gogc50 = prometheus.parse(CLIENT_GOLANG + "go_gc_gogc_percent 50\n")
    assert gogc50.heap_live == pytest.approx(12e6 / 1.5)


def test_labelled_samples_are_summed_and_quantiles_skipped() -> None:
    values = prometheus.samples(CLIENT_GOLANG)
    assert values["http_requests_total"] == 1030
    assert "go_gc_duration_seconds" not in values


def test_missing_and_non_finite_values_are_no_data() -> None:
    g = prometheus.parse("go_goroutines NaN\nprocess_cpu_seconds_total +Inf\n")
    assert g.goroutines is None and g.total_cpu_seconds is None and g.heap_live is None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("go_goroutines twelve\n", "malformed line 1: 'go_goroutines twelve'"),
        ('go_goroutines 1\ngo_memstats_heap_objects{a="b" 3\n', "malformed line 2"),
        ("# TYPE go_goroutines gauge\ngo_goroutines 1 abc\n", "malformed line 2"),
        ("go_goroutines\n", "malformed line 1"),
    ],
)
def test_malformed_lines_are_errors_naming_the_line(text: str, line: str) -> None:
    with pytest.raises(prometheus.MetricsError, match=line):
        prometheus.parse(text)


def test_probe_source_config() -> None:
    cfg = parse_config(
        "service: {inject_agent: false}\nprobes: {source: prometheus, metrics_path: /m}\n", "c.yml"
    )
    assert cfg.probes.source == "prometheus" and cfg.probes.metrics_path == "/m"
    with pytest.raises(ConfigError, match=r"c.yml:1.*probes.source.*one of auto, agent"):
        parse_config("probes: {source: statsd}\n", "c.yml")
    with pytest.raises(ConfigError, match="inject_agent is false"):
        parse_config("service: {inject_agent: false}\nprobes: {source: agent}\n", "c.yml")
    with pytest.raises(ConfigError, match="must start with /"):
        parse_config("probes: {metrics_path: metrics}\n", "c.yml")
