"""Formatting every reporter shares: the comparison table's cells and the verdict's tally."""

from __future__ import annotations

import math
import re

from leakgate import costtext
from leakgate.analysis import offered_rate
from leakgate.metrics import LEAK_METRICS, sites_explaining
from leakgate.model import ComparisonRow, Holder, LeakSite, RunRecord, Verdict
from leakgate.retention import TIMERS
from leakgate.units import format_metric, format_size

# Check statuses in words, for text and HTML alike (Markdown shows symbols).
CHECK_LABELS = {
    "pass": "PASS",
    "fail": "FAIL",
    "warn": "WARN",
    "no_data": "NO DATA",
    "error": "ERROR",
}

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?")
# C0 controls but \t and \n, DEL, C1 controls, and lone surrogates (unencodable as UTF-8).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def clean(text: str) -> str:
    """Service output made safe to show anywhere: no terminal escape sequences, no control
    characters but \\t and \\n (others become U+FFFD)."""
    text = _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub("\ufffd", text)


def site_location(site: LeakSite) -> str:
    """ "leaks.go:209 ← main.handle": where a site is, and who called it."""
    where = f"{site.file.rsplit('/', 1)[-1]}:{site.line}" if site.file else ""
    if site.caller:
        where += f" ← {site.caller}"
    return where.strip()


COMPARISON_HEADER = ("metric", "baseline", "candidate", "change", "spread", "p", "n", "")
# A paired compare: the change's interval instead of each side's spread, and the pairs.
PAIRED_HEADER = ("metric", "baseline", "candidate", "change", "95% interval", "p", "pairs", "")
MEASURED_HEADER = ("metric", "median", "spread", "trials")

_TALLY_WORDS = (
    ("fail", "failed"),
    ("error", "could not run"),
    ("no_data", "no data"),
    ("warn", "warnings"),
    ("pass", "passed"),
)


def comparison_cells(row: ComparisonRow) -> tuple[str, ...]:
    """One row of the side-by-side table, in the order of COMPARISON_HEADER (PAIRED_HEADER
    for a row of a paired compare)."""
    if row.pairs is not None:
        middle = (format_interval(row.interval_low, row.interval_high), str(row.pairs))
    else:
        spread = " / ".join(format_spread(v) for v in (row.baseline_spread, row.candidate_spread))
        middle = (spread, f"{row.n_baseline}/{row.n_candidate}")
    return (
        row.label + ("" if row.gated else " (info)"),
        format_metric(row.baseline_median, row.unit),
        format_metric(row.candidate_median, row.unit),
        "n/a" if row.change is None else f"{row.change:+.1%}",
        middle[0],
        "" if row.p_value is None else f"{row.p_value:.3f}",
        middle[1],
        row.symbol,
    )


def comparison_header(verdict: Verdict) -> tuple[str, ...]:
    paired = any(row.pairs is not None for row in verdict.comparisons)
    return PAIRED_HEADER if paired else COMPARISON_HEADER


def comparison_rows(verdict: Verdict) -> list[tuple[str, ...]]:
    """The side-by-side table as strings: the header, then one row per compared metric."""
    return [comparison_header(verdict), *(comparison_cells(row) for row in verdict.comparisons)]


def format_interval(low: float | None, high: float | None) -> str:
    """A change's interval: "-1.2% … +3.4%"; "–" where it is not known (too few pairs)."""
    if low is None or high is None:
        return "–"
    return f"{low:+.1%} … {high:+.1%}"


def format_spread(spread: float | None) -> str:
    """A coefficient of variation over trials: "±0.4%"; "–" where it is not known."""
    return "–" if spread is None or not math.isfinite(spread) else f"±{spread:.1%}"


def measured_cells(row: ComparisonRow) -> tuple[str, ...]:
    """One row of the table of a run without a baseline, in the order of MEASURED_HEADER."""
    return (
        row.label,
        format_metric(row.candidate_median, row.unit),
        format_spread(row.candidate_spread),
        str(row.n_candidate),
    )


def measured_rows(verdict: Verdict) -> list[tuple[str, ...]]:
    """The measured table as strings: the header, then one row per metric with a value."""
    return [MEASURED_HEADER, *(measured_cells(row) for row in verdict.measured)]


