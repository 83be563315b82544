"""compare, paired: both builds started once and warmed, then measured in short alternating
blocks until the sequential decision (sequential.py) can stop, then drained for the leak checks.

Order: a random side first, then ABBA (base, cand, cand, base, ...), so linear drift over a pair
of pairs lands on both sides alike. Only one side is under load at a time; both services share
the service CPUs and the generator has its own. Each side's Trial is its one process over the
whole run: its warm-up, its blocks' loads and costs summed, its 1 Hz series and a CPU profile
of the first blocks, and its two checkpoints, so the leak checks judge every request it served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from leakgate import leaks, sequential
from leakgate.errors import LoadError, ServiceStartError
from leakgate.measure import (
    CostMeter,
    ServiceDied,
    capacity_probe_seconds,
    rate_from_capacity,
    rel,
    series,
)
from leakgate.model import (
    Block,
    Counters,
    Histogram,
    LoadResult,
    SecondStat,
    ServiceStatus,
    WindowCost,
)
from leakgate.probes import CpuProfilePlan, ProbeError, Sampler

if TYPE_CHECKING:
    from leakgate.runner import Runner, _Prepared, _TrialRun

SIDES = ("baseline", "candidate")
CPU_PROFILE_MAX_SECONDS = 60
# What one block takes beyond its load (the generator's start and drain, two counter reads),
# measured 0.10-0.12 s on the sample.
BLOCK_OVERHEAD_SECONDS = 0.11
# Unmeasured load on each side after its samplers start and before the first block. Without
# it the sample's first block allocated 2.4-7% more bytes per request than the others, most
# of a side's block-to-block spread: the checkpoint's forced GCs empty the service's
# sync.Pools (net/http's buffers, encoders), which its next requests refill, and starting a
# CPU profile allocates the runtime's 1 MiB sample buffer in the service's heap.
SETTLE_SECONDS = 0.5
# From the samplers' start to the first block: both sides' settle loads.
LEAD_SECONDS = 2 * (SETTLE_SECONDS + BLOCK_OVERHEAD_SECONDS)


def profile_seconds(
    order: Sequence[tuple[int, str]], side: str, pairs: int, block: float, lead: float = 0.0
) -> int:
    """How long `side`'s CPU profile runs, from `lead` seconds before the first block: to the
    middle of the side's last two-block rest within the first `pairs` pairs of `order`, so the
    work of ending a profile (building and compressing it: about 2 MB and 5,000 objects
    allocated, and milliseconds of CPU) falls while the side is not measured instead of in one
    of its blocks. The middle of a rest is a block's length away from either neighbour, which
    covers the drift of estimating each block's slot as its load plus BLOCK_OVERHEAD_SECONDS."""
    slot = block + BLOCK_OVERHEAD_SECONDS
    best = 0
    for boundary in range(1, min(2 * pairs, len(order) - 1) + 1):
        rests = order[boundary - 1][1] != side and order[boundary][1] != side
        seconds = round(lead + boundary * slot)
        if rests and seconds <= CPU_PROFILE_MAX_SECONDS:
            best = seconds
    return best


def block_order(pairs: int, first: str) -> list[tuple[int, str]]:
    """(pair, side) for every block: `first` then the other, then the other then `first`..."""
    second = SIDES[1] if first == SIDES[0] else SIDES[0]
    order: list[tuple[int, str]] = []
    for pair in range(pairs):
        sides = (first, second) if pair % 2 == 0 else (second, first)
        order.extend((pair, side) for side in sides)
    return order


