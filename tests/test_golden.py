"""Reporters against checked-in golden files, rendered from one fixed compare RunRecord.

On a mismatch the new output is written beside the golden file as `*.got`; when the change is
intended, review the diff and move the `.got` file over the golden one.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from leakgate.config import Config
from leakgate.judge import judge
from leakgate.model import LeakSite, LeakSites, RunRecord
from leakgate.report import Judged, console, html, junit, markdown

from .factories import SITES, fixed_record, fixed_verdict, trial

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    golden = GOLDEN / name
    got = golden.with_name(golden.name + ".got")
    if not golden.exists() or golden.read_text() != text:
        got.write_text(text)
        pytest.fail(f"{name} differs from the golden file; new output in {got}")
    got.unlink(missing_ok=True)


def test_console_golden() -> None:
    verdict, record = fixed_verdict()
    assert verdict.status == "fail"
    reports = [Path(".leakgate/junit.xml"), Path(".leakgate/summary.md")]
    assert_golden("console.txt", console.render(Judged(verdict, record, written=tuple(reports))))


def test_markdown_golden() -> None:
    verdict, record = fixed_verdict()
    assert_golden("summary.md", markdown.render(Judged(verdict, record)))


def test_junit_golden_and_what_a_junit_reader_sees(tmp_path: Path) -> None:
    verdict, record = fixed_verdict()
    text = junit.render(Judged(verdict, record))
    assert_golden("junit.xml", text)
    path = tmp_path / "junit.xml"
    path.write_text(text)
    suites = list(JUnitXml.fromfile(str(path)))
    assert len(suites) == 1
    cases = {case.name: case for case in suites[0]}
    heap = cases["retained_per_request_vs_baseline"]
    failure = heap.result[0]
    assert isinstance(failure, Failure)
    # metric, value, baseline, change, p-value, threshold, then the top leak sites
    for part in ("retained bytes per request", "→", "%", "p=", "+10%", "1) +133.5 MiB"):
        assert part in failure.message, failure.message
    props = {p.name: p.value for p in suites[0].properties()}
    assert props["go_version"] == "go1.26.8" and props["gomaxprocs"] == "1"
    assert "main.(*auditLog).record (audit.go:42)" in (heap.system_out or "")


def _hostile_record(log_tail: str) -> RunRecord:
    record = fixed_record()
    dead = dataclasses.replace(
        record.trials[1],
        service=dataclasses.replace(
            record.trials[1].service, died=True, exit_code=2, phase="load", log_tail=log_tail
        ),
    )
    return dataclasses.replace(record, trials=(record.trials[0], dead, *record.trials[2:]))


HOSTILE = "<script>alert(1)</script> | pipe \x1b[31mred\x1b[0m ```fence``` [x](http://e/) \x85\n"


def test_service_output_cannot_inject_markup_into_markdown_junit_or_the_console() -> None:
    record = _hostile_record(HOSTILE * 3 + "::stop-commands::token\n")
    verdict = judge(record, Config(), sites=SITES)
    text = markdown.render(Judged(verdict, record))
    assert "\x1b" not in text and "\x85" not in text
    # Inside a fenced block (fenced longer than any backtick run in it) markup is shown as
    # text; everywhere else it must be escaped.
    outside = re.sub(r"(`{3,})text\n.*?\n\1(?!`)", "", text, flags=re.S)
    assert "<script>" not in outside and "```fence```" not in outside
    assert "](http" not in outside
    assert "````text\n" in text
    xml = junit.render(Judged(verdict, record))
    assert "\x1b" not in xml and "<script>" not in xml
    terminal = console.render(Judged(verdict, record))
    assert "\x1b" not in terminal
    assert not any(line.lstrip().startswith("::") for line in terminal.splitlines())


def test_markdown_over_the_size_limit_drops_the_evidence_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = _hostile_record("a long log line\n" * 2000)
    verdict = judge(record, Config(), sites=SITES)
    full = markdown.render(Judged(verdict, record))
    monkeypatch.setattr(markdown, "MAX_BYTES", len(full.encode()) - 1)
    text = markdown.render(Judged(verdict, record))
    assert len(text.encode()) < len(full.encode())
    assert markdown.EVIDENCE_LEFT_OUT in text and "<details>" not in text
    assert "### Where it leaks" in text and "| metric | baseline |" in text


def test_a_passing_run_shows_growth_not_where_it_leaks() -> None:
    """A clean run's profiles still differ a little between the checkpoints: the section shows
    that growth, titled as growth, never as "Where it leaks"."""
    growth = LeakSite(
        kind="heap",
        function="main.(*server).createOrder",
        file="orders.go",
        line=88,
        growth=64 * 1024,
        objects=12,
        share=1.0,
        trials=1,
        description="+64.0 KiB in 12 objects retained at main.(*server).createOrder (orders.go:88)",
    )
    record = RunRecord(package="/src/orders", command="check", trials=(trial(),))
    verdict = judge(record, Config(), sites=LeakSites(heap=(growth,)))
    assert verdict.status == "pass"
    judged = Judged(verdict, record)
    summary = markdown.render(judged)
    assert "Where it leaks" not in summary
    assert "### Heap growth (no leak found)" in summary and "createOrder" in summary
    page = html.render(judged)
    assert "<h2>Heap growth (no leak found)</h2>" in page and "Leak sites" not in page
    assert "leak site" not in console.render(judged)
    # a run whose leak check could not judge claims neither
    short = RunRecord(package="/src/orders", command="check", trials=(trial(requests=50),))
    unjudged = Judged(judge(short, Config(), sites=LeakSites(heap=(growth,))), short)
    assert unjudged.verdict.status == "error"
    text = markdown.render(unjudged)
    assert "### Heap growth\n" in text and "no leak found" not in text and "Where it" not in text
    assert "<h2>Heap growth</h2>" in html.render(unjudged)
    # the same site behind a failing leak check is where it leaks
    leaky = RunRecord(package="/src/orders", command="check", trials=(trial(goroutines_after=99),))
    failing = Judged(judge(leaky, Config(), sites=LeakSites(heap=(growth,))), leaky)
    assert failing.verdict.status == "fail"
    assert "### Where it leaks" in markdown.render(failing)
    assert "<h2>Leak sites</h2>" in html.render(failing)
