"""The wrk load driver: its output parser, the scenario's Lua form, and real wrk runs against a
tiny Go server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from leakgate.config import RequestSpec
from leakgate.errors import EXIT_ENVIRONMENT, LoadError
from leakgate.load import LoadPlan
from leakgate.load.builtin import write_scenario
from leakgate.load.wrk import (
    INSTALL_HINT,
    MARKER,
    WrkProcess,
    find_wrk,
    histogram_from_percentiles,
    lua_scenario,
    lua_string,
    parse_wrk_output,
)
from leakgate.model import LoadResult, bucket_index
from leakgate.service import free_port
from leakgate.templates import parse_template

from .factories import wrk_percentiles, wrk_result

WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:8080
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.03ms    1.77ms  24.31ms   90.38%
  29769 requests in 2.01s, 2.54MB read
Requests/sec:  14817.44
"""


def _output(data: dict[str, Any]) -> str:
    return WRK_TEXT + MARKER + " " + json.dumps(data) + "\n"


# -- parse_wrk_output --------------------------------------------------------------------------


def test_parse_a_clean_run() -> None:
    r = parse_wrk_output(_output(wrk_result()))
    assert isinstance(r, LoadResult)
    assert (r.tool, r.mode, r.connections, r.target_rate) == ("wrk", "closed", 8, 0.0)
    assert r.requests == 10_000 and r.ok == 10_000 and r.planned == 10_000
    assert dict(r.errors) == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    assert r.error_rate == 0
    assert r.duration_s == pytest.approx(2.0)
    assert r.achieved_rate == pytest.approx(5000.0)
    assert r.latency.count == 10_000
    assert r.latency.min_ns == 40_000 and r.latency.max_ns == 2_950_000
    assert r.latency.sum_ns == 180_500 * 10_000  # wrk's mean times the responses timed
    assert r.seconds == () and r.status_codes == {} and r.first_error == ""


def test_socket_errors_on_some_requests_are_counted_not_fatal() -> None:
    errors = {"connect": 2, "read": 5, "write": 1, "status": 30, "timeout": 4}
    r = parse_wrk_output(_output(wrk_result(errors=errors)))
    assert dict(r.errors) == errors
    assert r.ok == 10_000 - 30 - 4
    assert r.error_rate == pytest.approx(42 / 10_000)
    assert r.latency.count == 10_000 - 4  # responses later than --timeout carry no latency
    assert "read 5" in r.first_error and "30 responses" in r.first_error


def test_checked_statuses_replace_wrk_status_count() -> None:
    data = wrk_result(
        errors={"status": 500},  # e.g. 404s an entry expects: wrk counts every status > 399
        status_check={"mode": "uniform", "responses": 10_000, "unexpected": 7},
        status_codes={"404": 9_993, "200": 7},
    )
    r = parse_wrk_output(_output(data))
    assert r.errors["status"] == 7
    assert r.ok == 10_000 - 7
    assert r.status_codes == {"404": 9_993, "200": 7}


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ({"connect": 16}, "could not connect"),
        ({"read": 3, "timeout": 1}, "socket error"),
        ({}, "no response"),
    ],
)
def test_zero_requests_is_a_load_error(errors: dict[str, int], message: str) -> None:
    data = wrk_result(requests=0, errors=errors)
    data["latency"]["percentiles"] = []
    with pytest.raises(LoadError, match=message) as info:
        parse_wrk_output(_output(data))
    assert info.value.exit_code == EXIT_ENVIRONMENT == 5


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ({"timeout": 10_000}, "every response arrived after the timeout"),
    ],
)
def test_no_ok_response_is_a_load_error(errors: dict[str, int], message: str) -> None:
    with pytest.raises(LoadError, match=message):
        parse_wrk_output(_output(wrk_result(errors=errors)))


