from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from leakgate.model import (
    Check,
    ComparisonRow,
    Environment,
    Holder,
    HolderPath,
    LeakSite,
    LeakSites,
    RunRecord,
    SecondStat,
    Series,
    ServiceStatus,
    Trial,
    Verdict,
)
from leakgate.report import Judged, charts, html, table

from .factories import heap_series, histogram, trial
from .gate import screenshot

HOSTILE = "<script>alert(1)</script> \x1b[31mred\x1b[0m \x07bell"
HEAP_COMMAND = "go tool pprof -diff_base trial-1/heap-warmup.pb.gz trial-1/heap-drain.pb.gz"


def _trial(side: str, index: int, *, leak: bool) -> Trial:
    base = trial(
        index=index,
        series=heap_series(10e6, 300_000 if leak else 0.0, seed=index),
        p_ms=2.4 if leak else 2.0,
    )
    assert base.load is not None
    slow = 1.2 if leak else 1.0
    seconds = tuple(
        SecondStat(t=t, requests=5000, errors=0, p50=1e-3 * slow, p95=2e-3 * slow, p99=3e-3 * slow)
        for t in range(20)
    )
    growth, rss_growth = (3, 2e5) if leak else (0, 0.0)
    series = {
        "heap_live": base.series["heap_live"],
        "goroutines": Series(
            "goroutines", "goroutines", tuple((float(t), 12.0 + growth * t) for t in range(20))
        ),
        "rss": Series("rss", "bytes", tuple((float(t), 30e6 + rss_growth * t) for t in range(20))),
    }
    return dataclasses.replace(
        base,
        side=side,
        load=dataclasses.replace(base.load, seconds=seconds),
        series=series,
        offered_rate=5000.0,
    )


def compare_record(trials_per_side: int = 5) -> RunRecord:
    trials = [
        _trial(side, i, leak=side == "candidate")
        for i in range(trials_per_side)
        for side in ("baseline", "candidate")
    ]
    died = dataclasses.replace(
        trials[-1], service=ServiceStatus(pid=9, died=True, exit_code=2, log_tail=HOSTILE)
    )
    return RunRecord(
        created="2026-05-09T07:00:00Z",
        package="/src/sample-go-service",
        command="compare",
        trials=(*trials[:-1], died),
        base_revision="d5bdb05",
        environment=Environment(go_version="go1.26.8", gomaxprocs=2, hostname="ci<b>"),
    )


def compare_verdict() -> Verdict:
    p99 = ComparisonRow(
        metric="p99_latency",
        label="p99 latency",
        unit="s",
        baseline_median=2.1e-3,
        candidate_median=2.5e-3,
        change=0.19,
        p_value=0.004,
        n_baseline=5,
        n_candidate=5,
        verdict="fail",
        symbol="✗",
        gated=True,
        reason="19% slower, significant",
    )
    throughput = dataclasses.replace(
        p99,
        metric="throughput",
        label="throughput",
        unit="req/s",
        baseline_median=5000,
        candidate_median=4990,
        change=0.002,
        p_value=0.4,
        verdict="pass",
        symbol="✓",
        gated=False,
        reason="",
    )
    heap_site = LeakSite(
        kind="heap",
        function="main.(*cache).remember",
        file="/src/cache.go",
        line=42,
        growth=6.4e6,
        objects=1200,
        share=0.8,
        trials=5,
        stack=("main.(*cache).remember (/src/cache.go:42)",),
    )
    goroutine_site = LeakSite(
        kind="goroutine",
        function="main.watch",
        file="/src/watch.go",
        line=17,
        growth=60,
        state="chan send",
        trials=5,
        leaked=True,
    )
    sites = LeakSites(
        heap=(heap_site,),
        goroutines=(goroutine_site,),
        heap_command=HEAP_COMMAND,
        goroutine_command="go tool pprof -diff_base a.pb.gz b.pb.gz",
        notes=("trial 3: heap profile unreadable",),
    )
    checks = (
        Check("service_alive", "pass", "the service stayed up"),
        Check("retained_per_request", "fail", "+64.0 B/request retained", evidence=(HOSTILE, "b")),
    )
    return Verdict("fail", checks=checks, comparisons=(p99, throughput), leak_sites=sites)


