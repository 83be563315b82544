"""Small hand-made models for the pure parts (analysis, judge, reporters), and sums over a
decoded profile that tests compare with what they built or with `go tool pprof`."""

from __future__ import annotations

import random
from collections import Counter

from leakgate import pprof
from leakgate.model import Checkpoint, Histogram, LoadResult, Series, ServiceStatus, Trial


def histogram(latencies_ms: list[float], growth: float = 1.02) -> Histogram:
    import math

    counts: dict[int, int] = {}
    for ms in latencies_ms:
        ns = ms * 1e6
        i = math.floor(math.log(ns) / math.log(growth))
        counts[i] = counts.get(i, 0) + 1
    ns_values = [int(ms * 1e6) for ms in latencies_ms]
    return Histogram(
        growth=growth,
        buckets=tuple(sorted(counts.items())),
        count=len(latencies_ms),
        min_ns=min(ns_values),
        max_ns=max(ns_values),
        sum_ns=sum(ns_values),
    )


def load(
    requests: int = 100_000,
    errors: int = 0,
    p_ms: float = 2.0,
    rate: float = 5000.0,
    target_rate: float = 5000.0,
) -> LoadResult:
    rng = random.Random(1)
    lat = [rng.uniform(0.5 * p_ms, 1.05 * p_ms) for _ in range(2000)]
    return LoadResult(
        tool="builtin",
        mode="open",
        connections=16,
        target_rate=target_rate,
        duration_s=20.0,
        requests=requests,
        ok=requests - errors,
        errors={"status": errors} if errors else {},
        achieved_rate=rate,
        latency=histogram(lat),
    )


def heap_series(
    start: float,
    per_second: float,
    seconds: int = 20,
    noise: float = 20_000,
    fill_until: int = 0,
    seed: int = 7,
) -> Series:
    """A live-heap series: grows `per_second`; or, with fill_until, grows then stays flat."""
    rng = random.Random(seed)
    points = []
    for t in range(seconds):
        grown = per_second * (min(t, fill_until) if fill_until else t)
        points.append((float(t), start + grown + rng.gauss(0, noise)))
    return Series("heap_live", "bytes", tuple(points))


def trial(
    *,
    heap_before: int = 10_000_000,
    heap_after: int = 10_000_000,
    goroutines_before: int = 12,
    goroutines_after: int = 12,
    requests: int = 100_000,
    series: Series | None = None,
    died: bool = False,
    index: int = 0,
    errors: int = 0,
    p_ms: float = 2.0,
) -> Trial:
    checkpoints = {
        "warmup": Checkpoint(
            "warmup",
            heap_alloc=heap_before,
            goroutines=goroutines_before,
            goroutines_stable=True,
            heap_profile="trial-1/heap-warmup.pb.gz",
        ),
        "drain": Checkpoint(
            "drain",
            heap_alloc=heap_after,
            goroutines=goroutines_after,
            goroutines_stable=True,
            heap_profile="trial-1/heap-drain.pb.gz",
        ),
    }
    return Trial(
        index=index,
        load=load(requests=requests, errors=errors, p_ms=p_ms),
        series={"heap_live": series or heap_series(heap_before, 0.0)},
        checkpoints=checkpoints,
        service=ServiceStatus(
            pid=1,
            died=died,
            exit_code=2 if died else None,
            phase="load" if died else None,
            log_tail="panic: boom" if died else "",
        ),
    )


# -- pprof profiles ---------------------------------------------------------------------------


def sample_totals(profile: pprof.Profile) -> dict[str, int]:
    """Each sample type's values summed over every sample (`go tool pprof`'s total)."""
    sums = [0] * len(profile.sample_types)
    for _, values in profile.samples:
        for i, v in enumerate(values):
            sums[i] += v
    return {name: total for (name, _), total in zip(profile.sample_types, sums, strict=True)}


def by_function(
    profile: pprof.Profile, sample_type: str, *, cumulative: bool = False
) -> Counter[str]:
    """Value per function: flat (the leaf frame's, as `go tool pprof -top` lists it) or
    cumulative (anywhere in the stack)."""
    out: Counter[str] = Counter()
    for stack, value in profile.by_stack(sample_type).items():
        frames = profile.frames(stack)
        if not frames:
            continue
        if cumulative:
            for name in {f.function for f in frames}:
                out[name] += value
        else:
            out[frames[0].function] += value
    return out
