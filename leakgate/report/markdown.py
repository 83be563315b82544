"""Markdown for GitHub job summaries and GitLab merge-request notes.

A verdict line, the checks, the side-by-side table with ✅ ❌ `~`, where it leaks, the pprof
commands, and the evidence folded away. Service output is untrusted: every cell is escaped
(HTML, pipes, control characters) and blocks are fenced longer than any backtick run inside
them. The whole document stays under GitHub's 1 MiB step-summary limit.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence

from leakgate.model import Check, LeakSite, RunRecord, Verdict
from leakgate.report import Judged, table
from leakgate.units import format_change, format_per_request, format_size

MAX_BYTES = 1024 * 1024 - 4096  # GitHub refuses step summaries over 1 MiB
MAX_EVIDENCE_CHARS = 20_000

STATUS = {"pass": "✅", "fail": "❌", "warn": "⚠️", "no_data": "❔", "error": "💥"}
VERDICT = {
    "pass": "✅ PASS",
    "fail": "❌ FAIL",
    "error": "💥 ERROR",
    "interrupted": "⏸️ INTERRUPTED",
}
COST_ROWS = 5
COMPARISON = {"pass": "✅", "fail": "❌", "inconclusive": "`~`", "too_few": "❔", "no_data": "–"}

# Punctuation that can start Markdown syntax (emphasis, links, images, code, HTML, tables,
# strikethrough, entities); escaped with a backslash, which CommonMark allows before any of it.
_ACTIVE = re.compile(r"([\\`*_\[\]<>|~&!#])")


def render(judged: Judged) -> str:
    verdict, record = judged.verdict, judged.record
    head = [_headline(verdict, record), _checks(verdict.checks)]
    if verdict.comparisons:
        head.append(_comparisons(verdict))
    elif verdict.measured:
        head.append(_measured(verdict))
    head.append(_leak_sites(verdict))
    head.append(_costs(verdict))
    if verdict.notes:
        head.append("\n".join(f"> {line(n)}" for n in verdict.notes))
    tail = [_environment(record)]
    text = _join([*head, _evidence(verdict.checks), *tail])
    if len(text.encode()) > MAX_BYTES:  # the evidence goes first: junit.xml has all of it
        text = _join([*head, EVIDENCE_LEFT_OUT, *tail])
    return _fit(text)


EVIDENCE_LEFT_OUT = "_The evidence is left out to keep this summary under 1 MiB; junit.xml has it._"


def _join(parts: Sequence[str]) -> str:
    return "\n\n".join(p for p in parts if p) + "\n"


def cell(text: object) -> str:
    """Untrusted text as literal text in a table cell or a line: no HTML, links, images,
    emphasis or code spans can come out of it, and no control characters."""
    flat = table.clean(str(text)).replace("\n", " ").replace("\t", " ")
    return _ACTIVE.sub(r"\\\1", flat)


def line(text: object) -> str:
    """cell() for text that starts a line (a quote or list item): no list marker either."""
    escaped = cell(text)
    return "\\" + escaped if escaped[:1] in ("-", "+") else escaped


def code(text: object) -> str:
    """Untrusted text as an inline code span (in a table cell: pipes escaped, as GFM wants)."""
    flat = table.clean(str(text)).replace("\n", " ").replace("|", "\\|")
    ticks = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _headline(verdict: Verdict, record: RunRecord) -> str:
    failed = sum(c.status == "fail" for c in verdict.checks)
    tally = f"{failed} of {len(verdict.checks)} checks failed" if failed else ""
    if not tally and verdict.checks:
        tally = f"{len(verdict.checks)} checks"
    line = f"## leakgate: {VERDICT[verdict.status]}"
    if tally:
        line += f" — {tally}"
    return f"{line}\n\n{cell(table.run_context(record))}"


def _checks(checks: Sequence[Check]) -> str:
    if not checks:
        return ""
    rows = ["| | check | result |", "|---|---|---|"]
    for c in sorted(checks, key=lambda c: c.status not in ("fail", "error")):
        result = cell(c.summary)
        if c.holders:
            result += f"<br>held by: {cell(c.holders[0].description)}"
        if c.leak_sites:
            result += f"<br>top leak site: {_site_cell(c.leak_sites[0])}"
        rows.append(f"| {STATUS[c.status]} | {code(c.name)} | {result} |")
    return "\n".join(rows)


def _comparisons(verdict: Verdict) -> str:
    header = " | ".join(table.comparison_header(verdict)[:-1])
    rows = [
        "### Baseline vs candidate",
        "",
        f"| {header} | |",
        "|---|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    for row in verdict.comparisons:
        cells = table.comparison_cells(row)
        *text, _ = (cell(c) for c in cells)
        rows.append("| " + " | ".join(text) + f" | {COMPARISON[row.verdict]} |")
    return "\n".join(rows)


def _measured(verdict: Verdict) -> str:
    rows = ["### Measured", "", "| metric | median | spread | trials |", "|---|--:|--:|--:|"]
    for row in verdict.measured:
        rows.append("| " + " | ".join(cell(c) for c in table.measured_cells(row)) + " |")
    return "\n".join(rows)


def _costs(verdict: Verdict) -> str:
    """Where the cost goes: each cost profile's top functions, and the pprof commands."""
    costs = verdict.costs
    if not (costs.profiles or costs.notes):
        return ""
    out = ["### Where the cost goes"]
    for profile in costs.profiles:
        compared = profile.compared
        out += ["", f"{table.COST_TITLES[profile.kind]}, by the service's own function:", ""]
        if compared:
            out += ["| function | baseline | candidate | change |", "|---|--:|--:|--:|"]
        else:
            out += ["| function | candidate |", "|---|--:|"]
        for site in profile.sites[:COST_ROWS]:
            name = f"{code(site.function)} {cell(_cost_where(site.file, site.line))}"
            cand = format_per_request(site.candidate, profile.unit)
            if compared:
                base = format_per_request(site.baseline or 0.0, profile.unit)
                change = format_per_request(site.change, profile.unit, signed=True)
                percent = format_change(site.candidate, site.baseline)
                out.append(f"| {name} | {base} | {cand} | {change} {cell(percent)} |")
            else:
                out.append(f"| {name} | {cand} |")
        if profile.commands:
            out += ["", "```sh", *(table.clean(c) for c in profile.commands), "```"]
    if costs.notes:
        out += ["", *(f"> {line(n)}" for n in costs.notes)]
    return "\n".join(out)


