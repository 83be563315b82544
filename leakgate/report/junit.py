"""JUnit XML through junit-xml: one testcase per check, so CI test tabs show each verdict."""

from __future__ import annotations

from junit_xml import TestCase, TestSuite, to_xml_report_string

from leakgate.model import Check, RunRecord, Verdict

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
    }
    if env.service_cpus:
        props["service_cpus"] = ",".join(map(str, env.service_cpus))
        props["loadgen_cpus"] = ",".join(map(str, env.loadgen_cpus))
    return {k: v for k, v in props.items() if v}


def _case(check: Check, suite: str) -> TestCase:
    details = "\n".join(check.evidence)
    case = TestCase(
        name=check.name,
        classname=f"{CLASSNAME}.{suite}",
        stdout=f"{check.summary}\n{details}".strip(),
    )
    if check.status == "fail":
        message = f"{check.name}: {check.summary}"
        if check.evidence:
            message += " | " + check.evidence[0]
        case.add_failure_info(message=message, output=details or check.summary, failure_type="gate")
    elif check.status == "error":
        case.add_error_info(message=f"{check.name}: {check.summary}", output=details)
    elif check.status == "no_data":
        case.add_skipped_info(message=f"no data: {check.summary}")
    return case


def render(
    verdict: Verdict, record: RunRecord, *, error: tuple[str, str, str] | None = None
) -> str:
    """`error` is (phase, message, details) for a run stopped before it could judge."""
    suite_name = _suite_name(record)
    cases = [_case(c, suite_name) for c in verdict.checks]
    if error is not None:
        phase, message, details = error
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
        stdout="\n".join(verdict.notes) or None,
    )
    return str(to_xml_report_string([suite], prettyprint=True, encoding="utf-8"))


def _suite_name(record: RunRecord) -> str:
    name = record.package.rstrip("/").rsplit("/", 1)[-1] if record.package else "service"
    return name or "service"