def test_only_error_statuses_is_a_result_for_error_rate_to_judge() -> None:
    # A candidate that answers only 500s is a regression the gate fails (error_rate, exit 1),
    # not a load-tool failure (exit 5): the same as with the bundled generator.
    result = parse_wrk_output(_output(wrk_result(errors={"status": 10_000})))
    assert result.ok == 0 and result.errors["status"] == 10_000 and result.error_rate == 1.0
    checked = wrk_result(
        status_check={"mode": "inflight", "responses": 10_000, "unexpected": 10_000}
    )
    assert parse_wrk_output(_output(checked)).errors["status"] == 10_000
    mixed = parse_wrk_output(_output(wrk_result(errors={"status": 4_000, "timeout": 6_000})))
    assert mixed.ok == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (WRK_TEXT, "no LEAKGATE_WRK_JSON line"),
        ("", "no LEAKGATE_WRK_JSON line"),
        (WRK_TEXT + MARKER + ' {"version": 1, "requests": 3,\n', "not JSON"),
        (WRK_TEXT + MARKER + " [1, 2]\n", "not a JSON object"),
        (WRK_TEXT + MARKER + ' {"version": 1, "requests": NaN}\n', "not JSON"),
        (_output(wrk_result(version=2)), "unknown version"),
        (_output(wrk_result(requests="many")), "requests is missing or not a count"),
        (_output(wrk_result(requests=-1)), "requests is missing or not a count"),
        (_output({k: v for k, v in wrk_result().items() if k != "errors"}), "errors is missing"),
        (_output(wrk_result(errors={"read": None})), "errors.read"),
        (_output(wrk_result(status_check={"mode": "guess"})), "status_check.mode"),
        (_output(wrk_result(latency={"percentiles": "p50"})), "percentiles"),
        (_output(wrk_result(latency={"percentiles": [[50, 10], [40, 20]]})), "not sorted"),
        (_output(wrk_result(latency={"percentiles": [[50, 10], [100, 5]]})), "not sorted"),
        (_output(wrk_result(latency={"percentiles": [[50, 10], [99, 20]]})), "end at 100"),
        (_output(wrk_result(latency={"percentiles": [[150, 10]]})), "out of range"),
        (_output(wrk_result(latency={"percentiles": []})), "no latency percentiles"),
        (_output(wrk_result(latency={"mean_us": -3})), "mean_us"),
    ],
)
def test_malformed_output_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(LoadError, match=message):
        parse_wrk_output(text)


def test_output_size_is_bounded() -> None:
    with pytest.raises(LoadError, match="over"):
        parse_wrk_output("x" * (16 * 1024 * 1024 + 1))


def test_the_last_marker_line_wins() -> None:
    first = MARKER + " " + json.dumps(wrk_result(requests=5))
    r = parse_wrk_output(first + "\n" + _output(wrk_result()))
    assert r.requests == 10_000


def test_null_mean_reads_as_zero() -> None:
    r = parse_wrk_output(_output(wrk_result(latency={"mean_us": None, "stdev_us": None})))
    assert r.latency.sum_ns == 0


# -- the histogram -----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2_000, 2_345, 99_999, 3_000_000])
def test_histogram_percentiles_within_one_percent_of_the_points(count: int) -> None:
    points = [(p, us) for p, us in wrk_percentiles()]
    h = histogram_from_percentiles(points, count, min_us=40, max_us=2950, mean_us=180)
    assert h.count == count == sum(n for _, n in h.buckets)
    assert [i for i, _ in h.buckets] == sorted({i for i, _ in h.buckets})
    for p, us in points:
        got = h.percentile(p)
        assert got is not None
        assert got * 1e6 == pytest.approx(us, rel=0.01), f"p{p}"


def test_histogram_of_a_narrow_distribution_and_its_buckets() -> None:
    points = [(round(i / 10, 1), 100.0) for i in range(1, 1001)]
    h = histogram_from_percentiles(points, 5000, min_us=100, max_us=100, mean_us=100)
    assert h.buckets == ((bucket_index(100_000), 5000),)
    assert h.percentile(50) == pytest.approx(100e-6)  # clamped to min/max
    assert bucket_index(0) == 0 and bucket_index(0.5) == 0
    assert bucket_index(1.02**10 * 1.001) == 10
    assert math.floor(math.log(123_456) / math.log(1.02)) == bucket_index(123_456)


def test_histogram_of_few_samples_reproduces_each_sample() -> None:
    # wrk's percentile(p) is the sample at rank floor(n * p / 100) + 1
    samples = [100, 200, 300, 400, 500, 600, 2950]
    n = len(samples)
    points = [
        (i / 10, float(samples[min(n, math.floor(n * i / 1000) + 1) - 1])) for i in range(1, 1001)
    ]
    h = histogram_from_percentiles(points, n, min_us=100, max_us=2950, mean_us=721.4)
    assert sum(c for _, c in h.buckets) == n == len(h.buckets)
    for rank, us in enumerate(samples, start=1):
        got = h.percentile(100 * (rank - 0.5) / n)
        assert got is not None and got * 1e6 == pytest.approx(us, rel=0.01)


