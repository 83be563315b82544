"""Where the cost goes, per request: the profiles of base and candidate, diffed by stack.

Three kinds of `CostProfile`, each only where its profiles were taken and could be read:

- cpu (s/request): each trial's CPU profile of the measure window. A stack's CPU per request is
  its share of the profile's CPU time times the trial's CPU per request from the service's own
  counter (`analysis.cpu_per_request`); a side's figure is the mean over its profiled trials.
- alloc (B/request): the heap profiles' `alloc_space` and `alloc_objects`, cumulative since the
  process started, from the warm-up to the drain checkpoint: the deltas summed over a side's
  trials ÷ the requests those trials served.
- heap (B/request): the same checkpoints' `inuse_space` growth, what a leak keeps; shown only
  when some stack grew by more than `leaksites.MIN_HEAP_BYTES` on one side (below that it is the
  heap profile's sampling noise).

Stacks are compared by function names alone, so two builds whose line numbers moved still
merge. Each stack is charged to the first frame from the leaf that is the service's own code:
time in crypto/sha256 or runtime.mallocgc is a cost of the service function that called it.
"""

from __future__ import annotations

import heapq
import shlex
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leakgate import analysis, pprof
from leakgate.leaksites import MIN_HEAP_BYTES
from leakgate.model import CostProfile, CostSite, CostSites, FlameStack, RunRecord, Trial

TOP = 10
MAX_FLAME_STACKS = 2000
MAX_DEPTH = 63  # frames of a flame stack (the graph adds its root, 'all'); deeper ones lose
# their root-most frames
SIDES = ("baseline", "candidate")

Kind = Literal["cpu", "alloc", "heap"]
Names = tuple[str, ...]  # function names, leaf first
Own = Callable[[str], bool]
# A stack as it is compared (function names) and the frame it is charged to; None for a sample
# without a stack.
Keyed = tuple[Names, pprof.Frame | None]
# One sample's part of a trial's figure: (its stack, value, objects).
Contribution = tuple[Keyed, float, float]