class PairedRun:
    """One paired compare, run by `Runner.run` when compare.design is paired."""

    def __init__(self, runner: Runner, prepared: _Prepared) -> None:
        self.runner = runner
        self.prepared = prepared
        self.plan = sequential.plan_of(runner.config.compare)
        self.first = random.Random(runner.seed).choice(SIDES)
        self.blocks: list[Block] = runner.blocks  # the runner's own list: a record taken at
        # any moment (an interrupt while the samplers stop) holds every block measured
        self.samplers: dict[str, Sampler] = {}
        self.phase = "start-up"
        self.side = SIDES[0]

    def run(self) -> None:
        runner, prepared = self.runner, self.prepared
        states = runner.paired
        with contextlib.ExitStack() as stack:
            services = {}
            for i, side in enumerate(SIDES):
                state = states[side]
                trial_dir = runner.report_dir / f"trial-{i + 1}"
                trial_dir.mkdir(parents=True, exist_ok=True)
                if i == 0:
                    state.notes.extend(runner.leftovers)
                service = stack.enter_context(runner._service(state, trial_dir, prepared))
                service.start()  # both start now: their start-ups overlap
                status = ServiceStatus(
                    pid=service.pid, log_file=rel(service.log_path, runner.report_dir)
                )
                state.trial = dataclasses.replace(state.trial, service=status)
                services[side] = (service, trial_dir)
            runs: dict[str, _TrialRun] = {}
            try:
                for side in SIDES:
                    self.side = side
                    service, trial_dir = services[side]
                    label = f"{side} (paired)"
                    runs[side] = runner._start_up(
                        states[side], service, trial_dir, label, prepared.load
                    )
                self._warm_up(runs)
                self.phase = "checkpoint after warm-up"
                for side in SIDES:
                    self.side = side
                    runner._checkpoint_after_warm_up(runs[side])
                self.phase = "load"
                self._blocks(runs)
                self._stop_samplers(cut=False)  # before the drain: no probe in its heap
                self.phase = "drain"
                for side in SIDES:
                    self.side = side
                    runner._drain(runs[side])
            except (ServiceDied, ProbeError, LoadError, ServiceStartError) as e:
                service, _ = services[self.side]
                runner._note_died(e, self.phase, states[self.side], service, self.side)
            finally:
                self._stop_samplers(cut=True)  # cut short: the profile is not waited for
                self._finish()
        for side in SIDES:
            runner.reporter.say(f"{side}: done")

    # -- warm-up ------------------------------------------------------------------------

    def _warm_up(self, runs: dict[str, _TrialRun]) -> None:
        """Both sides warmed at one offered rate: with rate auto, a share of the lower of the
        two capacities, so the slower build can hold it too."""
        runner = self.runner
        load = runner.config.load
        warmup = load.warmup
        self.phase = "warm-up"
        if load.rate == "auto" and runner.offered_rate is None:
            probe = capacity_probe_seconds(warmup)
            capacity = {}
            for side in SIDES:
                self.side = side
                capacity[side] = runs[side].load(probe, 0.0, "capacity").achieved_rate
            runner.offered_rate = rate_from_capacity(min(capacity.values()), load.rate_share)
            warmup = max(0.0, warmup - probe)
            runner.reporter.say(
                f"capacity closed-loop: baseline {capacity['baseline']:,.0f}, candidate "
                f"{capacity['candidate']:,.0f} req/s; offering both {runner.offered_rate:,.0f} "
                f"req/s ({load.rate_share:.0%} of the lower)"
            )
        for side in SIDES if warmup > 0 else ():
            self.side = side
            runs[side].warm(warmup, runner.offered_rate or 0.0)

    # -- the blocks -----------------------------------------------------------------------

    def _blocks(self, runs: dict[str, _TrialRun]) -> None:
        runner, cfg = self.runner, self.runner.config
        block = cfg.compare.block
        order = block_order(self.plan.max_pairs, self.first)
        for side in SIDES:
            t = runs[side]
            seconds = profile_seconds(order, side, self.plan.min_pairs, block, LEAD_SECONDS)
            plan = (
                CpuProfilePlan(dest=t.trial_dir / "cpu-measure.pb.gz", seconds=seconds)
                if seconds >= 1
                else None
            )
            self.samplers[side] = Sampler(
                t.source, t.service.pid or 0, cfg.probes.interval, cpu_profile=plan
            )
        for sampler in self.samplers.values():
            sampler.start()
        for side in (order[1][1], order[0][1]):  # the first block's side settles last
            self.side = side
            settled = runs[side].load(SETTLE_SECONDS, runner.offered_rate or 0.0, "settle")
            state = runner.paired[side]
            state.trial = dataclasses.replace(state.trial, settle_requests=settled.requests)
        looks = set(self.plan.looks())
        t0 = time.monotonic()
        error_limit = cfg.threshold("error_rate").max
        for index, (pair, side) in enumerate(order):
            self.side = side
            self.blocks.append(self._block(runs[side], index, pair, t0))
            if index % 2 == 1 and pair + 1 in looks:
                values = sequential.block_values(self.blocks, runner.offered_rate, error_limit)
                decision = sequential.decide(values, cfg.thresholds, self.plan)
                runner.reporter.say(_look_line(decision))
                if decision.done:
                    return
                why = self._evident_leak(runs["candidate"])
                if why:
                    runner.stopped_early = f"after {pair + 1} pairs, the candidate's {why}"
                    runner.reporter.say(f"{runner.stopped_early} -> stop; the drain decides")
                    return

    def _evident_leak(self, candidate: _TrialRun) -> str | None:
        """Why the candidate's series so far show a leak too plain to need more pairs, or None
        (leaks.evident_growth): the blocks may stop, and the drain's leak checks decide."""
        cfg = self.runner.config
        sampler = self.samplers.get("candidate")
        if sampler is None:
            return None
        served = candidate.state.trial.settle_requests + sum(
            b.load.requests for b in self.blocks if b.side == "candidate" and b.load is not None
        )
        return leaks.evident_growth(
            list(sampler.heap),
            list(sampler.goroutines),
            served,
            retained_limit=cfg.threshold("retained_per_request").max,
            goroutine_limit=cfg.threshold("goroutine_growth").max,
        )

    def _block(self, t: _TrialRun, index: int, pair: int, t0: float) -> Block:
        """One block: the side alone under load, its counters read just before and after."""
        block = self.runner.config.compare.block
        meter = CostMeter(t.source, t.service.pid)
        start = meter.read()
        began = time.monotonic()
        result = t.load(block, self.runner.offered_rate or 0.0, f"block-{index + 1}")
        end = meter.read() if t.service.exited() is None else None
        elapsed = time.monotonic() - began
        cost = meter.window(start, end, elapsed) if end is not None else None
        return Block(
            index=index,
            pair=pair,
            side=t.state.trial.side,
            load=result,
            cost=cost,
            seconds=elapsed,
            started=began - t0,
        )

    # -- each side's Trial ----------------------------------------------------------------

    def _stop_samplers(self, *, cut: bool) -> None:
        """Stop both sides' samplers (once) and keep their series, profile and notes."""
        runner = self.runner
        samplers, self.samplers = self.samplers, {}
        for side, sampler in samplers.items():
            sampler.stop(cut=cut)
            state = runner.paired[side]
            profile = sampler.cpu_profile_path
            state.trial = dataclasses.replace(
                state.trial,
                series=series(sampler),
                rss_peak=max(state.trial.rss_peak or 0, sampler.rss_peak or 0) or None,
                cpu_profile=rel(profile, runner.report_dir) if profile is not None else None,
            )
            if sampler.errors:
                state.notes.append(f"{sampler.errors} runtime samples could not be read")
            if sampler.cpu_profile_error:
                state.notes.append(f"no CPU profile of the blocks: {sampler.cpu_profile_error}")

    def _finish(self) -> None:
        """Each side's Trial from the blocks measured, whatever ended the run."""
        runner = self.runner
        for side in SIDES:
            state = runner.paired[side]
            mine = [b for b in self.blocks if b.side == side]
            if mine:
                state.trial = dataclasses.replace(
                    state.trial,
                    load=merge_loads([b.load for b in mine if b.load is not None]),
                    cost=sum_costs([b.cost for b in mine]),
                    measure_seconds=sum(b.seconds for b in mine),
                )