def test_report_is_one_self_contained_escaped_document() -> None:
    page = html.render(Judged(compare_verdict(), compare_record()))
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<html") == 1 and page.rstrip().endswith("</html>")
    assert page.count("<svg") == 5
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "ci&lt;b&gt;" in page
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "url(http" not in page
    # failing checks first
    assert page.index("retained_per_request") < page.index("service_alive")
    for text in (
        "main.(*cache).remember",
        "/src/cache.go:42",
        "main.watch",
        "chan send",
        "leaked",
        HEAP_COMMAND,
        "heap profile unreadable",
        "p99 latency",
        "throughput (info)",
        "2.5 ms",
        "+19.0%",
        "✗",
        "d5bdb05",
        "go1.26.8",
    ):
        assert html.esc(text) in page, text
    assert "no data" not in page


def test_missing_data_is_a_note_not_a_chart() -> None:
    bare = Trial(index=0, side="candidate")
    record = RunRecord(trials=(bare,))
    page = html.render(Judged(Verdict("error"), record))
    assert "<svg" not in page
    assert page.count("no data:") == 5
    assert "no trial sampled the live heap" in page


def test_check_baseline_trials_come_from_the_baseline_record() -> None:
    record = compare_record(2)
    candidate = RunRecord(trials=tuple(t for t in record.trials if t.side == "candidate"))
    stored = RunRecord(trials=tuple(t for t in record.trials if t.side == "baseline"))
    sides = html.trial_sides(candidate, stored)
    assert [len(sides["baseline"]), len(sides["candidate"])] == [2, 2]
    page = html.render(Judged(compare_verdict(), candidate, stored))
    assert "baseline (2 trials)" in page


def test_output_is_deterministic() -> None:
    record, verdict = compare_record(2), compare_verdict()
    assert html.render(Judged(verdict, record)) == html.render(Judged(verdict, record))


def test_clean_strips_terminal_sequences() -> None:
    assert table.clean("a\x1b[31mb\x1b[0m\r\nc\x00d\te") == "ab\nc\ufffdd\te"


def test_downsample_keeps_the_envelope() -> None:
    points = [(float(t), 1000.0 if t == 5001 else float(t % 7)) for t in range(20_000)]
    small = charts.downsample(points)
    assert len(small) <= charts.MAX_POINTS
    assert max(v for _, v in small) == 1000.0
    assert small == sorted(small)


def test_cdf_runs_from_zero_to_one() -> None:
    record = compare_record(1)
    points = charts.cdf(t.load.latency for t in record.trials if t.load)
    assert points[0][1] == 0.0 and points[-1][1] == 1.0
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    assert 0.9 < points[0][0] < 2.5  # ms: the factory's latencies lie in 0.5..1.05 x p_ms


def test_the_latency_distribution_reaches_the_slowest_request() -> None:
    """A percentile plot: x is 1/(1-q), so p99 and p99.9 get as much room as p50 and p90, and
    the curve ends at the slowest of the pooled requests (the old logit chart stopped near
    p97)."""
    record = compare_record(1)
    hists = [t.load.latency for t in record.trials if t.load]
    total = sum(h.count for h in hists)
    assert total >= 1000
    curve = charts.percentile_curve(hists)
    assert curve[0][0] == 1.0 and curve[-1][0] == total
    assert [x for x, _ in curve] == sorted(x for x, _ in curve)
    slowest = max(h.max_ns for h in hists) / 1e6
    assert curve[-1][1] >= slowest  # the upper edge of the slowest request's bucket
    sides = {"candidate": list(record.trials)}
    (chart,) = [c for c in charts.charts(sides) if c.key == "latency_distribution"]
    assert chart.svg is not None
    for tick in ("p50", "p90", "p99", "p99.9"):
        assert f">{tick}<" in chart.svg, tick
    # exactly 1,000 requests reach p99.9 too (1/(1 - 0.999) is a hair over 1000 in floats)
    t = record.trials[0]
    assert t.load is not None
    thousand = histogram([1.0 + i / 1000 for i in range(1000)])
    t = dataclasses.replace(t, load=dataclasses.replace(t.load, latency=thousand))
    (chart,) = [c for c in charts.charts({"candidate": [t]}) if c.key == "latency_distribution"]
    assert chart.svg is not None and ">p99.9<" in chart.svg