@dataclass
class _Side:
    """One side's figures of one kind, summed over the trials that could be used.

    `weight` is what the sums are divided by to give a figure per request: the number of trials
    for cpu (whose values are already per request, so the result is their mean), the requests
    served for alloc and heap (whose values are bytes)."""

    trials: list[Trial] = field(default_factory=list)
    paths: list[tuple[str, ...]] = field(default_factory=list)  # each trial's profiles
    weight: float = 0.0
    total: float = 0.0
    stacks: defaultdict[Names, float] = field(default_factory=lambda: defaultdict(float))
    sites: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    site_objects: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    lines: defaultdict[str, defaultdict[tuple[str, int], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )

    def add(
        self,
        trial: Trial,
        paths: tuple[str, ...],
        weight: float,
        contributions: Iterable[Contribution],
    ) -> None:
        self.trials.append(trial)
        self.paths.append(paths)
        self.weight += weight
        for (names, site), value, objects in contributions:
            self.total += value
            if site is None or (value == 0 and objects == 0):
                continue  # a sample without a stack has no site
            self.stacks[names] += value
            self.sites[site.function] += value
            self.site_objects[site.function] += objects
            self.lines[site.function][(site.file, site.line)] += value

    def per_request(self, value: float) -> float:
        return value / self.weight


def find_or_note(record: RunRecord, report_dir: Path) -> CostSites:
    """find(), for the commands: a failure here costs a section of the reports (a note says
    why), never the verdict."""
    try:
        return find(record, report_dir)
    except Exception as e:  # a bug in the profile analysis must not lose the judged run
        return CostSites(notes=(f"cost sites could not be computed: {type(e).__name__}: {e}",))


def find(record: RunRecord, report_dir: Path) -> CostSites:
    """Where the cost per request goes, from the profiles saved under `report_dir`, baseline
    trials against candidate trials (candidate alone when the record has no baseline side).

    Every figure is per request of the measure window: cpu in seconds of CPU, the mean over a
    side's profiled trials of (stack's share of the CPU profile × the trial's CPU per request);
    alloc in bytes and objects allocated, and heap in bytes of inuse_space grown, each as
    (drain − warm-up) summed over a side's trials ÷ the requests those trials served. Trials
    whose service died or that served no request are left out; a profile that cannot be read is
    a note, and costs only its trial's figures of that kind.
    """
    module = record.environment.go_module
    own_cache: dict[str, bool] = {}

    def own(function: str) -> bool:
        if function not in own_cache:
            own_cache[function] = pprof.is_own_code(function, module)
        return own_cache[function]

    notes: list[str] = []
    cpu = {side: _Side() for side in SIDES}
    alloc = {side: _Side() for side in SIDES}
    heap = {side: _Side() for side in SIDES}
    estimated: list[int] = []
    for trial in record.trials:
        if trial.side not in SIDES or trial.service.died:
            continue
        requests = analysis.requests_served(trial)
        if requests <= 0:
            continue
        if trial.cpu_profile:
            try:
                path = report_dir / trial.cpu_profile
                contributions, guessed = _cpu(trial, path, requests, own)
            except (pprof.ProfileError, OSError) as e:
                notes.append(_unread(trial, "CPU profile", trial.cpu_profile, report_dir, e))
            else:
                cpu[trial.side].add(trial, (trial.cpu_profile,), 1.0, contributions)
                if guessed:
                    estimated.append(trial.index + 1)
        _heap_trial(trial, report_dir, requests, alloc[trial.side], heap[trial.side], notes, own)
    if estimated:
        which = ("trials " if len(estimated) > 1 else "trial ") + ", ".join(map(str, estimated))
        notes.append(
            f"CPU per request of {which} is estimated from the CPU profile (its CPU time "
            "÷ the requests served in the time it covered): no CPU counter for the window"
        )
    profiles = [
        _profile("cpu", cpu, notes),
        _profile("alloc", alloc, notes),
        _profile("heap", heap, notes) if _above_noise(heap) else None,
    ]
    return CostSites(profiles=tuple(p for p in profiles if p is not None), notes=tuple(notes))


def _cpu(trial: Trial, path: Path, requests: int, own: Own) -> tuple[list[Contribution], bool]:
    """Each stack's CPU seconds per request in one trial, and whether the trial's figure had to
    be estimated from the profile (no CPU counter bracketed the window)."""
    profile = pprof.load(path)
    by_stack = profile.by_stack("cpu")
    total_ns = sum(by_stack.values())
    if total_ns <= 0:
        raise pprof.ProfileError("it has no CPU samples")
    per_request = analysis.cpu_per_request(trial)
    guessed = per_request is None
    if per_request is None:
        per_request = total_ns / 1e9 / (requests * _coverage(trial, profile))
    scale = per_request / total_ns
    return [(_keyed(profile, s, own), ns * scale, 0.0) for s, ns in by_stack.items()], guessed


def _coverage(trial: Trial, profile: pprof.Profile) -> float:
    """The share of the measure window the profile covered (1 when either is unknown)."""
    window = trial.load.duration_s if trial.load else 0.0
    if window <= 0 or profile.duration_nanos <= 0:
        return 1.0
    return min(1.0, profile.duration_nanos / 1e9 / window)


def _heap_trial(
    trial: Trial,
    report_dir: Path,
    requests: int,
    alloc: _Side,
    heap: _Side,
    notes: list[str],
    own: Own,
) -> None:
    before, after = trial.checkpoints.get("warmup"), trial.checkpoints.get("drain")
    paths = (before.heap_profile if before else None, after.heap_profile if after else None)
    if paths[0] is None or paths[1] is None:
        return
    pair = (paths[0], paths[1])
    profiles = []
    for rel in pair:
        try:
            profiles.append(pprof.load(report_dir / rel))
        except (pprof.ProfileError, OSError) as e:
            notes.append(_unread(trial, "heap profile", rel, report_dir, e))
            return
    try:
        types = ("alloc_space", "alloc_objects", "inuse_space")
        rows = _delta(profiles[0], profiles[1], types, own)
    except pprof.ProfileError as e:
        notes.append(_unread(trial, "heap profiles", " and ".join(pair), report_dir, e))
        return
    alloc.add(trial, pair, float(requests), ((k, v[0], v[1]) for k, v in rows))
    heap.add(trial, pair, float(requests), ((k, v[2], 0.0) for k, v in rows))


def _delta(
    before: pprof.Profile, after: pprof.Profile, sample_types: tuple[str, ...], own: Own
) -> list[tuple[Keyed, tuple[int, ...]]]:
    """Each sample of `after` with its values of `sample_types`, each of `before` with them
    negated: summed by stack, (drain − warm-up) of the cumulative counts."""
    rows = []
    for sign, profile in ((-1, before), (1, after)):
        at = [profile.value_index(name) for name in sample_types]
        keyed: dict[pprof.Stack, Keyed] = {}
        for stack, values in profile.samples:
            if stack not in keyed:
                keyed[stack] = _keyed(profile, stack, own)
            rows.append((keyed[stack], tuple(sign * values[i] for i in at)))
    return rows


def _unread(trial: Trial, what: str, rel: str, report_dir: Path, error: Exception) -> str:
    reason = str(error).removeprefix(f"{report_dir / rel}: ")
    figures = "CPU" if what.startswith("CPU") else "alloc and heap"
    return (
        f"trial {trial.index + 1} ({trial.side}): {what} {rel} not used "
        f"(the trial is left out of the {figures} figures): {reason}"
    )


def _above_noise(heap: dict[str, _Side]) -> bool:
    return any(v > MIN_HEAP_BYTES for side in heap.values() for v in side.stacks.values())


def _profile(kind: Kind, sides: dict[str, _Side], notes: list[str]) -> CostProfile | None:
    candidate, baseline = sides["candidate"], sides["baseline"]
    if not candidate.trials:
        if baseline.trials:
            notes.append(f"{kind}: no candidate trial's profile could be used; not shown")
        return None
    base = baseline if baseline.trials else None
    return CostProfile(
        kind=kind,
        unit="s/request" if kind == "cpu" else "B/request",
        sites=_sites(kind, candidate, base, notes),
        flame=_flame(kind, candidate, base, notes),
        commands=_commands(kind, candidate, base),
        candidate_total=candidate.per_request(candidate.total),
        baseline_total=base.per_request(base.total) if base else None,
    )


def _sites(
    kind: Kind, candidate: _Side, baseline: _Side | None, notes: list[str]
) -> tuple[CostSite, ...]:
    functions = set(candidate.sites) | set(baseline.sites if baseline else ())
    sites = []
    for function in functions:
        c = candidate.per_request(candidate.sites.get(function, 0.0))
        b = baseline.per_request(baseline.sites.get(function, 0.0)) if baseline else None
        if c == 0 and not b:
            continue
        lines = candidate.lines.get(function)
        if not lines and baseline is not None:
            lines = baseline.lines.get(function)
        assert lines, function  # every site came from a side whose lines name it
        file, line = min(lines, key=lambda where: (-lines[where], where))
        objects = kind == "alloc"
        sites.append(
            CostSite(
                function=function,
                file=file,
                line=line,
                candidate=c,
                baseline=b,
                candidate_objects=(
                    candidate.per_request(candidate.site_objects.get(function, 0.0))
                    if objects
                    else None
                ),
                baseline_objects=(
                    baseline.per_request(baseline.site_objects.get(function, 0.0))
                    if objects and baseline
                    else None
                ),
            )
        )
    if baseline:
        sites.sort(key=lambda s: (-s.change, -s.candidate, s.function))
    else:
        sites.sort(key=lambda s: (-s.candidate, s.function))
    if len(sites) > TOP:
        notes.append(f"{kind}: {len(sites) - TOP} more functions left out (the top {TOP} shown)")
    return tuple(sites[:TOP])


def _flame(
    kind: Kind, candidate: _Side, baseline: _Side | None, notes: list[str]
) -> tuple[FlameStack, ...]:
    """Every stack root first, cut to its leaf-most MAX_DEPTH frames, per request on both
    sides; a stack that shrank (inuse_space freed) shows as 0 there."""
    merged: defaultdict[Names, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for at, side in ((0, candidate), (1, baseline)):
        if side is None:
            continue
        for names, value in side.stacks.items():
            merged[names[:MAX_DEPTH][::-1]][at] += side.per_request(value)
    grown = [(max(c, b), frames) for frames, (c, b) in merged.items() if c > 0 or b > 0]
    if len(grown) > MAX_FLAME_STACKS:
        notes.append(
            f"{kind} flame graph: the {len(grown) - MAX_FLAME_STACKS} smallest stacks left out "
            f"(the largest {MAX_FLAME_STACKS} shown)"
        )
    kept = heapq.nsmallest(MAX_FLAME_STACKS, grown, key=lambda s: (-s[0], s[1]))
    return tuple(
        FlameStack(
            frames, candidate=max(0.0, merged[frames][0]), baseline=max(0.0, merged[frames][1])
        )
        for _, frames in kept
    )


def _commands(kind: Kind, candidate: _Side, baseline: _Side | None) -> tuple[str, ...]:
    """`go tool pprof` lines to paste in the report directory, for each side's first trial."""
    if kind == "cpu":
        cpu = shlex.quote(candidate.paths[0][0])
        if baseline is None:
            return (f"go tool pprof -top {cpu}",)
        return (f"go tool pprof -diff_base {shlex.quote(baseline.paths[0][0])} {cpu}",)
    index = "alloc_space" if kind == "alloc" else "inuse_space"
    commands = []
    for name, side in (("baseline", baseline), ("candidate", candidate)):
        if side is None:
            continue
        warmup, drain = (shlex.quote(p) for p in side.paths[0])
        commands.append(
            f"go tool pprof -sample_index={index} -base {warmup} {drain}"
            f"  # {name}, trial {side.trials[0].index + 1}"
        )
    return tuple(commands)


def _keyed(profile: pprof.Profile, stack: pprof.Stack, own: Own) -> Keyed:
    """The stack's function names, leaf first, and the frame it is charged to: the service's
    own innermost frame, else the leaf."""
    frames = profile.frames(stack)
    if not frames:
        return (), None
    site = next((f for f in frames if own(f.function)), frames[0])
    return tuple(f.function for f in frames), site