def test_empty_histogram_when_nothing_was_timed() -> None:
    h = histogram_from_percentiles([], 0, min_us=0, max_us=0, mean_us=0)
    assert h.count == 0 and h.percentile(50) is None


# -- the scenario as Lua -----------------------------------------------------------------------


def _lua_unquote(literal: str) -> str:
    """Decode what lua_string writes (printable ASCII and \\ddd escapes only)."""
    assert literal[0] == literal[-1] == '"'
    body = literal[1:-1]
    assert '"' not in body.replace("\\034", "")
    out = bytearray()
    i = 0
    while i < len(body):
        if body[i] == "\\":
            assert re.fullmatch(r"\d{3}", body[i + 1 : i + 4])
            out.append(int(body[i + 1 : i + 4]))
            i += 4
        else:
            assert 0x20 <= ord(body[i]) < 0x7F
            out.append(ord(body[i]))
            i += 1
    return out.decode("utf-8")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain /path?x=1",
        'say "hi"',
        "back\\slash\\",
        "new\nline\r\n\ttab",
        "long ]] bracket ]==] [[ [=[",
        "nul\x00byte \x7f del",
        "utf-8: é ü 日本 🙂",
        '\\" \\\\" "\\',
        "digits after escape: \n123",
    ],
)
def test_lua_string_escapes_everything_that_could_break_out(text: str) -> None:
    literal = lua_string(text)
    assert all(0x20 <= ord(c) < 0x7F for c in literal)
    assert "\n" not in literal and "\r" not in literal and "\x00" not in literal
    assert _lua_unquote(literal) == text


def test_templates_follow_the_generator_rules() -> None:
    assert parse_template("/p/{seq}") == ["/p/", ("seq",)]
    assert parse_template('{"id": {seq}, "u": "{uuid}"}') == [
        '{"id": ',
        ("seq",),
        ', "u": "',
        ("uuid",),
        '"}',
    ]
    assert parse_template("{{seq}} {rand:3-9}") == ["{seq}} ", ("rand", 3, 9)]
    assert parse_template("{ {1 {") == ["{ {1 {"]
    for bad, why in [
        ("{foo}", "unknown template"),
        ("{rand:5-1}", "lower bound"),
        ("{rand:1}", "rand:A-B"),
        ("{rand:-1-2}", "rand:A-B"),
        ("{seq", "unterminated"),
        ("{rand:0-99999999999999999999}", "2\\^53"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_template(bad)


def test_lua_scenario_table() -> None:
    text = lua_scenario(
        [
            RequestSpec(path="/ok"),
            RequestSpec(
                path="/orders/{seq}",
                method="POST",
                body='{"id": {seq}}',
                headers={"content-type": "application/json", "X-Req": "{uuid}"},
                weight=2.5,
                expect_status=201,
            ),
            RequestSpec(path="/empty", method="PUT"),
        ],
        prefix="/api",
    )
    assert text.startswith("-- written by leakgate") and "return { version = 1," in text
    lines = text.splitlines()
    assert 'path = "/api/ok"' in lines[3] and "body" not in lines[3]
    assert "expect_status = 0" in lines[3] and "weight = 1.0" in lines[3]
    assert 'path = {"/api/orders/", {"seq"}}' in lines[4]
    assert '{"Content-Type", "application/json"}, {"X-Req", {{"uuid"}}}' in lines[4]
    assert 'body = {"{\\034id\\034: ", {"seq"}, "}"}' in lines[4]
    assert "weight = 2.5" in lines[4] and "expect_status = 201" in lines[4]
    assert 'body = ""' in lines[5]  # an empty PUT still sends Content-Length: 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (RequestSpec(path="/a b"), "percent-encoded"),
        (RequestSpec(path="/a#b"), "percent-encoded"),
        (RequestSpec(path="x"), "must start with /"),
        (RequestSpec(path="/{nope}"), "path: invalid template"),
        (RequestSpec(path="/", body="{bad}"), "body: invalid template"),
        (RequestSpec(path="/", headers={"Content-Length": "3"}), "set from the body"),
        (RequestSpec(path="/", headers={"bad name": "x"}), "invalid header name"),
        (RequestSpec(path="/", headers={"X": "a\r\nInjected: 1"}), "control byte"),
        (RequestSpec(path="/", method="GE T"), "invalid method"),
        (RequestSpec(path="/", weight=0), "weight"),
        (RequestSpec(path="/", expect_status=42), "expect_status"),
    ],
)
def test_lua_scenario_rejects_what_the_generator_rejects(spec: RequestSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        lua_scenario([spec])
    assert "scenario requests[0]" in str(info.value)


# -- WrkProcess without running it ------------------------------------------------------------


def _scenario(tmp_path: Path, *requests: RequestSpec) -> Path:
    path = tmp_path / "scenario.json"
    write_scenario(requests or (RequestSpec(path="/ok"),), path)
    return path


def _process(tmp_path: Path, binary: str | None = "/usr/bin/wrk", **over: Any) -> WrkProcess:
    scenario = over.pop("scenario", None) or _scenario(tmp_path)
    connections = over.pop("connections", 8)
    plan: dict[str, Any] = {
        "target": "http://127.0.0.1:9",
        "duration": 2.0,
        "rate": 0.0,
        "timeout": 5.0,
        "out_path": tmp_path / "load-measure.json",
        "cpus": [0, 1, 2],
    }
    plan.update(over)
    return WrkProcess(LoadPlan(**plan), binary=binary, scenario=scenario, connections=connections)


def test_command_line_and_scenario_file(tmp_path: Path) -> None:
    proc = _process(tmp_path, duration=2.4, timeout=0.5, target="http://127.0.0.1:9/api/")
    assert proc.threads == 3
    assert proc.argv[:11] == [
        "/usr/bin/wrk",
        "-t",
        "3",
        "-c",
        "8",
        "-d",
        "3s",
        "--timeout",
        "1s",
        "--latency",
        "-s",
    ]
    assert proc.argv[11].endswith("wrk_report.lua") and Path(proc.argv[11]).is_file()
    assert proc.argv[12:17] == ["http://127.0.0.1:9/api/", "--", str(proc.lua_scenario), "3", "8"]
    assert proc.lua_scenario == tmp_path / "scenario.wrk.lua"
    assert 'path = "/api/ok"' in proc.lua_scenario.read_text()
    assert proc.progress == {} and proc.poll() is None
    assert _process(tmp_path, connections=2, cpus=[0, 1, 2, 3]).threads == 2
    assert _process(tmp_path, connections=4, cpus=[5]).threads == 1


def test_rate_must_be_zero(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="closed loop"):
        _process(tmp_path, rate=100.0)


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1:80", "https://127.0.0.1:1", "http://u@127.0.0.1:1", "http://:1"]
)
def test_only_loopback_http_targets(tmp_path: Path, target: str) -> None:
    with pytest.raises(LoadError, match="wrk target"):
        _process(tmp_path, target=target)


