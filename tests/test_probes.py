"""When the sampler traces: goroutines grown beyond the limit plus the connections' share."""

from __future__ import annotations

from pathlib import Path

from leakgate.probes import TracePlan

PLAN = TracePlan(after=17.0, seconds=2.0, growth=16.0, dest=Path("t.out"), slack=64.0)


def series(values: list[float]) -> list[tuple[float, float]]:
    return [(float(t), v) for t, v in enumerate(values)]


def test_connections_opening_are_not_growth() -> None:
    # 10 goroutines at rest; the generator's 64 connections arrive in the first second.
    clean = series([10, *([74.0, 80.0, 76.0] * 6)])
    assert not PLAN.due(clean, 18.0)


def test_a_leak_beyond_limit_and_connections_is_traced_only_late_enough() -> None:
    leaking = series([10.0, *(74.0 + 60 * t for t in range(19))])
    assert PLAN.due(leaking, 18.0)
    assert not PLAN.due(leaking, 10.0)  # not before `after`
    assert not PLAN.due(series([10.0]), 18.0)  # nothing after the settling second


def test_a_vanished_process_reads_as_no_rss() -> None:
    from leakgate.probes import read_rss

    assert read_rss(2**22 + 12345) == (None, None)  # above pid_max: never a live process