def tally(verdict: Verdict) -> str:
    """How the checks came out, worst first: "1 failed, 3 passed"; empty without checks."""
    counts = {s: sum(c.status == s for c in verdict.checks) for s, _ in _TALLY_WORDS}
    return ", ".join(f"{counts[s]} {word}" for s, word in _TALLY_WORDS if counts[s])


def headline(verdict: Verdict) -> str:
    """The verdict in a few words, with the tally: "FAIL: 1 failed, 3 passed"."""
    counts = tally(verdict)
    return _HEADLINES[verdict.status] + (f": {counts}" if counts else "")


_HEADLINES = {
    "pass": "PASS",
    "fail": "FAIL",
    "interrupted": "INTERRUPTED (partial results)",
    "error": "ERROR: could not judge everything",
}


def sites_heading(verdict: Verdict) -> tuple[str, bool]:
    """The leak-site section's title, and whether a leak was found: "Where it leaks" when a
    leak check (or a comparison of a leak metric) failed. Otherwise the sites are only growth
    between the checkpoints: "(no leak found)" when every leak check that ran passed, no claim
    when one could not judge (no data, ~, an interrupted or broken run)."""
    if any(c.status == "fail" and sites_explaining(c.name) is not None for c in verdict.checks):
        return "Where it leaks", True
    sites = verdict.leak_sites
    grown = [w for w, found in (("Heap", sites.heap), ("goroutine", sites.goroutines)) if found]
    title = f"{' and '.join(grown).capitalize() if grown else 'Heap'} growth"
    leak_checks = [c.status for c in verdict.checks if c.name in LEAK_METRICS]
    if leak_checks and all(status == "pass" for status in leak_checks):
        title += " (no leak found)"
    return title, False


def holder_name(h: Holder) -> str:
    """ "main.auditLog (package variable)", "main.worker (stacks of 120 goroutines)"."""
    if h.kind == "variable" and h.name == TIMERS:
        return f"{h.name} (the runtime's timers)"
    if h.kind == "variable":
        return f"{h.name} (package variable)"
    if h.kind == "goroutines":
        return f"{h.name} (stacks of {h.goroutines:,} goroutine{'s' * (h.goroutines != 1)})"
    return f"{h.name} ({h.kind})"


def holder_bulk(h: Holder) -> str:
    """What most of a holder's growth is made of: "1,204 objects of 32 KiB"."""
    if not (h.object_count and h.object_size):
        return ""
    plural = "s" * (h.object_count != 1)
    return f"{h.object_count:,} object{plural} of {format_size(h.object_size)}"


def run_context(record: RunRecord) -> str:
    """ "5 trials at 4,667 req/s": what the verdict rests on."""
    trials = len(record.trials)
    rate = offered_rate(record.trials)
    if record.design == "paired":
        pairs = len({b.pair for b in record.blocks if b.side == "candidate"})
        context = f"{pairs} pair{'s' if pairs != 1 else ''} of blocks, one process a side"
        return context + (f" at {rate:,.0f} req/s" if rate else "")
    context = f"{trials} trial{'s' if trials != 1 else ''}"
    sides = {t.side for t in record.trials}
    if len(sides) > 1 and trials % len(sides) == 0:
        context = f"{trials // len(sides)} trials a side"
    if rate:
        context += f" at {rate:,.0f} req/s"
    return context


COST_TITLES = {
    "cpu": "CPU per request",
    "alloc": "Allocations per request",
    "heap": "Live-heap growth per request",
}


def cost_lines(verdict: Verdict, top: int = 1) -> list[str]:
    """Where the cost goes, in plain lines: the `top` functions of each cost profile (those
    that grew most against the baseline, or the costliest without one), then the `go tool
    pprof` commands that open the same profiles (run in the report directory)."""
    lines: list[str] = []
    commands: list[str] = []
    for profile in verdict.costs.profiles:
        compared = profile.compared
        sites = costtext.grown(profile, top=top) if compared else list(profile.sites[:top])
        title = COST_TITLES.get(profile.kind, profile.kind)
        if not sites:
            what = "nothing grew" if compared else "no function stood out"
            lines.append(f"{title}: {what}")
        lines.extend(f"{title}: {clean(costtext.describe(s, profile))}" for s in sites)
        commands.extend(clean(c) for c in profile.commands)
    if commands:
        lines.append("profiles (in the report directory):")
        lines.extend(f"  {c}" for c in commands)
    return lines