def _look_line(decision: sequential.Decision) -> str:
    gated = [c for c in decision.comparisons if c.gated]
    parts = []
    for c in gated:
        change = f"{c.change * 100:+.1f}%" if c.change is not None else "?"
        parts.append(f"{c.metric} {change} {c.verdict}")
    state = "stop" if decision.done else "continue"
    return f"after {decision.pairs} pairs: {'; '.join(parts)} -> {state}"


def merge_loads(results: Sequence[LoadResult]) -> LoadResult | None:
    """Several blocks' load results as one: counts summed, histograms merged, seconds in order."""
    if not results:
        return None
    first = results[0]
    buckets: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    seconds: list[SecondStat] = []
    offset = 0
    for r in results:
        buckets.update(dict(r.latency.buckets))
        errors.update(r.errors)
        codes.update(r.status_codes)
        seconds.extend(dataclasses.replace(s, t=s.t + offset) for s in r.seconds)
        offset += max(1, math.ceil(r.duration_s))
    counted = [r.latency for r in results if r.latency.count]
    latency = Histogram(
        growth=first.latency.growth,
        buckets=tuple(sorted(buckets.items())),
        count=sum(h.count for h in counted),
        min_ns=min((h.min_ns for h in counted), default=0),
        max_ns=max((h.max_ns for h in counted), default=0),
        sum_ns=sum(h.sum_ns for h in counted),
    )
    duration = sum(r.duration_s for r in results)
    requests = sum(r.requests for r in results)
    return dataclasses.replace(
        first,
        duration_s=duration,
        requests=requests,
        ok=sum(r.ok for r in results),
        errors=dict(errors),
        status_codes=dict(codes),
        achieved_rate=requests / duration if duration > 0 else 0.0,
        planned=sum(r.planned for r in results),
        latency=latency,
        seconds=tuple(seconds),
        first_error=next((r.first_error for r in results if r.first_error), ""),
    )


def sum_costs(costs: Sequence[WindowCost | None]) -> WindowCost | None:
    """The blocks' counter deltas summed, as one window from zero (None: a block had none)."""
    if not costs or any(c is None for c in costs):
        return None
    known = [c for c in costs if c is not None]

    def total(field: str) -> float | None:
        deltas: list[float] = []
        for c in known:
            a, b = getattr(c.start, field), getattr(c.end, field)
            if a is None or b is None:
                return None
            deltas.append(float(b) - float(a))
        return sum(deltas)

    first = known[0]
    end = Counters(
        cpu_seconds=total("cpu_seconds"),
        alloc_bytes=total("alloc_bytes"),
        alloc_objects=total("alloc_objects"),
        gc_cycles=total("gc_cycles"),
    )
    start = Counters(**{f: (0.0 if getattr(end, f) is not None else None) for f in _FIELDS})
    return WindowCost(
        start=start,
        end=end,
        seconds=sum(c.seconds for c in known),
        cpu_source=first.cpu_source,
        alloc_source=first.alloc_source,
        cpu_coarse=first.cpu_coarse,
    )


_FIELDS = ("cpu_seconds", "alloc_bytes", "alloc_objects", "gc_cycles")
