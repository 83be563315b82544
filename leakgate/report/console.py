"""The terminal: short. Verdict, one line per check, the top leak site and a few lines of evidence
for the failing ones (all of it for errors: a compiler message must be read whole), the side-by-side
table, report paths. The full evidence is in junit.xml, summary.md and report.html."""

from __future__ import annotations

from leakgate.report import Judged, table

LABELS = table.CHECK_LABELS
FAIL_EVIDENCE_LINES = 4


def render(judged: Judged) -> str:
    verdict, record, reports = judged.verdict, judged.record, judged.written
    lines: list[str] = []
    width = max((len(c.name) for c in verdict.checks), default=10)
    for check in verdict.checks:
        lines.append(f"  {LABELS[check.status]:7} {check.name:{width}}  {check.summary}")
        indent = f"  {'':7} {'':{width}}  "
        if check.holders:
            lines.append(f"{indent}held by: {_safe(check.holders[0].description)}")
        if check.leak_sites:
            lines.append(f"{indent}top leak site: {_safe(check.leak_sites[0].description)}")
        if check.status in ("fail", "error"):
            evidence = [_safe(sub) for item in check.evidence for sub in item.splitlines()]
            if check.status == "fail" and len(evidence) > FAIL_EVIDENCE_LINES:
                more = len(evidence) - FAIL_EVIDENCE_LINES
                evidence = [
                    *evidence[:FAIL_EVIDENCE_LINES],
                    f"... {more} more lines in the reports",
                ]
            lines.extend(indent + sub for sub in evidence)
    if verdict.comparisons:
        lines.append("")
        lines.extend(aligned(table.comparison_rows(verdict)))
        lines.append("")
    elif verdict.measured:
        lines.append("")
        lines.extend(aligned(table.measured_rows(verdict)))
        lines.append("")
    if verdict.costs.profiles:
        lines.extend(f"  {line}" for line in table.cost_lines(verdict))
    lines.extend(f"  note: {n}" for n in verdict.notes)
    headline = table.headline(verdict)
    lines.insert(0, f"leakgate: {headline} ({table.run_context(record)})")
    if reports:
        lines.append("reports: " + ", ".join(str(p) for p in reports))
    return "\n".join(lines) + "\n"


def _safe(line: str) -> str:
    """A line of service output for a CI log: no terminal sequences, and never a runner
    command (GitHub runs `::command::` lines it finds in the log, after leading spaces)."""
    line = table.clean(line)
    return "| " + line if line.lstrip().startswith("::") else line


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """A table for a terminal: the first column left-aligned, the figures right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in rows
    ]
