"""When the sampler traces: goroutines grown beyond the limit plus the connections' share."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from leakgate.config import ProbeConfig
from leakgate.errors import ServiceStartError
from leakgate.measure import loopback_agent_address, runtime_source
from leakgate.probes import (
    AGENT_TOKEN_ENV,
    AGENT_TOKEN_HEADER,
    AgentSource,
    PprofSource,
    ProbeError,
    TracePlan,
)
from leakgate.redirects import MAX_LOCATION_SHOWN, OffTargetRedirect, describe, origin
from leakgate.service import Service

from .fakes import fake_service, heap_profile, redirect

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


def test_a_refused_redirects_location_is_shown_escaped_and_bounded() -> None:
    forged = "http://10.0.0.1/\x1b[2J\x1b[31mPASS\r\nleakgate: all checks passed\x00"

    def refused(location: str) -> OffTargetRedirect:
        return OffTargetRedirect("http://127.0.0.1:1/healthz", 302, location, None, None)  # type: ignore[arg-type]

    text = describe(refused(forged))
    assert text.startswith("HTTP 302 to http://10.0.0.1/\\x1b[2J") and text.endswith(
        "(off the target: not followed)"
    ), text
    assert all(c.isprintable() for c in text), text
    assert "\\r\\nleakgate" in text and "\\x00" in text
    for location in ("http://10.0.0.1/" + "a" * 10_000, "http://10.0.0.1/" + "\x07" * 10_000):
        shown = describe(refused(location)).removeprefix("HTTP 302 to ")
        shown = shown.removesuffix(" (off the target: not followed)")
        assert len(shown) == MAX_LOCATION_SHOWN and shown.endswith("..."), shown
        assert all(c.isprintable() for c in shown)
    assert "\x1b" not in str(refused(forged))  # the exception's own message too
    assert describe(refused("http://10.0.0.1/ok")).startswith("HTTP 302 to http://10.0.0.1/ok (")


def test_the_agent_address_must_be_loopback_with_a_numeric_port() -> None:
    for good, want in (
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        ("127.9.8.7:1", "127.9.8.7:1"),
        ("[::1]:65535", "[::1]:65535"),
        ("[0:0:0:0:0:0:0:1]:9", "[::1]:9"),
    ):
        assert loopback_agent_address(good) == want, good
    for bad in (
        "",
        "10.0.0.1:80",
        "evil.example:80",
        "localhost:80",  # a name resolves wherever the resolver says
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:080",
        "127.0.0.1:http",
        "127.1:80",
        "127.0.0.01:80",
        "[::ffff:127.0.0.1]:80",
        "[::2]:80",
        "[fe80::1%lo]:80",
        "::1:80",
        "evil.example@127.0.0.1:80",
        "127.0.0.1:80@evil.example",
        "127.0.0.1:80/path",
        "127.0.0.1:80#x",
        "127.0.0.1:80 ",
        "1.2.3.4:80\n127.0.0.1:80",
    ):
        assert loopback_agent_address(bad) is None, bad


def test_an_agent_address_off_loopback_is_refused_and_gets_no_token(tmp_path: Path) -> None:
    def service_writing(addr: str) -> Service:
        svc = Service(
            tmp_path / "svc",
            args=(),
            env={AGENT_TOKEN_ENV: "secret"},
            cwd=tmp_path,
            log_path=tmp_path / "service.log",
            cpus=None,
            gomaxprocs=None,
            agent=True,
            stop_timeout=1.0,
        )
        svc.agent_file.write_text(addr + "\n")
        return svc

    source = runtime_source(ProbeConfig(), True, service_writing("127.0.0.1:4321"), None)
    assert isinstance(source, AgentSource)
    assert source.base_url == "http://127.0.0.1:4321"
    assert source.headers == {AGENT_TOKEN_HEADER: "secret"}
    for addr in ("evil.example:80", "10.1.2.3:4321", "127.0.0.1:80@evil.example", "\x1b[31m:1"):
        with pytest.raises(ServiceStartError) as refused:
            runtime_source(ProbeConfig(), True, service_writing(addr), None)
        message = str(refused.value)
        assert "not a loopback address" in message and "no token sent" in message, message
        assert "\x1b" not in message
    with pytest.raises(ServiceStartError) as refused:
        runtime_source(ProbeConfig(), True, service_writing("x" * 5000), None)
    assert len(str(refused.value)) < 400


def test_a_saved_profile_replaces_the_old_one_whole_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "trial-1" / "heap-drain.pb.gz"
    served = heap_profile()
    with fake_service(
        {"/debug/pprof/heap": lambda: (200, "application/octet-stream", served)}
    ) as url:
        source = PprofSource(url)
        assert source.save_profile("heap", dest) == dest
        assert dest.read_bytes() == served
        assert stat.S_IMODE(dest.stat().st_mode) == 0o644

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        dest.write_bytes(b"earlier")
        monkeypatch.setattr(os, "fsync", no_space)
        with pytest.raises(OSError, match="No space"):
            source.save_profile("heap", dest)
    assert dest.read_bytes() == b"earlier"  # a failed write leaves the old profile
    assert [p.name for p in dest.parent.iterdir()] == ["heap-drain.pb.gz"]
