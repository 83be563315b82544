"""One self-contained HTML page: verdict, checks, comparison, charts, leak sites, environment.

Nothing is fetched when the page is opened: CSS is inline, charts are inline SVG, and there is
no script. Every string that came from outside (service logs, evidence, paths) is escaped and
stripped of terminal control sequences.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from leakgate.analysis import baseline_trials, offered_rate
from leakgate.model import (
    Check,
    CostProfile,
    CostSite,
    Environment,
    Holder,
    LeakSite,
    RunRecord,
    Trial,
    Verdict,
)
from leakgate.report import Judged, flame, table
from leakgate.units import (
    format_change,
    format_duration,
    format_metric,
    format_per_request,
    format_percent,
    format_size,
)

if TYPE_CHECKING:
    from leakgate.report.charts import Chart

SIDES = ("baseline", "candidate")
_CHECK_ORDER = {"fail": 0, "error": 1, "warn": 2, "no_data": 3, "pass": 4}
_STATUS_LABELS = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "interrupted": "INTERRUPTED"}
_SYMBOL_CLASSES = {"pass": "pass", "fail": "fail", "inconclusive": "warn"}


_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
  background: #fff; max-width: 1120px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.6em; margin: 0 0 .2em; } h2 { font-size: 1.25em; margin: 1.6em 0 .5em;
  border-bottom: 1px solid #d0d7de; padding-bottom: .2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f8fa; padding: .5em .7em; margin: .3em 0; white-space: pre-wrap;
  word-break: break-word; font: 12.5px/1.4 ui-monospace, Menlo, Consolas, monospace; }
code { font: 12.5px ui-monospace, Menlo, Consolas, monospace; }
.badge { display: inline-block; padding: .1em .5em; border-radius: 4px; color: #fff;
  font-weight: 700; }
.badge.pass { background: #1a7f37; } .badge.fail { background: #cf222e; }
.badge.error, .badge.interrupted, .badge.warn { background: #9a6700; }
.badge.no_data { background: #6e7781; }
.sym.pass { color: #1a7f37; } .sym.fail { color: #cf222e; } .sym.warn { color: #9a6700; }
.muted, .nodata { color: #57606a; } .nodata { font-style: italic; }
figure { margin: .5em 0 1.2em; } figure svg { max-width: 100%; height: auto; }
details summary { cursor: pointer; color: #57606a; }
ul.tree { list-style: none; margin: .2em 0 1em; padding-left: 0; }
ul.tree ul { list-style: none; padding-left: 1.4em; margin: 0; border-left: 1px dotted #d0d7de; }
ul.tree li { margin: .15em 0; white-space: nowrap; }
ul.tree .bar { display: inline-block; height: .8em; background: #cf222e; opacity: .7;
  vertical-align: middle; margin-right: .5em; min-width: 2px; }
"""


