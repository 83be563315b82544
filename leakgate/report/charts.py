"""The HTML report's charts: matplotlib figures rendered to inline SVG strings.

No pyplot: each chart is a bare `Figure`, so there is no backend to select, no figure manager to
close, and nothing global left behind (style settings live in an `rc_context`). Output is
deterministic: a fixed hash salt per chart and no date in the SVG.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from leakgate.model import Histogram, Trial

Points = Sequence[tuple[float, float]]
LineStyle = Literal["-", "--", ":"]

COLOURS = {"baseline": "#3b6fb6", "candidate": "#d9622b"}
MAX_POINTS = 600
MIB = 1024.0 * 1024.0

# No date, no creator link, no Dublin Core block: the SVG is byte-stable and names no URL.
_NO_METADATA: dict[str, str | None] = {"Date": None, "Creator": None, "Format": None, "Type": None}
_GENERATED_ID = re.compile(r' id="([A-Za-z][\w.]*_\d+)"')


@dataclass(frozen=True, slots=True)
class Chart:
    """One chart of the report: its SVG, or the one-line reason it has none."""

    key: str
    title: str
    svg: str | None
    note: str = ""


@dataclass(frozen=True, slots=True)
class _SeriesChart:
    key: str
    title: str
    ylabel: str
    scale: float
    what: str  # for the "no data" note


_SERIES_CHARTS = (
    _SeriesChart("heap_live", "Live heap over time", "MiB", 1 / MIB, "the live heap"),
    _SeriesChart("goroutines", "Goroutines over time", "goroutines", 1.0, "goroutines"),
    _SeriesChart("rss", "RSS over time", "MiB", 1 / MIB, "RSS"),
)
_PERCENTILES = ("p50", "p95", "p99")
_PERCENTILE_STYLES: tuple[LineStyle, ...] = ("-", "--", ":")
_PERCENTILE_TICKS = (0, 50, 90, 99, 99.9, 99.99, 99.999)


def charts(sides: Mapping[str, Sequence[Trial]]) -> list[Chart]:
    """Every chart for the trials of each side ("baseline", "candidate"), in report order."""
    # The settings sit in the call so type checkers match them against rcParams' names.
    with matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # text stays text: a fraction of the size of glyph paths
            "font.size": 9,
            "font.family": "sans-serif",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e4e4e4",
            "grid.linewidth": 0.6,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "legend.frameon": False,
            "figure.facecolor": "white",
        }
    ):
        makers: list[tuple[str, str, Callable[[], Chart]]] = [
            (spec.key, spec.title, partial(_series_chart, spec, sides)) for spec in _SERIES_CHARTS
        ]
        makers.append(("latency", "Latency per second", partial(_latency_over_time, sides)))
        makers.append(
            ("distribution", "Latency distribution", partial(_latency_distribution, sides))
        )
        return [_safely(key, title, make) for key, title, make in makers]


def _safely(key: str, title: str, make: Callable[[], Chart]) -> Chart:
    """One chart; a plotting failure costs that chart (a note says why), not the report."""
    try:
        return make()
    except Exception as e:  # matplotlib on odd data: the rest of the report still renders
        return Chart(key, title, None, f"chart not drawn: {type(e).__name__}: {e}")


def downsample(points: Points, limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most `limit` points: the lowest and highest of each bin, in time order, so spikes
    and the envelope survive where plain striding would drop them."""
    clean = [(t, v) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    if len(clean) <= limit:
        return clean
    bins = max(1, limit // 2)
    size = len(clean) / bins
    out: list[tuple[float, float]] = []
    for b in range(bins):
        chunk = clean[int(b * size) : int((b + 1) * size)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        out.extend(sorted({low, high}))
    return out


def cdf(histograms: Iterable[Histogram]) -> list[tuple[float, float]]:
    """Pooled histograms as (latency in ms, share of requests at or below it) points.

    Bucket i holds values in [growth^i, growth^(i+1)) ns, so each point sits at a bucket's
    upper edge, starting from the lower edge of the first bucket at share 0.
    """
    return _pooled(histograms)[0]


def percentile_curve(histograms: Iterable[Histogram]) -> list[tuple[float, float]]:
    """Pooled histograms as (1/(1-q), latency in ms) points: the percentile plot.

    On a log axis of 1/(1-q) every nine gets the same room (p90 at 10, p99 at 100, p99.9 at
    1000), so the tail a release gate cares about is as visible as the median. The slowest
    requests (q = 1, which the axis cannot place) sit at n, where the last of n requests is.
    """
    points, total = _pooled(histograms)
    return [(1.0 / (1.0 - q) if q < 1.0 else float(max(total, 1)), ms) for ms, q in points]


def _pooled(histograms: Iterable[Histogram]) -> tuple[list[tuple[float, float]], int]:
    """cdf's points, and the count of the requests they place."""
    counts: dict[tuple[float, int], int] = {}
    for h in histograms:
        if not (math.isfinite(h.growth) and h.growth > 1.0):
            continue  # no bucket of a damaged histogram can be placed
        for index, n in h.buckets:
            if n > 0:
                counts[(h.growth, index)] = counts.get((h.growth, index), 0) + n
    # (upper edge, lower edge, count) in ms, in order of the upper edge
    edges = sorted(
        (high, low, n)
        for (g, i), n in counts.items()
        if math.isfinite(high := _edge(g, i + 1)) and math.isfinite(low := _edge(g, i))
    )
    if not edges:
        return [], 0
    total = sum(n for _, _, n in edges)
    points = [(min(low for _, low, _ in edges), 0.0)]
    seen = 0
    for high, _low, n in edges:
        seen += n
        points.append((high, seen / total))
    return points, total


def _edge(growth: float, index: int) -> float:
    """growth^index ns in ms; infinite where it overflows (a bucket index no latency has)."""
    try:
        return float(growth**index / 1e6)
    except OverflowError:
        return math.inf


# -- the charts --------------------------------------------------------------------------------


def _series_chart(spec: _SeriesChart, sides: Mapping[str, Sequence[Trial]]) -> Chart:
    def points(trial: Trial) -> Points:
        series = trial.series.get(spec.key)
        return [(t, v * spec.scale) for t, v in series.points] if series else []

    lines = _lines(sides, points)
    if not lines:
        return Chart(spec.key, spec.title, None, f"no data: no trial sampled {spec.what}")
    fig = _figure()
    ax = fig.add_subplot()
    _plot(ax, lines)
    _linear_ticks(ax)
    ax.set_title(spec.title, loc="left")
    ax.set_xlabel("seconds into the measure window")
    ax.set_ylabel(spec.ylabel)
    _legend(ax, _counts(lines))
    return Chart(spec.key, spec.title, _svg(fig, spec.key))


def _latency_over_time(sides: Mapping[str, Sequence[Trial]]) -> Chart:
    key, title = "latency_seconds", "Latency per second"
    per_percentile = []
    for name in _PERCENTILES:

        def points(trial: Trial, name: str = name) -> Points:
            seconds = trial.load.seconds if trial.load else ()
            values = ((s.t, getattr(s, name)) for s in seconds)
            return [(float(t), v * 1e3) for t, v in values if v is not None]

        per_percentile.append((name, _lines(sides, points)))
    if not any(lines for _, lines in per_percentile):
        return Chart(key, title, None, "no data: no trial reported per-second latencies")
    # One axes, percentiles told apart by line style: every extra axes costs a full set of
    # ticks, the most expensive part of a matplotlib figure.
    fig = _figure(height=3.0)
    ax = fig.add_subplot()
    counts: dict[str, int] = {}
    handles = []
    for (name, lines), style in zip(per_percentile, _PERCENTILE_STYLES, strict=True):
        _plot(ax, lines, linestyle=style)
        for side, n in _counts(lines).items():
            counts[side] = max(counts.get(side, 0), n)
        handles.append(Line2D([], [], color="#444444", linestyle=style, label=name))
    ax.set_yscale("log")
    _log_ticks(ax.yaxis)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_title(f"{title} (p50, p95, p99 of each trial)", loc="left")
    ax.set_xlabel("seconds into the measure window")
    ax.set_ylabel("ms (log scale)")
    _legend(ax, counts, extra=handles)
    return Chart(key, title, _svg(fig, key))


def _latency_distribution(sides: Mapping[str, Sequence[Trial]]) -> Chart:
    key, title = "latency_distribution", "Latency distribution"
    curves: dict[str, list[Points]] = {}
    pooled: dict[str, int] = {}
    widest = 1.0
    for side, trials in sides.items():
        hists = [t.load.latency for t in trials if t.load and t.load.latency.count > 0]
        points = downsample(percentile_curve(hists))
        # One request has no distribution: the whole curve sits at x = 1.
        if any(x > 1.0 for x, _ in points):
            curves[side], pooled[side] = [points], len(hists)
            widest = max(widest, max(x for x, _ in points))
    if not curves:
        return Chart(key, title, None, "no data: no trial recorded a latency histogram")
    fig = _figure()
    ax = fig.add_subplot()
    _plot(ax, curves, linewidth=1.5, alpha=1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # 1/(1 - 99.9/100) is 1000.0000000001: a little slack keeps p99.9 at 1,000 requests.
    at = [1 / (1 - q / 100) for q in _PERCENTILE_TICKS]
    ticks = [x for x in at if x <= widest * (1 + 1e-9)]
    ax.set_xlim(1.0, max(widest, *ticks))
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"p{(1 - 1 / x) * 100:.6g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    _log_ticks(ax.yaxis)
    ax.set_title(f"{title} (each side's trials pooled; the right end is the slowest)", loc="left")
    ax.set_xlabel("percentile (log scale of 1/(1-q): each nine gets the same room)")
    ax.set_ylabel("latency (ms, log scale)")
    _legend(ax, pooled)
    return Chart(key, title, _svg(fig, key))


# -- drawing helpers ---------------------------------------------------------------------------


def _figure(height: float = 2.6) -> Figure:
    # Fixed margins: a layout engine would measure every label in an extra draw pass.
    fig = Figure(figsize=(10.0, height))
    fig.subplots_adjust(left=0.07, right=0.80, bottom=0.17, top=0.88)
    return fig


def _lines(
    sides: Mapping[str, Sequence[Trial]], points: Callable[[Trial], Points]
) -> dict[str, list[Points]]:
    """Each side's lines, one per trial that has data; sides without any are left out."""
    lines: dict[str, list[Points]] = {}
    for side, trials in sides.items():
        drawn: list[Points] = [pts for pts in (downsample(points(t)) for t in trials) if pts]
        if drawn:
            lines[side] = drawn
    return lines


def _plot(
    ax: Axes,
    lines: Mapping[str, Sequence[Points]],
    linewidth: float = 1.1,
    alpha: float = 0.75,
    linestyle: LineStyle = "-",
) -> None:
    for side, side_lines in lines.items():
        for pts in side_lines:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, color=_colour(side), linewidth=linewidth, alpha=alpha, ls=linestyle)


def _counts(lines: Mapping[str, Sequence[Points]]) -> dict[str, int]:
    return {side: len(side_lines) for side, side_lines in lines.items()}


def _legend(ax: Axes, trials: Mapping[str, int], extra: Sequence[Line2D] = ()) -> None:
    """One entry per side, counting the trials drawn, then any `extra` entries."""
    handles = []
    for side, n in trials.items():
        label = f"{side} ({n} trial{'s' if n != 1 else ''})"
        handles.append(Line2D([], [], color=_colour(side), linewidth=2, label=label))
    # Beside the axes, in the margin kept for it: never over the lines.
    ax.legend(handles=[*handles, *extra], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


def _linear_ticks(ax: Axes) -> None:
    # Few ticks: each one is several artists to lay out and draw.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))


def _log_ticks(axis: Axis) -> None:
    """1, 2, 3, 5, 10, ... in plain text: the default log ticks are mathtext labels on many minor
    ticks, whose parsing and layout cost more than drawing the rest of a chart."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    axis.set_minor_locator(NullLocator())


def _colour(side: str) -> str:
    return COLOURS.get(side, "#555555")


def _svg(fig: Figure, key: str) -> str:
    buf = io.StringIO()
    # A salt per chart: clip-path ids are hashes, and charts share one HTML document.
    with matplotlib.rc_context({"svg.hashsalt": f"leakgate-{key}"}):
        fig.savefig(buf, format="svg", metadata=_NO_METADATA)
    text = buf.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG is inline
    return _GENERATED_ID.sub(lambda m: f' id="{key}-{m.group(1)}"', text)
