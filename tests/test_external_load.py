"""External load results (load.tool: external): vegeta JSON lines and merged hosts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from leakgate.errors import LoadError
from leakgate.load import LoadPlan
from leakgate.load.external import ExternalProcess, read_results

from .conftest import SAMPLE
from .factories import LOADGEN_RESULT
from .gate import run_gate, write_config

FAKE_VEGETA = Path(__file__).parent / "data" / "fake_vegeta.py"


def vegeta_line(second: float, latency_ms: float, code: int = 200, error: str = "") -> str:
    stamp = f"2026-11-27T08:00:{second:09.6f}123Z"  # nanosecond digits, as vegeta writes
    return json.dumps(
        {
            "attack": "",
            "seq": 0,
            "code": code,
            "timestamp": stamp,
            "latency": int(latency_ms * 1e6),
            "bytes_out": 0,
            "bytes_in": 2,
            "error": error,
            "body": "e30=",
        }
    )


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vegeta_results_become_one_load_result(tmp_path: Path) -> None:
    lines = [vegeta_line(i / 100, 2.0 if i % 10 else 20.0) for i in range(1000)]
    lines += [vegeta_line(5.0, 1.0, 503), vegeta_line(5.5, 0.0, 0, "dial tcp: connection refused")]
    lines.append(vegeta_line(6.0, 10_000.0, 0, "Get ...: context deadline exceeded"))
    r = read_results([write(tmp_path / "a.json", lines)])
    assert r.tool == "vegeta" and r.requests == 1003 and r.ok == 1000
    assert r.errors == {"status": 1, "connect": 1, "timeout": 1}
    assert r.status_codes == {"200": 1000, "503": 1}
    assert r.latency.count == 1000  # errors are not folded into latency
    assert r.latency.percentile(50) == pytest.approx(0.002, rel=0.02)
    assert r.latency.percentile(95) == pytest.approx(0.020, rel=0.02)
    assert r.duration_s == pytest.approx(16.0, abs=0.1)  # the timeout's latency ends it
    assert len(r.seconds) == 10 and r.seconds[0].requests == 100
    assert r.seconds[5].requests == 102 and r.seconds[5].errors == 2
    assert "connection refused" in r.first_error


def test_results_of_several_hosts_are_merged(tmp_path: Path) -> None:
    a = write(tmp_path / "host-a.json", [vegeta_line(i / 10, 1.0) for i in range(50)])
    b = write(tmp_path / "host-b.json", [vegeta_line(i / 10, 3.0) for i in range(50)])
    merged = read_results([a, b])
    assert merged.requests == 100 and merged.latency.count == 100
    assert merged.latency.percentile(25) == pytest.approx(0.001, rel=0.02)
    assert merged.latency.percentile(75) == pytest.approx(0.003, rel=0.02)
    assert merged.achieved_rate == pytest.approx(100 / 4.903, rel=0.01)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"missing.json: no load results there"),
        ("<html>", r"bad.json: not vegeta JSON results or a leakgate/wrk result"),
        (vegeta_line(0, 1) + '\n{"code": 200}\n', r"bad.json:2: not a vegeta result"),
        (vegeta_line(0, 1).replace('"latency": 1000000', '"latency": "1ms"') + "\n", "bad.json:1"),
        ("\n", r"not vegeta JSON results"),
    ],
)
def test_bad_results_name_the_file_and_line(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content is not None:
        path.write_text(content)
    with pytest.raises(LoadError, match=message):
        read_results([path])


@pytest.mark.go
@pytest.mark.slow
def test_check_judges_with_an_external_tools_results(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    results = tmp_path / "results.json"
    config = write_config(
        tmp_path / "leakgate.yml",
        warmup="1s",
        duration="4s",
        extra=("  # (load section continues)\n"),
    )
    text = config.read_text().replace(
        "  rate: auto\n",
        "  rate: auto\n  tool: external\n"
        f"  command: [{sys.executable!r}, {str(FAKE_VEGETA)!r}, '{{target}}', "
        "'/products/{seq}', '{duration}', '{results}']\n",
    )
    config.write_text(text)
    run = run_gate(
        [
            str(SAMPLE),
            "--config",
            str(config),
            "--env",
            marker,
            "--env",
            "LEAK=globalmap",
            "--load-results",
            str(results),
        ],
        tmp_path / "out",
    )
    assert run.returncode == 1, run.output
    record = json.loads((run.out / "run.json").read_text())
    measure = record["trials"][0]["load"]
    assert measure["tool"] == "vegeta" and measure["requests"] > 100
    assert "retained_per_request" in run.junit_failures()


def test_timestamps_with_offsets_and_short_fractions(tmp_path: Path) -> None:
    def line(stamp: str) -> str:
        return json.dumps({"code": 200, "timestamp": stamp, "latency": 1_000_000, "error": ""})

    same = ["2026-11-27T08:00:00.5Z", "2026-11-27T10:00:00.5+02:00", "2026-11-27T03:00:00.50-05:00"]
    r = read_results([write(tmp_path / "tz.json", [line(s) for s in same])])
    assert r.duration_s == pytest.approx(0.001, rel=1e-3)  # one instant three times, 1 ms each
    assert len(r.seconds) == 1


def test_a_non_string_error_is_a_load_error(tmp_path: Path) -> None:
    bad = json.dumps({"code": 0, "timestamp": "2026-11-27T08:00:00Z", "latency": 1, "error": 5})
    with pytest.raises(LoadError, match=r"bad.json:1: not a vegeta result: error must be"):
        read_results([write(tmp_path / "bad.json", [bad])])


def test_vegeta_and_leakgate_results_merge(tmp_path: Path) -> None:
    (tmp_path / "gen.json").write_bytes(LOADGEN_RESULT)
    veg = write(tmp_path / "veg.json", [vegeta_line(i / 10, 1.0) for i in range(50)])
    merged = read_results([veg, tmp_path / "gen.json"])
    assert merged.requests == 150 and merged.tool == "builtin+vegeta"
    assert merged.latency.count == 150


def test_the_previous_runs_results_are_removed_before_the_command(tmp_path: Path) -> None:
    stale = write(tmp_path / "results.json", [vegeta_line(0, 1.0)])
    plan = LoadPlan(
        target="http://127.0.0.1:1",
        duration=1,
        rate=0,
        timeout=1,
        out_path=tmp_path / "cmd.json",  # the command's output goes to cmd.log
        cpus=None,
    )
    proc = ExternalProcess(plan, command=["true"], results=[stale])
    proc.start()
    while proc.poll() is None:
        time.sleep(0.01)
    with pytest.raises(LoadError, match=r"results.json: no load results there"):
        proc.result()