@pytest.mark.slow
def test_chromium_draws_the_report(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(html.render(Judged(compare_verdict(), compare_record())), encoding="utf-8")
    image = screenshot(chromium, page, 1280, 3000)
    assert image.shape[:2] == (3000, 1280)
    colours = {tuple(p) for p in (image[::4, ::4] * 255).astype(int).reshape(-1, 3).tolist()}
    assert len(colours) > 50, "the page looks blank"
    assert image.std() > 0.05
    lower = image[1500:]
    assert (lower < 0.9).any(axis=2).mean() > 0.005, "nothing drawn in the lower half"
    # both side colours of the charts were painted
    for hex_colour in charts.COLOURS.values():
        rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        assert (abs(image - rgb).max(axis=2) < 0.06).sum() > 100, hex_colour


def test_a_chart_that_fails_to_draw_costs_only_that_chart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> charts.Chart:
        raise ValueError("odd data")

    monkeypatch.setattr(charts, "_latency_distribution", broken)
    page = html.render(Judged(compare_verdict(), compare_record()))
    assert "Latency distribution: chart not drawn: ValueError: odd data" in page
    assert page.count("<svg") >= 4


def _tree_holder() -> Holder:
    """main.cache: +10 MiB through a 2 KiB table, 9 MiB of it in 1 KiB entries, a shrunk part
    the tree leaves out (+10 - 9.5 = 0.5 MiB: "other paths")."""
    mib = 1024 * 1024
    return Holder(
        kind="variable",
        name="main.cache",
        growth=10 * mib,
        objects=9216,
        paths=(
            HolderPath((2048,), 10 * mib, 0),
            HolderPath((2048, 1024), 9 * mib, 9216),
        ),
    )


def test_the_retention_tree_names_each_step_and_what_is_left_out() -> None:
    page = html._holder_tree(_tree_holder())
    assert page.count("<li") == 4  # holder, table, entries, other paths
    assert "main.cache (package variable)</strong> +10.0 MiB" in page
    assert "2.0 KiB objects: +10.0 MiB" in page
    assert "1.0 KiB objects × +9,216: +9.0 MiB" in page
    assert "other paths: +1.0 MiB" in page
    widths = [int(w) for w in re.findall(r"width:(\d+)px", page)]
    assert widths == [240, 216, 24]  # bars by bytes, the holder's growth the widest


def test_chromium_draws_the_retention_tree_with_bars_to_scale(
    chromium: str, tmp_path: Path
) -> None:
    page = tmp_path / "tree.html"
    page.write_text(
        f"<html><head><style>{html._CSS}</style></head><body>"
        f"{html._holder_tree(_tree_holder())}</body></html>",
        encoding="utf-8",
    )
    image = screenshot(chromium, page, 800, 300)
    bar = abs(image - [0.868, 0.393, 0.426]).max(axis=2) < 0.08  # #cf222e at opacity .7
    runs = sorted({int(row.sum()) for row in bar if row.any()})
    # three bars, each as wide as its bytes: 240, 216 and 24 px (at most a pixel of blending)
    for width in (240, 216, 24):
        assert any(abs(r - width) <= 2 for r in runs), (width, runs)
    assert all(any(abs(r - w) <= 2 for w in (240, 216, 24)) for r in runs), runs
    # the bars are indented by depth: the entries' bar starts right of the table's
    starts = [int(row.argmax()) for row in bar if row.any()]
    assert max(starts) - min(starts) >= 15
