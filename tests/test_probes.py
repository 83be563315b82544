"""When the sampler traces: goroutines grown beyond the limit plus the connections' share."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakgate.probes import AGENT_TOKEN_HEADER, AgentSource, ProbeError, TracePlan
from leakgate.redirects import origin

from .fakes import fake_service, redirect

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


def test_same_target_is_scheme_host_and_port() -> None:
    assert origin("http://127.0.0.1/x") == origin("HTTP://127.0.0.1:80/y")
    assert origin("http://LocalHost:8080/") == origin("http://localhost:8080/z?q=1")
    assert origin("http://127.0.0.1:8080/") != origin("http://127.0.0.1:8081/")
    assert origin("http://127.0.0.1:8080/") != origin("https://127.0.0.1:8080/")
    assert origin("http://127.0.0.1:8080/") != origin("http://localhost:8080/")
    assert origin("http://127.0.0.1:99999/")[2] == -1  # an invalid port: no real target's


def test_the_agent_token_never_follows_a_redirect_elsewhere() -> None:
    seen: list[str] = []

    def record() -> tuple[int, str, bytes]:
        seen.append("asked")
        return 200, "application/json", b"{}"

    with fake_service({"/leakgate/metrics": record}) as elsewhere:
        routes = {"/leakgate/metrics": redirect(elsewhere + "/leakgate/metrics")}
        with fake_service(routes) as agent:
            source = AgentSource(agent.removeprefix("http://"), "secret")
            assert source.headers == {AGENT_TOKEN_HEADER: "secret"}
            with pytest.raises(
                ProbeError, match=r"HTTP 302 to .* \(off the target: not followed\)"
            ):
                source.sample()
    assert seen == []  # the other address was never asked, so never given the token
