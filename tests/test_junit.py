from __future__ import annotations

from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped

from leakgate.config import Config
from leakgate.judge import judge
from leakgate.model import Environment, RunRecord, Trial
from leakgate.report import Judged, RunError, console, junit

from .factories import heap_series, trial


def _parse(xml: str, tmp_path: Path) -> JUnitXml:
    path = tmp_path / "junit.xml"
    path.write_text(xml)
    return JUnitXml.fromfile(str(path))


def test_one_testcase_per_check_with_failure_details(tmp_path: Path) -> None:
    leaky = trial(heap_after=16_400_000, series=heap_series(10e6, 320_000))
    record = RunRecord(
        package="/src/sample-go-service",
        trials=(leaky,),
        environment=Environment(go_version="go1.26.8", gomaxprocs=1),
    )
    verdict = judge(record, Config())
    xml = junit.render(Judged(verdict, record))
    suites = list(_parse(xml, tmp_path))
    assert len(suites) == 1
    suite = suites[0]
    cases = {case.name: case for case in suite}
    assert set(cases) == {c.name for c in verdict.checks}
    failing = cases["retained_per_request"]
    results = failing.result
    assert len(results) == 1 and isinstance(results[0], Failure)
    assert "+64.0 B/request" in (results[0].message or "")
    assert "limit +16.0 B/request" in (results[0].message or "")
    assert "go tool pprof" in (results[0].text or "")
    assert cases["goroutine_growth"].is_passed
    props = {p.name: p.value for p in suite.properties()}
    assert props["go_version"] == "go1.26.8"
    assert suite.failures == 1


def test_build_error_is_a_junit_error(tmp_path: Path) -> None:
    record = RunRecord(package="svc", error="build failed")
    verdict = judge(record, Config())
    error = RunError(
        "build failed",
        "./main.go:3:1: syntax error",
        "./main.go:3:1: syntax error: non-declaration",
    )
    xml = junit.render(Judged(verdict, record, error=error))
    suite = next(iter(_parse(xml, tmp_path)))
    (case,) = list(suite)
    assert isinstance(case.result[0], Error)
    assert "syntax error" in (case.result[0].message or "")


def test_no_data_is_skipped_not_passed(tmp_path: Path) -> None:
    record = RunRecord(package="svc", trials=(Trial(index=0),))
    suite = next(iter(_parse(junit.render(Judged(judge(record, Config()), record)), tmp_path)))
    cases = {c.name: c for c in suite}
    assert isinstance(cases["retained_per_request"].result[0], Skipped)


def test_console_is_short_and_names_failures() -> None:
    leaky = trial(goroutines_after=5000)
    record = RunRecord(trials=(leaky,))
    text = console.render(
        Judged(judge(record, Config()), record, written=(Path(".leakgate/junit.xml"),))
    )
    first = text.splitlines()[0]
    assert first.startswith("leakgate: FAIL: 1 failed, 3 passed")
    assert "FAIL    goroutine_growth" in text
    assert "quiet goroutines: 12 after warm-up -> 5000 after drain" in text
    assert text.rstrip().endswith("reports: .leakgate/junit.xml")
