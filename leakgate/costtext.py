"""Cost sites in words, for the judge's evidence and every report (pure: no profiles read)."""

from __future__ import annotations

from leakgate.model import CostProfile, CostSite
from leakgate.units import format_change, format_metric, format_per_request


def describe(site: CostSite, profile: CostProfile, *, objects: bool = False) -> str:
    """One line a developer can act on: "main.priceWork (leaks.go:140) +14.2 µs/request
    (+61.0%: 23.3 µs → 37.5 µs)"; with `objects`, allocations instead of bytes; without a
    baseline, the candidate's figure and its share of the total."""
    where = f"{site.function} ({site.file.rsplit('/', 1)[-1]}:{site.line})"
    if objects:
        value, base, unit = site.candidate_objects or 0.0, site.baseline_objects, "allocs/request"
        total = None
    else:
        value, base, unit = site.candidate, site.baseline, profile.unit
        total = profile.candidate_total
    if base is None:
        share = f" ({value / total:.0%} of the total)" if total else ""
        return f"{where} {format_metric(value, unit)}{share}"
    change = format_metric(value - base, unit, signed=True)
    percent = format_change(value, base)
    side_unit = "allocs" if objects else unit
    sides = f"{format_per_request(base, side_unit)} → {format_per_request(value, side_unit)}"
    return f"{where} {change} ({percent + ': ' if percent else ''}{sides})"


def grown(profile: CostProfile, *, objects: bool = False, top: int = 3) -> list[CostSite]:
    """The sites whose cost grew most against the baseline (bytes, or `objects`), largest first."""

    def change(site: CostSite) -> float:
        if objects:
            return (site.candidate_objects or 0.0) - (site.baseline_objects or 0.0)
        return site.change

    ordered = sorted(profile.sites, key=lambda s: -change(s))
    return [s for s in ordered if change(s) > 0][:top]