def test_bad_scenarios_are_load_errors(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="invalid template"):
        _process(tmp_path, scenario=_scenario(tmp_path, RequestSpec(path="/{what}")))
    bad = tmp_path / "bad.json"
    bad.write_text('{"requests": [{"path": 3}]}')
    with pytest.raises(LoadError, match=r"requests\[0\] is malformed"):
        _process(tmp_path, scenario=bad)
    with pytest.raises(LoadError, match="cannot read"):
        _process(tmp_path, scenario=tmp_path / "missing.json")


def test_wrk_missing_gives_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(LoadError) as info:
        find_wrk()
    assert str(info.value) == INSTALL_HINT
    assert "apt-get install wrk" in INSTALL_HINT and "load.tool: builtin" in INSTALL_HINT
    assert info.value.exit_code == 5
    with pytest.raises(LoadError, match="wrk is not installed"):
        _process(tmp_path, binary=None)


def test_result_reports_wrk_failure_with_stderr_tail(tmp_path: Path) -> None:
    fake = tmp_path / "wrk"
    fake.write_text(
        "#!/bin/sh\necho 'unable to connect to 127.0.0.1:9 Connection refused' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    proc = _process(tmp_path, binary=str(fake))
    try:
        proc.start()
        _wait(proc)
        with pytest.raises(LoadError, match="exited with code 1: unable to connect"):
            proc.result()
    finally:
        proc.stop()


def test_result_without_marker_carries_stderr(tmp_path: Path) -> None:
    fake = tmp_path / "wrk"
    fake.write_text("#!/bin/sh\necho 'Running 1s test'\necho 'script.lua: oops' >&2\n")
    fake.chmod(0o755)
    proc = _process(tmp_path, binary=str(fake))
    try:
        proc.start()
        _wait(proc)
        with pytest.raises(LoadError, match="no LEAKGATE_WRK_JSON") as info:
            proc.result()
        assert "script.lua: oops" in info.value.details
        assert (tmp_path / "load-measure.json").read_text() == "Running 1s test\n"
    finally:
        proc.stop()


def _wait(proc: WrkProcess) -> None:
    deadline = time.monotonic() + proc.deadline
    while proc.poll() is None:
        assert time.monotonic() < deadline, "wrk did not finish in time"
        time.sleep(0.05)


# -- real wrk against a real Go server --------------------------------------------------------

SERVER_GO = r"""
package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

func main() {
	var mu sync.Mutex
	keys := map[string]int{}
	seen := map[string]int{}
	lastBody, lastKey := "", ""
	minSeq := -1 // the smallest number a key starts with
	mux := http.NewServeMux()
	count := func(name string) { mu.Lock(); seen[name]++; mu.Unlock() }
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		count("ok")
		w.Write([]byte("ok"))
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		count("fail")
		w.WriteHeader(http.StatusInternalServerError)
	})
	mux.HandleFunc("/orders/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		lastKey = strings.TrimPrefix(r.URL.Path, "/orders/")
		keys[lastKey]++
		if n, digits := 0, 0; lastKey != "" {
			for _, c := range lastKey {
				if c < '0' || c > '9' {
					break
				}
				n, digits = n*10+int(c-'0'), digits+1
			}
			if digits > 0 && (minSeq < 0 || n < minSeq) {
				minSeq = n
			}
		}
		seen["orders"]++
		if r.Method == http.MethodPost && len(body) > 0 {
			seen["post_bodies"]++
			lastBody = string(body)
		}
		if r.Header.Get("Content-Type") == "application/json" {
			seen["json"]++
		}
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	})
	mux.HandleFunc("/seen", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		dupes := 0
		for _, n := range keys {
			dupes += n - 1
		}
		json.NewEncoder(w).Encode(map[string]any{
			"keys": len(keys), "duplicates": dupes, "counts": seen, "last_body": lastBody,
			"last_key": lastKey, "min_seq": minSeq,
		})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	os.WriteFile(os.Args[1]+".tmp", []byte(ln.Addr().String()), 0o644)
	os.Rename(os.Args[1]+".tmp", os.Args[1])
	http.Serve(ln, mux)
}
"""


@pytest.fixture(scope="module")
def server_bin(go_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wrk-server")
    (root / "go.mod").write_text("module example.com/wrkserver\n\ngo 1.21\n")
    (root / "main.go").write_text(SERVER_GO)
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
    proc = subprocess.run(
        [go_bin, "build", "-o", "server", "."],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "server"


@pytest.fixture
def server(server_bin: Path, tmp_path: Path) -> Iterator[str]:
    """A fresh server (fresh counters) on 127.0.0.1; yields its base URL."""
    addr_file = tmp_path / "server.addr"
    proc = subprocess.Popen(
        [str(server_bin), str(addr_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not addr_file.exists():
            assert proc.poll() is None, "the test server exited"
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.02)
        addr = addr_file.read_text().strip()
        assert addr.startswith("127.0.0.1:")
        yield f"http://{addr}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _seen(base: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(base + "/seen", timeout=5) as resp:
        data = json.loads(resp.read())
    assert isinstance(data, dict)
    return data


def _run(wrk: str, tmp_path: Path, target: str, *requests: RequestSpec, **over: Any) -> LoadResult:
    proc = _process(
        tmp_path,
        binary=wrk,
        target=target,
        scenario=_scenario(tmp_path, *requests),
        cpus=over.pop("cpus", None),
        **over,
    )
    try:
        proc.start()
        _wait(proc)
        return proc.result()
    finally:
        proc.stop()


class TestRealWrk:
    pytestmark: ClassVar[list[pytest.MarkDecorator]] = [pytest.mark.go]

    def test_weighted_scenario_with_templates(self, wrk: str, server: str, tmp_path: Path) -> None:
        r = _run(
            wrk,
            tmp_path,
            server,
            RequestSpec(path="/ok", weight=1),
            RequestSpec(
                path="/orders/{seq}",
                method="POST",
                body='{"id": {seq}, "note": "say \\"hi\\"\\n]]"}',
                headers={"Content-Type": "application/json"},
                weight=3,
            ),
            connections=8,
            duration=2.0,
        )
        seen = _seen(server)
        counts = seen["counts"]
        assert r.requests > 100 and r.ok == r.requests
        assert r.errors["status"] == 0 and r.error_rate == 0
        assert r.latency.count == r.requests and r.latency.percentile(50) is not None
        assert r.achieved_rate > 0 and 1.5 < r.duration_s < 3.5
        # every request was answered and counted by the server (none sent after the end)
        assert abs(counts["ok"] + counts["orders"] - r.requests) <= 8
        assert 2.4 < counts["orders"] / counts["ok"] < 3.75
        assert counts["post_bodies"] == counts["orders"] == counts["json"]
        assert seen["duplicates"] == 0 and seen["keys"] == counts["orders"]
        body = seen["last_body"]
        assert re.fullmatch(r'\{"id": \d+, "note": "say \\"hi\\"\\n\]\]"\}', body), body

    def test_seq_is_unique_across_pinned_threads(
        self, wrk: str, server: str, tmp_path: Path
    ) -> None:
        cpus = sorted(os.sched_getaffinity(0))[:2]
        r = _run(wrk, tmp_path, server, RequestSpec(path="/orders/{seq}"), cpus=cpus, duration=1)
        seen = _seen(server)
        assert r.connections == 8 - 8 % len(cpus)
        assert seen["duplicates"] == 0 and seen["keys"] == seen["counts"]["orders"] > 100

    def test_rand_and_uuid_templates(self, wrk: str, server: str, tmp_path: Path) -> None:
        _run(wrk, tmp_path, server, RequestSpec(path="/orders/{seq}-{rand:5-7}-{uuid}"), duration=1)
        seen = _seen(server)
        hexes = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
        assert re.fullmatch(r"\d+-[5-7]-" + hexes, seen["last_key"]), seen["last_key"]
        assert seen["min_seq"] == 1  # wrk's parse check of request() did not use up {seq} 1

    def test_unicode_and_escapes_reach_the_server_intact(
        self, wrk: str, server: str, tmp_path: Path
    ) -> None:
        body = 'quote " backslash \\ newline \n tab \t ]] [[ ]=] é 日本 {{x}}'
        _run(wrk, tmp_path, server, RequestSpec(path="/orders/1", method="POST", body=body))
        assert _seen(server)["last_body"] == body.replace("{{", "{")

    def test_expected_statuses_are_checked(self, wrk: str, server: str, tmp_path: Path) -> None:
        r = _run(
            wrk,
            tmp_path,
            server,
            RequestSpec(path="/ok"),
            RequestSpec(path="/orders/{seq}", method="POST", body="x", expect_status=201),
            duration=1,
        )
        assert r.errors["status"] == 0 and r.ok == r.requests
        assert set(r.status_codes) == {"200", "201"}
        assert sum(r.status_codes.values()) == r.requests

    def test_unexpected_statuses_are_counted(self, wrk: str, server: str, tmp_path: Path) -> None:
        r = _run(
            wrk,
            tmp_path,
            server,
            RequestSpec(path="/ok"),
            RequestSpec(path="/fail", expect_status=201),
            duration=1,
        )
        assert r.status_codes.get("500", 0) > 0
        assert r.errors["status"] == r.status_codes["500"]
        assert 0.3 < r.errors["status"] / r.requests < 0.7

    def test_only_errors_are_counted_as_errors(self, wrk: str, server: str, tmp_path: Path) -> None:
        r = _run(wrk, tmp_path, server, RequestSpec(path="/fail"), duration=1)
        assert r.requests > 0 and r.errors["status"] == r.requests and r.ok == 0
        r = _run(wrk, tmp_path, server, RequestSpec(path="/ok", expect_status=201), duration=1)
        assert r.requests > 0 and r.errors["status"] == r.requests

    def test_connection_refused_is_a_load_error(self, wrk: str, tmp_path: Path) -> None:
        port = free_port()  # bound and closed again: nothing listens there
        with pytest.raises(LoadError, match=r"(?i)connect") as info:
            _run(wrk, tmp_path, f"http://127.0.0.1:{port}", RequestSpec(path="/ok"), duration=1)
        assert info.value.exit_code == 5

    def test_interrupt_keeps_the_summary_of_the_time_run(
        self, wrk: str, server: str, tmp_path: Path
    ) -> None:
        proc = _process(
            tmp_path, binary=wrk, target=server, scenario=_scenario(tmp_path), duration=3600
        )
        try:
            proc.start()
            time.sleep(1.5)
            began = time.monotonic()
            r = proc.interrupt()
            assert time.monotonic() - began < 3
        finally:
            proc.stop()
        assert r is not None, proc.stderr_tail()
        assert r.tool == "wrk" and r.requests > 0 and r.ok == r.requests
        assert 1.0 < r.duration_s < 5.0  # the time wrk ran, not its -d 3600s