def render(judged: Judged) -> str:
    """The whole report as one HTML document."""
    verdict, record, baseline = judged.verdict, judged.record, judged.baseline
    # Imported here: matplotlib takes a noticeable time to load, and only this report needs it.
    from leakgate.report import charts

    sides = trial_sides(record, baseline)
    title = f"leakgate {_STATUS_LABELS[verdict.status]}: {record.package or 'service'}"
    body = [
        _header(verdict, record, sides),
        _checks(verdict.checks),
        _comparisons(verdict),
        _measured(verdict),
        _charts(charts.charts(sides)),
        _leak_sites(verdict),
        _costs(verdict),
        _trials(sides),
        _run(record, baseline, sides),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


def trial_sides(record: RunRecord, baseline: RunRecord | None) -> dict[str, list[Trial]]:
    """The trials to draw, by side: a compare record holds both; `check --baseline` keeps the
    baseline's in its own record. Sides without trials are left out."""
    sides = {side: [t for t in record.trials if t.side == side] for side in SIDES}
    if not sides["baseline"] and baseline is not None:
        sides["baseline"] = baseline_trials(baseline)
    return {side: trials for side, trials in sides.items() if trials}


def esc(value: object) -> str:
    return html.escape(table.clean(str(value)))


# -- sections ----------------------------------------------------------------------------------


def _header(verdict: Verdict, record: RunRecord, sides: Mapping[str, Sequence[Trial]]) -> str:
    counts = ", ".join(f"{len(trials)} {side}" for side, trials in sides.items())
    context = [f"{counts or 'no'} trial{'s' if sum(map(len, sides.values())) != 1 else ''}"]
    rate = offered_rate(record.trials)
    if record.design == "paired":
        context = [table.run_context(record)]
    elif rate:
        context.append(f"at {rate:,.0f} req/s")
    if record.package:
        context.append(f"of {record.package}")
    parts = [
        f'<h1><span class="badge {verdict.status}">{_STATUS_LABELS[verdict.status]}</span> '
        "leakgate</h1>",
        f"<p><strong>{esc(table.headline(verdict))}</strong> ({esc(' '.join(context))})</p>",
    ]
    if verdict.notes:
        parts.append(_list(verdict.notes))
    if record.error:
        parts.append(f"<h3>Error</h3>\n<pre>{esc(record.error)}</pre>")
    return "\n".join(parts)


def _checks(checks: Sequence[Check]) -> str:
    if not checks:
        return '<h2>Checks</h2>\n<p class="nodata">no check was run</p>'
    rows = []
    for check in sorted(checks, key=lambda c: _CHECK_ORDER.get(c.status, 9)):
        evidence = "".join(f"<pre>{esc(item)}</pre>" for item in check.evidence)
        if evidence and check.status not in ("fail", "error"):
            evidence = f"<details><summary>evidence</summary>{evidence}</details>"
        rows.append(
            f'<tr><td><span class="badge {check.status}">{table.CHECK_LABELS[check.status]}</span>'
            f"</td><td><code>{esc(check.name)}</code></td>"
            f"<td>{esc(check.summary)}{evidence}</td></tr>"
        )
    return _table("<h2>Checks</h2>", ("status", "check", "summary and evidence"), rows)


def _measured(verdict: Verdict) -> str:
    if verdict.comparisons or not verdict.measured:
        return ""
    header, *cells = table.measured_rows(verdict)
    rows = [
        f"<tr><td>{esc(label)}</td>"
        + "".join(f'<td class="num">{esc(v)}</td>' for v in rest)
        + "</tr>"
        for label, *rest in cells
    ]
    return _table("<h2>Measured</h2>", header, rows)


def _comparisons(verdict: Verdict) -> str:
    if not verdict.comparisons:
        return ""
    header, *cells = table.comparison_rows(verdict)
    rows = []
    for row, values in zip(verdict.comparisons, cells, strict=True):
        *figures, symbol = values
        tds = [f"<td>{esc(figures[0])}</td>"]
        tds.extend(f'<td class="num">{esc(v)}</td>' for v in figures[1:])
        kind = _SYMBOL_CLASSES.get(row.verdict, "")
        tds.append(f'<td class="sym {kind}" title="{esc(row.verdict)}">{esc(symbol)}</td>')
        tds.append(f'<td class="muted">{esc(row.reason)}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return _table("<h2>Baseline against candidate</h2>", (*header, "why"), rows)


def _charts(charts: Sequence[Chart]) -> str:
    parts = ["<h2>Charts</h2>"]
    for chart in charts:
        if chart.svg is None:
            parts.append(f'<p class="nodata">{esc(chart.title)}: {esc(chart.note)}</p>')
        else:
            # matplotlib's own SVG output: its text is escaped by matplotlib, none comes from
            # the run, so it is embedded as is.
            parts.append(f'<figure id="chart-{esc(chart.key)}">{chart.svg}</figure>')
    return "\n".join(parts)


def _step(prefix: tuple[int, ...], size: int) -> tuple[int, ...]:
    return (*prefix, size)


def _holder_tree(h: Holder) -> str:
    """A holder's retention tree: root -> ... -> the objects that grew, each node with the net
    bytes added in its subtree; what the kept nodes leave of a node's figure (paths that shrank,
    a map's old tables, small ones) is one "other paths" line, so the children add up."""
    tree: dict[int, Any] = {}
    totals = {p.sizes: (p.growth, p.objects, p.own) for p in h.paths}
    for path in h.paths:
        node = tree
        for size in path.sizes:
            node = node.setdefault(size, {})
    whole = max(1, h.growth, *(p.growth for p in h.paths))

    def line(label: str, grown: int) -> str:
        width = max(2, round(240 * max(grown, 0) / whole))
        return f'<span class="bar" style="width:{width}px"></span>{esc(label)}'

    def items(node: dict[int, Any], prefix: tuple[int, ...], grown: int, own: int) -> str:
        out = []
        ranked = sorted(node.items(), key=lambda kv: -totals[_step(prefix, kv[0])][0])
        for size, below in ranked:
            here = _step(prefix, size)
            sub, objects, mine = totals[here]
            count = f" × {objects:+,}" if objects else ""
            added = format_metric(sub, "bytes", signed=True)
            label = f"{format_size(size)} objects{count}: {added}"
            child = items(below, here, sub, mine)
            out.append(f"<li>{line(label, sub)}{f'<ul>{child}</ul>' if child else ''}</li>")
        rest = grown - own - sum(totals[_step(prefix, size)][0] for size in node)
        if out and abs(rest) * 100 >= whole:
            rest_label = f"other paths: {format_metric(rest, 'bytes', signed=True)}"
            out.append(f'<li class="muted">{line(rest_label, rest)}</li>')
        return "".join(out)

    head = f"<strong>{esc(table.holder_name(h))}</strong> +{esc(format_size(h.growth))}"
    return f'<ul class="tree"><li>{head}<ul>{items(tree, (), h.growth, 0)}</ul></li></ul>'


def _leak_sites(verdict: Verdict) -> str:
    sites = verdict.leak_sites
    title, leak_found = table.sites_heading(verdict)
    parts = [f"<h2>{'Leak sites' if leak_found else esc(title)}</h2>"]
    if sites.holders:
        rows = [
            _row(
                esc(table.holder_name(h)),
                Num(format_metric(h.growth, "bytes", signed=True)),
                Num(f"{h.objects:+,}"),
                esc(table.holder_bulk(h)),
                f"<code>{esc(h.allocated_at)}</code>" if h.allocated_at else "",
                Num(str(h.trials)),
            )
            for h in sites.holders
        ]
        header = ("holder", "growth", "objects", "most of it", "allocated in", "trials")
        parts.append(_table("<h3>Kept alive by</h3>", header, rows))
        trees = [_holder_tree(h) for h in sites.holders if h.paths]
        if trees:
            parts.append(
                '<h3>Retention paths</h3>\n<p class="muted">From each holder down to what grew, '
                "by object size (the dump has no types; a chain of same-size objects is one "
                "step), bars sized by the bytes added below them.</p>\n" + "\n".join(trees)
            )
    if sites.heap:
        rows = [
            _row(
                _function(s),
                _where(s),
                Num(format_metric(s.growth, "bytes", signed=True)),
                Num("" if s.objects is None else f"{s.objects:+,}"),
                Num(f"{s.share:.0%}"),
                Num(str(s.trials)),
            )
            for s in sites.heap
        ]
        heap_header = ("function", "file:line", "growth", "objects", "share", "trials")
        parts.append(_table("<h3>Live heap</h3>", heap_header, rows))
    if sites.goroutines:
        rows = [
            _row(
                Num(f"{s.growth:+,.0f}"),
                esc(s.state),
                _function(s),
                _where(s),
                "leaked" if s.leaked else "",
            )
            for s in sites.goroutines
        ]
        goroutine_header = ("count", "state", "function", "file:line", "leaked")
        parts.append(_table("<h3>Goroutines</h3>", goroutine_header, rows))
    for label, command in (("heap", sites.heap_command), ("goroutines", sites.goroutine_command)):
        if command:
            parts.append(f"<p>Explore the {label} growth:</p>\n<pre>{esc(command)}</pre>")
    if sites.trace:
        parts.append(
            f"<p>Execution trace while goroutines grew: <code>{esc(sites.trace)}</code> "
            f"(<code>go tool trace {esc(sites.trace)}</code>)</p>"
        )
    if sites.notes:
        parts.append(_list(sites.notes))
    if len(parts) == 1:
        parts.append('<p class="nodata">no leak sites: no profiles were compared</p>')
    return "\n".join(parts)


def _costs(verdict: Verdict) -> str:
    """Where CPU and memory go per request: only in runs that profiled them, so reports of
    runs without cost profiles read as they always did."""
    costs = verdict.costs
    if not costs.profiles and not costs.notes:
        return ""
    parts = ["<h2>Where the cost goes</h2>"]
    parts.extend(_cost_profile(profile) for profile in costs.profiles)
    if costs.notes:
        parts.append(_list(costs.notes))
    return "\n".join(parts)


def _cost_profile(profile: CostProfile) -> str:
    title = table.COST_TITLES.get(profile.kind, profile.kind)
    compared = flame.has_baseline(profile)
    alloc = profile.kind == "alloc"
    sides = ["baseline/request", "candidate/request"] if compared else ["candidate/request"]
    # Each side's objects beside its bytes: a narrower table than two "... objects" columns.
    header = ["function", "file:line"]
    header += [h for side in sides for h in ((side, "objects") if alloc else (side,))]
    header += ["change", "change\u00a0%"] if compared else []
    header += ["bytes/object"] if alloc else []
    rows = [
        _row(
            f"<code>{esc(s.function)}</code>",
            f'<code title="{esc(s.file)}">{esc(s.file.rsplit("/", 1)[-1])}:{s.line}</code>'
            if s.file
            else "",
            *_cost_cells(profile, s, compared),
        )
        for s in profile.sites
    ]
    if profile.candidate_total is not None:
        total = CostSite("", "", 0, profile.candidate_total, profile.baseline_total)
        rows.append(_row("<strong>total</strong>", "", *_cost_cells(profile, total, compared)))
    parts = [_table(f"<h3>{esc(title)}</h3>", header, rows)]
    picture = flame.svg(profile, title=f"{title}, by stack")
    if picture is None:
        parts.append('<p class="nodata">no stacks to draw a flame graph from</p>')
    else:
        # flame.svg escapes every name and figure it writes.
        parts.append(
            f'<figure id="flame-{esc(profile.kind)}">{picture}'
            f'<figcaption class="muted">{esc(_flame_caption(title, compared))}</figcaption>'
            "</figure>"
        )
    if profile.commands:
        commands = "\n".join(profile.commands)
        parts.append(f"<p>Open the same profiles:</p>\n<pre>{esc(commands)}</pre>")
    return "\n".join(parts)


def _cost_cells(profile: CostProfile, site: CostSite, compared: bool) -> list[Num]:
    """A site's figures in the order of the header _cost_profile writes."""
    alloc = profile.kind == "alloc"

    def amount(value: float | None, signed: bool = False) -> Num:
        # No break between a figure and its unit, whatever room the columns get.
        text = "" if value is None else format_per_request(value, profile.unit, signed=signed)
        return Num(text.replace(" ", "\u00a0"))

    def side(value: float | None, objects: float | None) -> list[Num]:
        return [amount(value), Num(_objects(objects))] if alloc else [amount(value)]

    cells = side(site.baseline, site.baseline_objects) if compared else []
    cells += side(site.candidate, site.candidate_objects)
    if compared:
        change = None if site.baseline is None else site.change
        cells += [
            amount(change, signed=True),
            Num(format_change(site.candidate, site.baseline)),
        ]
    if alloc:
        objects, size = site.candidate_objects, ""
        if objects and math.isfinite(objects) and objects > 0:
            size = format_size(site.candidate / objects).replace(" ", "\u00a0")
        cells.append(Num(size))
    return cells


def _objects(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _flame_caption(title: str, compared: bool) -> str:
    what = title if title[:2].isupper() else title[0].lower() + title[1:]  # "CPU", "Allocations"
    if not compared:
        return (
            f"Flame graph of the candidate's {what}: roots at the bottom, callees above, width "
            "the cost per request. No baseline was profiled: colours only tell functions apart. "
            "Hover a frame for its figures."
        )
    return (
        f"Differential flame graph of {what}: roots at the bottom, callees above. A frame is as "
        "wide as the larger of its candidate and baseline cost, so code that shrank or went away "
        "still shows; the deeper the colour, the larger the change. Hover a frame for its figures."
    )


def _trials(sides: Mapping[str, Sequence[Trial]]) -> str:
    if not sides:
        return ""
    rows, logs = [], []
    for side, trials in sides.items():
        for t in trials:
            load = t.load
            served = load.requests if load else None
            rows.append(
                _row(
                    esc(side),
                    Num(str(t.index + 1)),
                    Num("" if served is None else f"{served:,}"),
                    Num(_optional(load.achieved_rate if load else None, _rate)),
                    Num(_optional(load.error_rate if load else None, format_percent)),
                    Num(_optional(load.latency.percentile(50) if load else None, format_duration)),
                    Num(_optional(load.latency.percentile(99) if load else None, format_duration)),
                    _service(t),
                    "<br>".join(esc(n) for n in t.notes),
                )
            )
            if t.service.log_tail:
                logs.append(
                    f"<details{' open' if t.service.died else ''}><summary>service log, "
                    f"{esc(side)} trial {t.index + 1}</summary>"
                    f"<pre>{esc(t.service.log_tail)}</pre></details>"
                )
    header = ("side", "trial", "requests", "req/s", "errors", "p50", "p99", "service", "notes")
    return "\n".join([_table("<h2>Trials</h2>", header, rows), *logs])


def _run(
    record: RunRecord, baseline: RunRecord | None, sides: Mapping[str, Sequence[Trial]]
) -> str:
    facts = [
        ("package", record.package),
        ("command", record.command),
        ("trials", ", ".join(f"{len(t)} {side}" for side, t in sides.items())),
        ("offered rate", _optional(offered_rate(record.trials), lambda r: f"{r:,.0f} req/s")),
        ("base revision", record.base_revision),
        ("created", record.created),
        ("trial order seed", _optional(record.trial_order_seed, str)),
        ("interrupted", "yes" if record.interrupted else ""),
    ]
    if baseline is not None:
        facts.append(("baseline created", baseline.created))
        facts.append(("baseline revision", baseline.environment.git_revision))
    rows = [_row(esc(name), esc(value)) for name, value in facts if value]
    parts = [_table("<h2>Run</h2>", (), rows), _environment(record.environment, baseline)]
    if record.config:
        config = json.dumps(record.config, indent=1, sort_keys=True, default=str)
        parts.append(f"<details><summary>configuration</summary><pre>{esc(config)}</pre></details>")
    return "\n".join(parts)


def _environment(env: Environment, baseline: RunRecord | None) -> str:
    envs = [env] if baseline is None else [env, baseline.environment]
    rows = []
    for f in dataclasses.fields(Environment):
        values = [_env_value(getattr(e, f.name)) for e in envs]
        if any(values):
            rows.append(_row(esc(f.name.replace("_", " ")), *(esc(v) for v in values)))
    header = ("", "this run") if baseline is None else ("", "this run", "baseline")
    return _table("<h2>Environment</h2>", header, rows)


# -- helpers -----------------------------------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Num:
    """A right-aligned table cell of plain text (escaped when written)."""

    text: str


def _row(*cells: str | Num) -> str:
    """A table row; a str cell is HTML that is already escaped."""
    tds = (
        f'<td class="num">{esc(c.text)}</td>' if isinstance(c, Num) else f"<td>{c}</td>"
        for c in cells
    )
    return "<tr>" + "".join(tds) + "</tr>"


def _table(heading: str, header: Sequence[str], rows: Sequence[str]) -> str:
    if not rows:
        return f'{heading}\n<p class="nodata">nothing to show</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    return f"{heading}\n<table>{thead}<tbody>\n" + "\n".join(rows) + "\n</tbody></table>"


def _list(items: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def _function(site: LeakSite) -> str:
    text = f"<code>{esc(site.function)}</code>"
    if site.description:
        text += f'<br><span class="muted">{esc(site.description)}</span>'
    if site.stack:
        stack = "\n".join(site.stack)
        text += f"<details><summary>stack</summary><pre>{esc(stack)}</pre></details>"
    return text


def _where(site: LeakSite) -> str:
    return f"<code>{esc(site.file)}:{site.line}</code>" if site.file else ""


def _service(trial: Trial) -> str:
    s = trial.service
    if not s.died:
        return "ok"
    how = f"exit {s.exit_code}" if s.exit_code is not None else (s.signal or "")
    return esc(f"died during {s.phase or 'the run'}" + (f" ({how})" if how else ""))


def _rate(value: float) -> str:
    return f"{value:,.0f}" if math.isfinite(value) else "n/a"


def _optional(value: T | None, fmt: Callable[[T], str]) -> str:
    return "" if value is None else fmt(value)


def _env_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "" if value is None else str(value)
