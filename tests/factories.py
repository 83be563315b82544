"""Small hand-made models for the pure parts (analysis, judge, reporters), and hand-made
inputs for the parsers: pprof profiles (through profile.proto, or wire bytes written by hand)
with the sums tests compare a decoded one with, wrk's and the load generator's result JSON."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from leakgate import pprof
from leakgate.config import Config
from leakgate.judge import judge
from leakgate.model import (
    Checkpoint,
    Counters,
    Environment,
    Histogram,
    Holder,
    LeakSite,
    LeakSites,
    LoadResult,
    RunRecord,
    Series,
    ServiceStatus,
    Trial,
    Verdict,
    WindowCost,
)
from leakgate.proto import profile_pb2


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
    cpu_us: float | None = None,
    alloc_bytes: float | None = None,
    allocs: float | None = None,
) -> Trial:
    """A trial of `requests` requests; with `cpu_us`, `alloc_bytes` and `allocs` (per request)
    its measure window's counters say that is what each request cost."""
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
    cost = None
    if cpu_us is not None or alloc_bytes is not None or allocs is not None:
        spent = Counters(
            cpu_seconds=None if cpu_us is None else 12.5 + cpu_us * 1e-6 * requests,
            alloc_bytes=None if alloc_bytes is None else 2e9 + alloc_bytes * requests,
            alloc_objects=None if allocs is None else 3e7 + allocs * requests,
            gc_cycles=40 + requests // 2000,
        )
        started = Counters(
            cpu_seconds=None if cpu_us is None else 12.5,
            alloc_bytes=None if alloc_bytes is None else 2e9,
            alloc_objects=None if allocs is None else 3e7,
            gc_cycles=40,
        )
        cost = WindowCost(
            start=started,
            end=spent,
            seconds=20.0,
            cpu_source="getrusage user + system (agent)",
            alloc_source="runtime/metrics /gc/heap/allocs:bytes, :objects + tiny/allocs (agent)",
        )
    return Trial(
        index=index,
        cost=cost,
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

HEAP_TYPES = ("inuse_objects", "inuse_space")
Samples = Sequence[tuple[Sequence[str], Sequence[int]]]  # (function names leaf first, values)


def profile_message(
    samples: Samples,
    sample_types: Sequence[str] = HEAP_TYPES,
    *,
    file: str | None = None,
    line: int = 10,
) -> profile_pb2.Profile:
    """A profile whose stacks are lists of function names, leaf first: one location (of one
    line, `line`) per function, in `file` (by default /src/<package>.go). A *_space sample type
    counts bytes, any other a count. Strings are numbered in the order they are first used."""
    p = profile_pb2.Profile()
    strings = [""]

    def s(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    for name in sample_types:
        p.sample_type.add(type=s(name), unit=s("bytes" if "space" in name else "count"))
    ids: dict[str, int] = {}
    for stack, values in samples:
        for fn in stack:
            if fn not in ids:
                ids[fn] = len(ids) + 1
                where = file if file is not None else f"/src/{fn.split('.')[0]}.go"
                p.function.add(id=ids[fn], name=s(fn), filename=s(where))
                p.location.add(id=ids[fn], line=[profile_pb2.Line(function_id=ids[fn], line=line)])
        p.sample.add(location_id=[ids[fn] for fn in stack], value=values)
    p.string_table.extend(strings)
    return p


def profile_bytes(
    samples: Samples,
    sample_types: Sequence[str] = HEAP_TYPES,
    *,
    file: str | None = None,
    line: int = 10,
    compress: bool = True,
) -> bytes:
    """profile_message's profile as a service serves it: protobuf, gzipped (with no timestamp,
    as Go writes it, so the same profile is the same bytes) unless `compress` is False."""
    raw = profile_message(samples, sample_types, file=file, line=line).SerializeToString()
    return gzip.compress(raw, mtime=0) if compress else raw


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


# Wire bytes written by hand, for what profile.proto cannot express (bombs, padded tags).


def varint(value: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wire_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): an embedded message, a string, a packed list."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# One tiny sample, as a top-level `sample` field (2): location 1, value 1, 8 bytes in all.
TINY_SAMPLE = b"\x12\x06\x0a\x01\x01\x12\x01\x01"
# One more entry of another top-level table, each 4 bytes: id 2 (repeats are refused later, but a
# bomb of them must be refused by its count, before anything is decoded).
TINY_ENTRY = {
    "mapping": b"\x1a\x02\x08\x02",
    "location": b"\x22\x02\x08\x02",
    "function": b"\x2a\x02\x08\x02",
    "string": b"\x32\x02ab",
    "comment": b"\x68\x01",  # an unpacked `comment` entry: one of the "other" fields
}


# -- load tools' results ----------------------------------------------------------------------


def wrk_percentiles(fn: Callable[[float], float] | None = None) -> list[list[float]]:
    """1000 percentile points p = 0.1 .. 100 with a long-tailed latency in microseconds."""
    fn = fn or (lambda p: 50 + 2000 * (p / 100) ** 6 + (p // 10) * 3)
    return [[round(i / 10, 1), float(int(fn(i / 10)))] for i in range(1, 1001)]


def wrk_result(**over: Any) -> dict[str, Any]:
    """The JSON leakgate's wrk script prints after its marker; `over` replaces keys (a dict
    value updates a dict)."""
    data: dict[str, Any] = {
        "version": 1,
        "threads": 2,
        "connections": 8,
        "connections_requested": 8,
        "requests": 10_000,
        "duration_us": 2_000_000,
        "bytes": 123_456,
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "status_check": {"mode": "none", "responses": 0, "unexpected": 0},
        "status_codes": {},
        "latency": {
            "min_us": 40,
            "max_us": 2950,
            "mean_us": 180.5,
            "stdev_us": 210.25,
            "samples": 900,
            "co_interval_us": 1600,
            "percentiles": wrk_percentiles(),
        },
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# The bundled load generator's result file: 100 requests in one second, all 200.
LOADGEN_RESULT = json.dumps(
    {
        "schema_version": 1,
        "tool": "leakgate-loadgen",
        "mode": "open",
        "connections": 16,
        "target_rate": 100.0,
        "duration_s": 1.0,
        "requests": 100,
        "ok": 100,
        "errors": {"connect": 0, "timeout": 0, "status": 0, "other": 0},
        "status_codes": {"200": 100},
        "achieved_rate": 100.0,
        "planned": 100,
        "latency": {
            "unit": "ns",
            "growth": 1.02,
            "count": 100,
            "min": 1000000,
            "max": 2000000,
            "sum": 150000000,
            "buckets": [[697, 50], [732, 50]],
        },
        "seconds": [{"t": 0, "requests": 100, "errors": 0}],
    }
).encode()


# -- the golden files' run: one fixed compare RunRecord -------------------------------------


def fixed_record() -> RunRecord:
    """5 baseline and 5 candidate trials; the candidate leaks 300 B/request and is 20% slower."""
    trials: list[Trial] = []
    for i in range(10):
        side = "baseline" if i % 2 == 0 else "candidate"
        leak = 30_000_000 if side == "candidate" else 20_000 * (i % 3)
        t = trial(
            index=i,
            heap_before=10_000_000,
            heap_after=10_000_000 + leak,
            series=heap_series(10_000_000, leak / 20, seed=i),
            goroutines_after=12 + (i % 2),
            p_ms=2.0 * (1.2 if side == "candidate" else 1.0) * (1 + i / 100),
            # 3% more CPU (within +10%) and 16 KiB more garbage per request (beyond it)
            cpu_us=(41.2 if side == "candidate" else 40.0) * (1 + i / 1000),
            alloc_bytes=(9000.0 + (16384 if side == "candidate" else 0)) * (1 + i / 10000),
            allocs=120.0 + (1 if side == "candidate" else 0) + i / 100,
        )
        trials.append(dataclasses.replace(t, side=side, offered_rate=5000.0))
    env = Environment(
        leakgate_version="0.1.0",
        python_version="3.11.7",
        go_version="go1.26.8",
        goos="linux",
        goarch="amd64",
        gomaxprocs=1,
        num_cpu=2,
        cpu_model="AMD EPYC",
        git_revision="0123456789abcdef0123456789abcdef01234567",
        service_cpus=(1,),
        loadgen_cpus=(0,),
    )
    return RunRecord(
        created="2026-11-27T08:00:00+00:00",
        package="/src/orders-service",
        command="compare",
        environment=env,
        trials=tuple(trials),
        base_revision="fedcba9876543210fedcba9876543210fedcba98",
        trial_order_seed=7,
    )


SITES = LeakSites(
    heap=(
        LeakSite(
            kind="heap",
            function="main.(*auditLog).record",
            file="/src/orders-service/audit.go",
            line=42,
            growth=140_000_000.0,
            objects=480_000,
            share=0.93,
            trials=5,
            caller="main.(*server).createOrder",
            stack=(
                "main.(*auditLog).record (audit.go:42)",
                "main.(*server).createOrder (orders.go:88)",
                "net/http.HandlerFunc.ServeHTTP (server.go:2286)",
            ),
            description="+133.5 MiB in 480,000 objects retained at main.(*auditLog).record "
            "(audit.go:42) called from main.(*server).createOrder (orders.go:88)",
        ),
        LeakSite(
            kind="heap",
            function="bufio.NewReaderSize",
            file="/usr/local/go/src/bufio/bufio.go",
            line=57,
            growth=9_000_000.0,
            objects=0,
            share=0.06,
            trials=3,
            description="+8.6 MiB retained at bufio.NewReaderSize (bufio.go:57)",
        ),
    ),
    heap_command="go tool pprof -diff_base trial-2/heap-warmup.pb.gz trial-2/heap-drain.pb.gz",
    holders=(
        Holder(
            kind="variable",
            name="main.auditEntries",
            growth=141_000_000,
            objects=480_100,
            retained=150_000_000,
            share=0.97,
            object_size=288,
            object_count=480_000,
            allocated_at="main.(*auditLog).record",
            trials=5,
            description="+134.5 MiB in 480,100 more objects kept alive by package variable "
            "main.auditEntries; most of it 480,000 objects of 288 B, allocated in "
            "main.(*auditLog).record",
        ),
        Holder(
            kind="goroutines",
            name="main.(*server).watch",
            growth=4_000_000,
            objects=1_000,
            goroutines=1_000,
            share=0.03,
            trials=2,
            description="+3.8 MiB in 1,000 more objects kept alive by the stacks of 1,000 "
            "goroutines in main.(*server).watch",
        ),
    ),
)


def fixed_verdict() -> tuple[Verdict, RunRecord]:
    record = fixed_record()
    return judge(record, Config(), sites=SITES), record


def fixed_cost_verdict() -> Verdict:
    """A compare run's verdict with cost profiles (in `.costs`): the candidate's audit log costs
    more CPU and allocates more per request (a grown stack), its order scan costs less (a shrunk
    one), a cache warm-up went away, JSON encoding stayed the same."""
    from leakgate.model import CostProfile, CostSite, CostSites, FlameStack

    serve = ("net/http.(*conn).serve", "net/http.serverHandler.ServeHTTP")
    create = (*serve, "main.(*server).createOrder")
    orders = (*serve, "main.(*server).listOrders")
    cpu_stacks = (
        FlameStack((*create, "main.(*auditLog).record", "fmt.Sprintf"), 9.0e-6, 1.1e-6),
        FlameStack((*create, "main.(*auditLog).record"), 2.0e-6, 0.4e-6),
        FlameStack((*create, "encoding/json.Marshal"), 6.0e-6, 6.0e-6),
        FlameStack((*orders, "main.(*store).scan", "sort.Slice"), 2.0e-6, 8.0e-6),
        FlameStack((*orders, "encoding/json.Marshal"), 4.0e-6, 4.05e-6),
        FlameStack((*serve, "main.(*cache).warm"), 0.0, 1.5e-6),
        FlameStack(("net/http.(*conn).serve", "net/http.(*conn).readRequest"), 2.5e-6, 2.5e-6),
        FlameStack(("runtime.gcBgMarkWorker", "runtime.gcDrain"), 3.0e-6, 2.4e-6),
    )
    cpu = CostProfile(
        kind="cpu",
        unit="s/request",
        sites=(
            CostSite("main.(*auditLog).record", "/src/orders-service/audit.go", 42, 11e-6, 1.5e-6),
            CostSite("main.(*store).scan", "/src/orders-service/store.go", 120, 2e-6, 8e-6),
            CostSite("main.(*cache).warm", "/src/orders-service/cache.go", 31, 0.0, 1.5e-6),
            CostSite("main.(*server).createOrder", "/src/orders-service/orders.go", 88, 6e-6, 6e-6),
        ),
        flame=cpu_stacks,
        commands=("go tool pprof -diff_base baseline-cpu.pb.gz candidate-cpu.pb.gz",),
        candidate_total=sum(s.candidate for s in cpu_stacks),
        baseline_total=sum(s.baseline for s in cpu_stacks),
    )
    alloc_stacks = (
        FlameStack((*create, "main.(*auditLog).record", "fmt.Sprintf"), 2048.0, 256.0),
        FlameStack((*create, "encoding/json.Marshal"), 1024.0, 1024.0),
        FlameStack((*orders, "main.(*store).scan"), 512.0, 4096.0),
    )
    alloc = CostProfile(
        kind="alloc",
        unit="B/request",
        sites=(
            CostSite(
                "main.(*store).scan",
                "/src/orders-service/store.go",
                120,
                512.0,
                4096.0,
                candidate_objects=2.0,
                baseline_objects=16.0,
            ),
            CostSite(
                "main.(*auditLog).record",
                "/src/orders-service/audit.go",
                42,
                2048.0,
                256.0,
                candidate_objects=32.0,
                baseline_objects=4.0,
            ),
        ),
        flame=alloc_stacks,
        commands=(
            "go tool pprof -sample_index=alloc_space -diff_base baseline-heap.pb.gz "
            "candidate-heap.pb.gz",
        ),
        candidate_total=3584.0,
        baseline_total=5376.0,
    )
    costs = CostSites(profiles=(cpu, alloc), notes=("trial 3: the CPU profile was unreadable",))
    return Verdict("fail", costs=costs)


# --- Go heap dumps (runtime/debug.WriteHeapDump, "go1.7 heap dump") ------------------------------


@dataclass
class DumpObject:
    address: int
    size: int
    pointers: dict[int, int] = field(default_factory=dict)  # offset -> address pointed to


@dataclass
class DumpGoroutine:
    goid: int
    frames: list[tuple[str, dict[int, int]]]  # innermost first: (function, offset -> pointer)
    reason: str = "chan send"
    defers: list[int] = field(default_factory=list)  # the deferred calls' closures (funcvals)


def _dstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return varint(len(raw)) + raw


def _contents(size: int, pointers: dict[int, int]) -> bytes:
    body = bytearray(size)
    for offset, target in pointers.items():
        body[offset : offset + 8] = target.to_bytes(8, "little")
    return _dstr(bytes(body))


def _fields(pointers: dict[int, int]) -> bytes:
    return b"".join(varint(1) + varint(offset) for offset in sorted(pointers)) + varint(0)


def _memory(size: int, pointers: dict[int, int]) -> bytes:
    return _contents(size, pointers) + _fields(pointers)


def heap_dump_bytes(
    objects: Sequence[DumpObject] = (),
    *,
    data: tuple[int, int, dict[int, int]] = (0x500000, 64, {}),  # address, size, pointers
    bss: tuple[int, int, dict[int, int]] = (0x600000, 64, {}),
    goroutines: Sequence[DumpGoroutine] = (),
    samples: Sequence[tuple[int, Sequence[tuple[str, str, int]]]] = (),  # address, stack
    heap_alloc: int = 0,
) -> bytes:
    """A heap dump as the Go runtime writes one, record by record (runtime/heapdump.go)."""
    out = bytearray(b"go1.7 heap dump\n")
    out += varint(6) + varint(0) + varint(8) + varint(0xC000000000) + varint(0xC004000000)
    out += _dstr("amd64") + _dstr("go1.26.0") + varint(2)
    for o in objects:
        out += varint(1) + varint(o.address) + _memory(o.size, o.pointers)
    for g in goroutines:
        out += varint(4) + varint(0xC000100000 + g.goid) + varint(0) + varint(g.goid)
        out += varint(0) + varint(4) + varint(0) + varint(0) + varint(0) + _dstr(g.reason)
        out += varint(0) * 4
        for depth, (function, pointers) in enumerate(g.frames):
            size = max([*pointers, 0]) + 8 if pointers else 16
            out += varint(5) + varint(0x7000 + depth) + varint(depth) + varint(0)
            out += _contents(size, pointers)
            out += varint(0x401000) + varint(0x401010) + varint(0x401010) + _dstr(function)
            out += _fields(pointers)
        for funcval in g.defers:  # defer records name their goroutine by its G's address
            out += varint(14) + varint(0xC000200000) + varint(0xC000100000 + g.goid)
            out += varint(0x7000) + varint(0x401000) + varint(funcval) + varint(0x401100)
            out += varint(0)
    for tag, (address, size, pointers) in ((12, data), (13, bss)):
        out += varint(tag) + varint(address) + _memory(size, pointers)
    out += varint(10) + b"".join(varint(heap_alloc if i == 6 else 0) for i in range(281))
    for i, (address, stack) in enumerate(samples):
        bucket = 0x900000 + i
        out += varint(16) + varint(bucket) + varint(0) + varint(len(stack))
        for function, file, line in stack:
            out += _dstr(function) + _dstr(file) + varint(line)
        out += varint(1) + varint(0)
        out += varint(17) + varint(address) + varint(bucket)
    out += varint(0)
    return bytes(out)
