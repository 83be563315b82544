"""JUnit XML through junit-xml: one testcase per check, so CI test tabs show each verdict."""

from __future__ import annotations

from junit_xml import TestCase, TestSuite, to_xml_report_string

from leakgate import analysis
from leakgate.metrics import METRICS, metric_values
from leakgate.model import Check, LeakSite, RunRecord, Verdict
from leakgate.report import Judged, table
from leakgate.units import format_metric

CLASSNAME = "leakgate"


def _properties(record: RunRecord) -> dict[str, str]:
    env = record.environment
    props = {
        "leakgate_version": env.leakgate_version,
        "go_version": env.go_version,
        "platform": f"{env.goos}/{env.goarch}",
        "gomaxprocs": str(env.gomaxprocs or ""),
        "cpu_model": env.cpu_model,
        "git_revision": env.git_revision + (" (dirty)" if env.git_dirty else ""),
        "package": record.package,
        "trials": str(len(record.trials)),
        "design": record.design,
    }
    if record.design == "paired":
        props["pairs"] = str(len({b.pair for b in record.blocks if b.side == "candidate"}))
    if env.service_cpus:
        props["service_cpus"] = ",".join(map(str, env.service_cpus))
        props["loadgen_cpus"] = ",".join(map(str, env.loadgen_cpus))
    # every metric the candidate measured: its median over the trials, with the spread
    values = metric_values(t for t in record.trials if t.side == "candidate")
    for name, per_trial in values.items():
        if per_trial:
            props[name] = _median_and_spread(per_trial, METRICS[name].unit)
    return {k: v for k, v in props.items() if v}


def _median_and_spread(values: list[float], unit: str) -> str:
    """ "41.4 µs/request (40.9 µs/request .. 41.8 µs/request, 5 trials)"."""
    median = analysis.median(values)
    if len(values) == 1:
        return format_metric(median, unit)
    low, high = format_metric(min(values), unit), format_metric(max(values), unit)
    return f"{format_metric(median, unit)} ({low} .. {high}, {len(values)} trials)"


def _case(check: Check, suite: str) -> TestCase:
    held = [f"held by: {h.description}" for h in check.holders]
    details = "\n".join([*check.evidence, *held, *_site_details(check.leak_sites)])
    case = TestCase(
        name=check.name,
        classname=f"{CLASSNAME}.{suite}",
        stdout=f"{check.summary}\n{details}".strip(),
    )
    if check.status == "fail":
        # The message is what a CI test tab shows first: the figures, then where it leaks.
        message = f"{check.name}: {check.summary}"
        if check.holders:
            message += f" | held by: {check.holders[0].description}"
        if check.leak_sites:
            message += " | top leak sites: " + "; ".join(
                f"{i}) {s.description}" for i, s in enumerate(check.leak_sites, 1)
            )
        elif check.evidence:
            message += " | " + check.evidence[0]
        case.add_failure_info(message=message, output=details or check.summary, failure_type="gate")
    elif check.status == "error":
        case.add_error_info(message=f"{check.name}: {check.summary}", output=details)
    elif check.status == "no_data":
        case.add_skipped_info(message=f"no data: {check.summary}")
    return case


def render(judged: Judged) -> str:
    """One test suite: a case per check, and an error case for a run stopped before it could
    judge (named after what stopped it: build_failed, load_failed, ...)."""
    verdict, record, error = judged.verdict, judged.record, judged.error
    suite_name = _suite_name(record)
    cases = [_case(c, suite_name) for c in verdict.checks]
    if error is not None:
        phase = error.kind.replace(" ", "_")
        message, details = f"{error.kind}: {error.message}", error.details
        case = TestCase(name=phase, classname=f"{CLASSNAME}.{suite_name}", stdout=details)
        case.add_error_info(message=message, output=details or message, error_type=phase)
        cases.append(case)
    if record.interrupted:
        case = TestCase(name="interrupted", classname=f"{CLASSNAME}.{suite_name}")
        case.add_error_info(message="the run was interrupted before it finished; partial results")
        cases.append(case)
    suite = TestSuite(
        f"leakgate {suite_name}",
        cases,
        properties=_properties(record),
        stdout="\n".join(_suite_output(verdict)) or None,
    )
    return str(to_xml_report_string([suite], prettyprint=True, encoding="utf-8"))


def _suite_output(verdict: Verdict) -> list[str]:
    sites = verdict.leak_sites
    lines = list(verdict.notes)
    if sites.heap_command:
        lines.append(f"heap profiles (in the report directory): {sites.heap_command}")
    if sites.goroutine_command:
        lines.append(f"goroutine profiles (in the report directory): {sites.goroutine_command}")
    if sites.trace:
        lines.append(f"execution trace: go tool trace {sites.trace}")
    lines.extend(sites.notes)
    lines.extend(table.cost_lines(verdict, top=3))
    lines.extend(verdict.costs.notes)
    return lines


def _site_details(sites: tuple[LeakSite, ...]) -> list[str]:
    lines = []
    for i, site in enumerate(sites, 1):
        lines.append(f"leak site {i}: {site.description}")
        lines.extend(f"    {frame}" for frame in site.stack)
    return lines


def _suite_name(record: RunRecord) -> str:
    name = record.package.rstrip("/").rsplit("/", 1)[-1] if record.package else "service"
    return name or "service"
