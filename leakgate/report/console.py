"""The terminal: short. Verdict, one line per check, evidence for the failing ones, report paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from leakgate.model import RunRecord, Verdict
from leakgate.units import format_metric

LABELS = {"pass": "PASS", "fail": "FAIL", "warn": "WARN", "no_data": "NO DATA", "error": "ERROR"}


def render(verdict: Verdict, record: RunRecord, reports: Sequence[Path] = ()) -> str:
    lines: list[str] = []
    width = max((len(c.name) for c in verdict.checks), default=10)
    for check in verdict.checks:
        lines.append(f"  {LABELS[check.status]:7} {check.name:{width}}  {check.summary}")
        if check.status in ("fail", "error"):
            for item in check.evidence:
                for sub in item.splitlines():
                    lines.append(f"  {'':7} {'':{width}}  {sub}")
    if verdict.comparisons:
        lines.append("")
        lines.extend(comparison_table(verdict))
        lines.append("")
    lines.extend(f"  note: {n}" for n in verdict.notes)
    counts = {s: sum(c.status == s for c in verdict.checks) for s in LABELS}
    tally = ", ".join(
        f"{counts[s]} {word}"
        for s, word in (
            ("fail", "failed"),
            ("error", "could not run"),
            ("no_data", "no data"),
            ("warn", "warnings"),
            ("pass", "passed"),
        )
        if counts[s]
    )
    headline = {
        "pass": "PASS",
        "fail": "FAIL",
        "interrupted": "INTERRUPTED (partial results)",
        "error": "ERROR: could not judge everything",
    }[verdict.status] + (f": {tally}" if tally else "")
    trials = len(record.trials)
    rate = next((t.offered_rate for t in record.trials if t.offered_rate), None)
    context = f"{trials} trial{'s' if trials != 1 else ''}"
    if rate:
        context += f" at {rate:,.0f} req/s"
    lines.insert(0, f"leakgate: {headline} ({context})")
    if reports:
        lines.append("reports: " + ", ".join(str(p) for p in reports))
    return "\n".join(lines) + "\n"


def comparison_table(verdict: Verdict) -> list[str]:
    """The side-by-side table: metric, baseline, candidate, change, p, n, verdict symbol."""
    header = ("metric", "baseline", "candidate", "change", "p", "n", "")
    rows = [header]
    for row in verdict.comparisons:
        rows.append(
            (
                row.label + ("" if row.gated else " (info)"),
                format_metric(row.baseline_median, row.unit),
                format_metric(row.candidate_median, row.unit),
                "n/a" if row.change is None else f"{row.change:+.1%}",
                "" if row.p_value is None else f"{row.p_value:.3f}",
                f"{row.n_baseline}/{row.n_candidate}",
                row.symbol,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
