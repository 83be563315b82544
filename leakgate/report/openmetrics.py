"""OpenMetrics text of every judged metric and the verdict, for charting gate results over time.

One file per run (`--openmetrics FILE`): gauges only, so the same text also loads as Prometheus
text format 0.0.4 (a Pushgateway takes it with `curl --data-binary @FILE`). Labels identify the
service (`package`, the last element of its path) and the run's commit; values are in base
units (seconds, bytes, fractions); a metric with no value is left out, never written as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from leakgate.metrics import METRICS, trial_values
from leakgate.model import ComparisonRow, RunRecord, Verdict
from leakgate.report import Judged

PREFIX = "leakgate"
STATUS_VALUES = ("pass", "fail", "warn", "no_data", "error")
VERDICTS = ("pass", "fail", "error", "interrupted")


Samples = Iterable[tuple[Mapping[str, str], float]]
Family = tuple[str, str, Samples]  # name (after the prefix), help text, labelled values


def render(judged: Judged) -> str:
    service = {"service": _service_name(judged.record)}
    lines: list[str] = []
    families = (
        *_verdict_families(judged.verdict),
        *_trial_families(judged.record),
        *_comparison_families(judged.verdict.comparisons),
        _run_info(judged.record),
    )
    for name, help_text, samples in families:
        rows = [(labels, value) for labels, value in samples if math.isfinite(value)]
        if not rows:
            continue  # a metric with no value is left out, never written as NaN
        lines.append(f"# TYPE {PREFIX}_{name} gauge")
        lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        lines.extend(
            f"{PREFIX}_{name}{_labels({**service, **labels})} {_number(value)}"
            for labels, value in rows
        )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def _verdict_families(verdict: Verdict) -> list[Family]:
    checks = verdict.checks
    return [
        (
            "verdict",
            "1 for the run's verdict, 0 for the others.",
            (({"status": s}, float(verdict.status == s)) for s in VERDICTS),
        ),
        (
            "check_status",
            "1 for each check's status, 0 for the others.",
            (
                ({"check": c.name, "status": s}, float(c.status == s))
                for c in checks
                for s in STATUS_VALUES
            ),
        ),
        (
            "check_value",
            "The value each check judged (its unit is the check's).",
            (({"check": c.name}, c.value) for c in checks if c.value is not None),
        ),
        (
            "check_limit",
            "The limit each check judged against.",
            (({"check": c.name}, c.limit) for c in checks if c.limit is not None),
        ),
    ]


def _trial_families(record: RunRecord) -> list[Family]:
    families: list[Family] = []
    for side in ("candidate", "baseline"):
        trials = [t for t in record.trials if t.side == side]
        families.append(
            (
                f"{side}_trial_value",
                f"Each metric's value per {side} trial, in base units.",
                (
                    ({"metric": metric, "unit": METRICS[metric].unit, "trial": str(t.index + 1)}, v)
                    for t in trials
                    for metric, v in trial_values(t).items()
                ),
            )
        )
    return families


def _comparison_families(rows: Sequence[ComparisonRow]) -> list[Family]:
    return [
        (
            "comparison_baseline_median",
            "Baseline median per compared metric.",
            (
                ({"metric": r.metric}, r.baseline_median)
                for r in rows
                if r.baseline_median is not None
            ),
        ),
        (
            "comparison_candidate_median",
            "Candidate median per compared metric.",
            (
                ({"metric": r.metric}, r.candidate_median)
                for r in rows
                if r.candidate_median is not None
            ),
        ),
        (
            "comparison_change_ratio",
            "Change in the worse direction: 0.12 = 12% worse.",
            (({"metric": r.metric}, r.change) for r in rows if r.change is not None),
        ),
        (
            "comparison_p_value",
            "One-sided p-value, Holm-adjusted over the gated metrics: Mann-Whitney U over "
            "trials, or (paired compare) signed-rank over pairs of blocks, of worse than the "
            "threshold and judged against its look's share of alpha.",
            (({"metric": r.metric}, r.p_value) for r in rows if r.p_value is not None),
        ),
        (
            "comparison_failed",
            "1 when the comparison failed the gate.",
            (({"metric": r.metric}, float(r.verdict == "fail")) for r in rows if r.gated),
        ),
    ]


def _run_info(record: RunRecord) -> Family:
    env = record.environment
    labels = {
        "command": record.command,
        "revision": env.git_revision,
        "base_revision": record.base_revision,
        "go_version": env.go_version,
        "leakgate_version": env.leakgate_version,
    }
    return ("run_info", "The run's context; the value is always 1.", [(labels, 1.0)])


def _service_name(record: RunRecord) -> str:
    return record.package.rstrip("/").rsplit("/", 1)[-1] or "service"


def _labels(labels: Mapping[str, str]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items() if v != ""]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{value:.1f}"
