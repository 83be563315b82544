"""Prometheus text exposition (a service's /metrics) read with prometheus_client's own parser.

Strict: a malformed line is an error naming the line, never a silently missing metric. Only
the Go runtime and process metrics client_golang exports are read, by their standard names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

MAX_LINE_SHOWN = 120


class MetricsError(ValueError):
    """The /metrics text could not be read; the message names the line at fault."""


@dataclass(frozen=True, slots=True)
class GoRuntime:
    """What leakgate reads from client_golang's Go and process collectors (None: not exported)."""

    heap_live: float | None  # the best live-heap figure available, see `parse`
    heap_alloc: float | None  # go_memstats_heap_alloc_bytes (includes uncollected garbage)
    heap_objects: float | None
    goroutines: float | None
    gc_cycles: float | None
    total_cpu_seconds: float | None
    rss: float | None
    alloc_total: float | None = None  # go_memstats_alloc_bytes_total: grows while one process lives
    mallocs_total: float | None = None  # go_memstats_mallocs_total: heap objects allocated
    start_time: float | None = None  # process_start_time_seconds


def samples(text: str) -> dict[str, float]:
    """Unlabelled samples (and `_count`/`_sum` of summaries) by name; labelled ones are summed
    over their labels, except summary quantiles, which are skipped."""
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if "quantile" in sample.labels or "le" in sample.labels:
                    continue
                values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise MetricsError(_locate(text, e)) from None
    return values


def parse(text: str) -> GoRuntime:
    """The Go runtime's figures from /metrics text.

    The live heap: `go_gc_heap_live_bytes` where the runtime/metrics collector exports it;
    else the GC's heap goal (`go_memstats_next_gc_bytes`) divided by 1 + GOGC/100 (the goal is
    set from the live heap at the end of each cycle), which follows the live heap without the
    sawtooth of `go_memstats_heap_alloc_bytes`. GOGC is `go_gc_gogc_percent` when exported,
    else Go's default of 100.
    """
    v = samples(text)

    def get(name: str) -> float | None:
        value = v.get(name)
        return value if value is not None and math.isfinite(value) else None

    heap_live = get("go_gc_heap_live_bytes")
    goal = get("go_memstats_next_gc_bytes")
    if heap_live is None and goal is not None:
        gogc = get("go_gc_gogc_percent")
        heap_live = goal / (1 + (gogc if gogc is not None and gogc > 0 else 100) / 100)
    return GoRuntime(
        heap_live=heap_live,
        heap_alloc=get("go_memstats_heap_alloc_bytes"),
        heap_objects=get("go_memstats_heap_objects"),
        goroutines=get("go_goroutines"),
        gc_cycles=get("go_gc_duration_seconds_count"),
        total_cpu_seconds=get("process_cpu_seconds_total"),
        rss=get("process_resident_memory_bytes"),
        alloc_total=get("go_memstats_alloc_bytes_total"),
        mallocs_total=get("go_memstats_mallocs_total"),
        start_time=get("process_start_time_seconds"),
    )


def _locate(text: str, error: Exception) -> str:
    """Find the first line the parser refuses on its own, for an error that names it."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            list(text_string_to_metric_families(line + "\n"))
        except (ValueError, TypeError, KeyError, IndexError):
            shown = line if len(line) <= MAX_LINE_SHOWN else line[:MAX_LINE_SHOWN] + "…"
            return f"malformed line {number}: {shown!r}"
    return f"malformed metrics text: {error}"