def _cost_where(file: str, number: int) -> str:
    return f"({file.rsplit('/', 1)[-1]}:{number})" if file else ""


def _site_cell(site: LeakSite) -> str:
    return cell(site.description)


def _leak_sites(verdict: Verdict) -> str:
    sites = verdict.leak_sites
    failing = {c.name for c in verdict.checks if c.status == "fail" and c.leak_sites}
    if not (sites.heap or sites.goroutines or sites.notes or sites.holders) and not failing:
        return ""
    out = [f"### {table.sites_heading(verdict)[0]}"]
    if sites.holders:
        out += [
            "",
            "Kept alive by (heap dumps at warm-up and drain: the nearest root of what grew):",
            "",
            "| # | holder | growth | objects | most of it | allocated in | trials |",
            "|--:|---|--:|--:|---|---|--:|",
        ]
        out += [
            f"| {i} | {cell(table.holder_name(h))} | +{format_size(h.growth)} | {h.objects:+,} | "
            f"{cell(table.holder_bulk(h))} | {code(h.allocated_at) if h.allocated_at else ''} | "
            f"{h.trials} |"
            for i, h in enumerate(sites.holders, 1)
        ]
    if sites.heap:
        out += [
            "",
            "Live heap grown from warm-up to drain (after forced GCs), by the first frame in "
            "the service's own code:",
            "",
            "| # | site | growth | objects | share | trials |",
            "|--:|---|--:|--:|--:|--:|",
        ]
        out += [
            f"| {i} | {code(s.function)} {cell(_where(s))} | +{format_size(s.growth)} | "
            f"{s.objects or 0:,} | {s.share:.0%} | {s.trials} |"
            for i, s in enumerate(sites.heap, 1)
        ]
        if sites.heap_command:
            out += ["", _command(sites.heap_command)]
    if sites.goroutines:
        out += [
            "",
            "Goroutines added from warm-up to drain, by stack:",
            "",
            "| # | goroutines | blocked in | site | trials |",
            "|--:|--:|---|---|--:|",
        ]
        out += [
            f"| {i} | {int(s.growth):,}{' (leaked)' if s.leaked else ''} | {cell(s.state)} | "
            f"{code(s.function)} {cell(_where(s))} | {s.trials} |"
            for i, s in enumerate(sites.goroutines, 1)
        ]
        top = sites.goroutines[0]
        if top.stack:
            out += ["", "Stack of the largest group:", "", _fence(top.stack)]
        if sites.goroutine_command:
            out += ["", _command(sites.goroutine_command)]
    if sites.trace:
        trace = code(f"go tool trace {sites.trace}")
        out += ["", f"Execution trace while goroutines grew: {trace}"]
    out += [f"- {line(n)}" for n in sites.notes]
    if len(out) == 1:
        return ""
    return "\n".join(out)


def _where(site: LeakSite) -> str:
    where = table.site_location(site)
    return f"({where})" if where else ""


def _command(command: str) -> str:
    return f"Profiles (in the report directory): {code(command)}"


def _evidence(checks: Sequence[Check]) -> str:
    blocks = []
    for c in checks:
        if c.status not in ("fail", "error") or not c.evidence:
            continue
        text = "\n".join(c.evidence)
        if len(text) > MAX_EVIDENCE_CHARS:
            text = text[:MAX_EVIDENCE_CHARS] + "\n… (truncated; see junit.xml)"
        blocks.append(
            f"<details><summary>{html.escape(table.clean(c.name))}: evidence</summary>\n\n"
            f"{_fence(text.splitlines())}\n\n</details>"
        )
    return "\n\n".join(blocks)


def _fence(lines: Iterable[str]) -> str:
    body = table.clean("\n".join(lines))
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{body}\n{fence}"


def _environment(record: RunRecord) -> str:
    env = record.environment
    facts = [
        ("Go", env.go_version),
        ("platform", f"{env.goos}/{env.goarch}" if env.goos else ""),
        ("CPU", env.cpu_model),
        ("GOMAXPROCS", str(env.gomaxprocs or "")),
        ("revision", env.git_revision[:12] + (" (dirty)" if env.git_dirty else "")),
        ("base", record.base_revision[:12]),
        ("leakgate", env.leakgate_version),
    ]
    shown = [f"{k} {cell(v)}" for k, v in facts if v]
    return "<sub>" + " · ".join(shown) + "</sub>" if shown else ""


def _fit(text: str) -> str:
    data = text.encode()
    if len(data) <= MAX_BYTES:
        return text
    cut = data[:MAX_BYTES].decode("utf-8", "ignore")
    return cut.rsplit("\n", 1)[0] + "\n\n… (truncated to fit the 1 MiB summary limit)\n"
