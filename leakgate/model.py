"""The data every stage reads: trials, series, histograms, checks, verdicts, the RunRecord.

Everything is a frozen dataclass. `RunRecord` is the one stored artifact (a baseline is a saved
RunRecord); it carries `schema_version` and round-trips through JSON without NaN or Infinity.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

SCHEMA_VERSION = 1

CheckStatus = Literal["pass", "fail", "warn", "no_data", "error"]
VerdictStatus = Literal["pass", "fail", "error", "interrupted"]
# Latency histograms' bucket width: bucket i holds [1.02^i, 1.02^(i+1)) ns, read back within 1%.
HISTOGRAM_GROWTH = 1.02


@dataclass(frozen=True, slots=True)
class Histogram:
    """Log-bucketed latency histogram: bucket i holds values in [growth^i, growth^(i+1)) ns.

    A bucket is read back as growth^(i+0.5), so with growth 1.02 every value read back is within
    1% of the true one.
    """

    growth: float = HISTOGRAM_GROWTH
    buckets: tuple[tuple[int, int], ...] = ()
    count: int = 0
    min_ns: int = 0
    max_ns: int = 0
    sum_ns: int = 0

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) in seconds, or None when there are no samples."""
        if self.count <= 0 or not self.buckets:
            return None
        if not (math.isfinite(self.growth) and self.growth > 1.0):
            return None  # a damaged record: no bucket can be read back
        rank = max(1, math.ceil(q / 100.0 * self.count))
        seen = 0
        for index, n in self.buckets:
            seen += n
            if seen >= rank:
                try:
                    value_ns = float(self.growth ** (index + 0.5))
                except OverflowError:
                    return None
                value_ns = min(max(value_ns, float(self.min_ns)), float(self.max_ns or value_ns))
                return value_ns / 1e9
        return self.max_ns / 1e9


def bucket_index(ns: float) -> int:
    """The HISTOGRAM_GROWTH bucket of a latency in ns: floor(ln(ns)/ln(1.02)), 0 below 1 ns."""
    if ns < 1:
        return 0
    return math.floor(math.log(ns) / math.log(HISTOGRAM_GROWTH))


@dataclass(frozen=True, slots=True)
class SecondStat:
    t: int
    requests: int
    errors: int
    p50: float | None = None  # seconds
    p95: float | None = None
    p99: float | None = None


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What a load driver reports for one phase (warm-up or measure) of one trial."""

    tool: str
    mode: str  # "closed" | "open"
    connections: int
    target_rate: float  # 0 for closed loop
    duration_s: float
    requests: int
    ok: int
    errors: Mapping[str, int] = field(default_factory=dict)
    status_codes: Mapping[str, int] = field(default_factory=dict)
    achieved_rate: float = 0.0
    planned: int = 0
    latency: Histogram = field(default_factory=Histogram)
    seconds: tuple[SecondStat, ...] = ()
    first_error: str = ""

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float | None:
        return self.error_count / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class Series:
    """Samples over the measure window: (seconds since the window opened, value)."""

    name: str
    unit: str
    points: tuple[tuple[float, float], ...] = ()

    def values(self) -> list[float]:
        return [v for _, v in self.points]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The runtime at rest: after a forced GC, with load stopped and connections closed."""

    label: str  # "warmup" | "drain"
    heap_alloc: int | None = None
    heap_objects: int | None = None
    goroutines: int | None = None
    goroutines_stable: bool = False
    gc_cycles: int | None = None
    gc_cpu_seconds: float | None = None
    rss: int | None = None
    heap_profile: str | None = None  # paths relative to the report directory
    goroutine_profile: str | None = None
    goroutine_text: str | None = None
    goroutineleak_profile: str | None = None
    heap_dump: str | None = None  # runtime/debug.WriteHeapDump, after the same forced GCs
    heap_dump_pause: float | None = None  # seconds the dump stopped the world
    symbols: str | None = None  # the binary's data symbols, to name the dump's variables
    source: str = "agent"


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters of the service process, read at one instant (None: not available)."""

    cpu_seconds: float | None = None  # user + system CPU time since the process started
    alloc_bytes: float | None = None  # heap bytes allocated since start (MemStats.TotalAlloc)
    alloc_objects: float | None = None  # heap objects allocated since start
    gc_cycles: float | None = None  # completed GC cycles, forced ones included


@dataclass(frozen=True, slots=True)
class WindowCost:
    """The counters read just before the measure window's load started and just after it ended:
    what the service spent serving the window's requests (analysis.py divides by them).

    `cpu_source` and `alloc_source` say where each figure was read ("getrusage (agent)",
    "cgroup cpu.stat", ...); `cpu_coarse` marks a source counted in 10 ms clock ticks.
    """

    start: Counters = field(default_factory=Counters)
    end: Counters = field(default_factory=Counters)
    seconds: float = 0.0  # between the two readings
    cpu_source: str = ""
    alloc_source: str = ""
    cpu_coarse: bool = False


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    pid: int | None = None
    died: bool = False  # exited or was killed while leakgate still needed it
    exit_code: int | None = None
    signal: str | None = None
    reason: str = ""  # attach mode: how the service was seen to end ("stopped answering ...")
    phase: str | None = None  # when it died: "warmup", "load", "drain", ...
    log_tail: str = ""
    log_file: str | None = None


@dataclass(frozen=True, slots=True)
class Trial:
    index: int
    side: str = "candidate"
    warmup_load: LoadResult | None = None
    load: LoadResult | None = None
    series: Mapping[str, Series] = field(default_factory=dict)
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    rss_peak: int | None = None
    service: ServiceStatus = field(default_factory=ServiceStatus)
    measure_seconds: float = 0.0
    offered_rate: float | None = None
    notes: tuple[str, ...] = ()
    trace: str | None = None  # runtime/trace taken while goroutines grew (report-dir relative)
    cost: WindowCost | None = None  # counters bracketing the measure window
    cpu_profile: str | None = None  # CPU profile of the measure window (report-dir relative)
    # Requests of a paired run's unmeasured settle load, served between the warm-up checkpoint
    # and the first block: in the checkpoints' and the profiles' window, not in `load`.
    settle_requests: int = 0


@dataclass(frozen=True, slots=True)
class Block:
    """One short block of a paired compare: one side alone under load at the offered rate,
    with the counters read just before and just after it (`cost`)."""

    index: int  # position in the run's order, from 0
    pair: int  # the pair it belongs to, from 0: blocks 2k and 2k+1
    side: str
    load: LoadResult | None = None
    cost: WindowCost | None = None
    seconds: float = 0.0
    started: float = 0.0  # seconds since the first block started


@dataclass(frozen=True, slots=True)
class Environment:
    leakgate_version: str = ""
    python_version: str = ""
    go_version: str = ""
    goos: str = ""
    goarch: str = ""
    gomaxprocs: int | None = None
    num_cpu: int | None = None
    cpu_model: str = ""
    hostname: str = ""
    git_revision: str = ""
    git_dirty: bool = False
    service_cpus: tuple[int, ...] = ()
    loadgen_cpus: tuple[int, ...] = ()
    heap_live_source: str = ""
    go_module: str = ""  # the module path of the service's main package (from go.mod)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One gate run: everything measured, nothing judged. Reports re-render from this alone."""

    schema_version: int = SCHEMA_VERSION
    created: str = ""
    package: str = ""
    command: str = "check"
    config: Mapping[str, Any] = field(default_factory=dict)
    environment: Environment = field(default_factory=Environment)
    trials: tuple[Trial, ...] = ()
    base_revision: str = ""  # compare --base: the commit the baseline side was built from
    trial_order_seed: int | None = None
    # "trials": fresh processes a side, one value per trial; "paired": one process a side,
    # measured in alternating `blocks`, one value per pair of blocks.
    design: str = "trials"
    blocks: tuple[Block, ...] = ()
    # paired: why the blocks stopped before the sequential decision did ("" when they did
    # not): a leak the candidate's series made plain (leaks.evident_growth)
    stopped_early: str = ""
    interrupted: bool = False
    error: str | None = None

    def to_json(self) -> str:
        # No indent: json's C encoder only runs without one, and records can be megabytes.
        return json.dumps(to_plain(self), allow_nan=False, separators=(",", ":")) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a run record is a JSON object")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {version!r} is not one this leakgate reads (<= {SCHEMA_VERSION})"
            )
        return _build(cls, data)


@dataclass(frozen=True, slots=True)
class Check:
    """One judged question, e.g. "does the live heap grow per request?"."""

    name: str
    status: CheckStatus
    summary: str
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    evidence: tuple[str, ...] = ()
    leak_sites: tuple[LeakSite, ...] = ()  # failing leak checks: the top sites, worst first
    holders: tuple[Holder, ...] = ()  # failing leak checks: who keeps the growth alive


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    """One metric of the side-by-side table: baseline against candidate, one value per trial."""

    metric: str
    label: str
    unit: str
    baseline_median: float | None
    candidate_median: float | None
    change: float | None  # signed fraction in the worse direction: +0.12 = 12% worse
    p_value: float | None
    n_baseline: int
    n_candidate: int
    verdict: str  # pass | fail | inconclusive | too_few | no_data | measured
    symbol: str  # ✓ ✗ ~ ?
    gated: bool
    reason: str
    # the coefficient of variation over each side's trials (analysis.spread)
    baseline_spread: float | None = None
    candidate_spread: float | None = None
    # paired compares: the estimated change's 95% interval (worse direction) and the pairs
    interval_low: float | None = None
    interval_high: float | None = None
    pairs: int | None = None


@dataclass(frozen=True, slots=True)
class LeakSite:
    """Where the live heap or the goroutines grew between the warm-up and drain checkpoints.

    `function`, `file` and `line` name the first frame from the leaf that is the service's own
    code (not the runtime or the standard library); `stack` holds the frames as
    "function (file:line)", leaf first. Figures are summed over the trials where the site grew.
    """

    kind: Literal["heap", "goroutine"]
    function: str
    file: str
    line: int
    growth: float  # bytes of inuse_space (heap) or goroutines
    objects: int | None = None  # inuse_objects growth (heap only)
    share: float = 0.0  # of the total growth of its kind, 0..1
    state: str = ""  # goroutines: what they are blocked in ("chan send", "select", ...)
    trials: int = 0  # trials in which this site grew
    leaked: bool = False  # goroutines: also in the runtime's goroutineleak profile
    caller: str = ""  # the service's own function that called `function`, when another one
    stack: tuple[str, ...] = ()
    description: str = ""  # one line a developer can act on


@dataclass(frozen=True, slots=True)
class HolderPath:
    """One node of the tree of what grew under a holder: the sizes of the objects from the root
    down to it (a chain of same-size objects is one step), the net bytes added in its subtree,
    and the objects added at the node itself."""

    sizes: tuple[int, ...]
    growth: int  # bytes, the subtree's
    objects: int  # at this node
    own: int = 0  # bytes at this node (objects of mixed sizes where the tree's depth is cut)


@dataclass(frozen=True, slots=True)
class Holder:
    """What keeps grown live heap alive, from the heap dumps at warm-up and drain: a package
    variable, the stacks of the goroutines running one function, or a finalizer. Figures are the
    growth of what it retains (nearest holder first), summed over the trials where it grew."""

    kind: str  # "variable" | "goroutines" | "finalizer" | "runtime"
    name: str  # main.auditLog, or the function whose frames hold it
    growth: int  # bytes
    objects: int
    retained: int = 0  # bytes it retained at drain
    share: float = 0.0  # of the growth of all holders, 0..1
    goroutines: int = 0  # kind goroutines: how many run the function at drain
    goroutines_added: int = 0  # ... and how many more than at warm-up
    object_size: int = 0  # the object size that added the most bytes
    object_count: int = 0  # how many objects of that size were added
    allocated_at: str = ""  # the sampled objects' allocation site, its first own function
    pinned: int = 0  # bytes of the growth in large objects kept whole for a small part of them
    pinned_view: int = 0  # ... the length of the slice most were seen through (0: an inner pointer)
    waiting: str = ""  # kind goroutines: what most of them are blocked in
    made_by: str = ""  # the package whose call from own code made the most sampled bytes
    made_share: float = 0.0  # ... its share of them, 0..1
    slice_array: int = 0  # bytes of one slice backing array that reaches most of the growth
    paths: tuple[HolderPath, ...] = ()  # the path shapes that grew most
    trials: int = 0
    description: str = ""


@dataclass(frozen=True, slots=True)
class LeakSites:
    """The leak sites of one run's candidate trials, with the profiles they came from."""

    heap: tuple[LeakSite, ...] = ()
    goroutines: tuple[LeakSite, ...] = ()
    heap_command: str = ""  # `go tool pprof -diff_base ...` for the trial shown
    goroutine_command: str = ""
    trace: str | None = None  # runtime/trace file captured while goroutines grew
    notes: tuple[str, ...] = ()  # profiles that could not be read, and why
    holders: tuple[Holder, ...] = ()  # who keeps the grown heap alive (heap dumps), most first


@dataclass(frozen=True, slots=True)
class CostSite:
    """One function's cost per request on each side of a comparison: CPU seconds, or heap bytes
    and objects allocated. `function` is the first frame from the leaf that is the service's own
    code (the standard library and the runtime are charged to their caller); `baseline` is None
    where only one side was profiled (a plain check, or a stored baseline)."""

    function: str
    file: str
    line: int
    candidate: float  # per request: seconds (cpu) or bytes (alloc)
    baseline: float | None = None
    candidate_objects: float | None = None  # alloc only: objects per request
    baseline_objects: float | None = None

    @property
    def change(self) -> float:
        """candidate - baseline per request (the candidate alone where there is no baseline)."""
        return self.candidate - (self.baseline or 0.0)


@dataclass(frozen=True, slots=True)
class FlameStack:
    """One stack of a flame graph, root first, with its value per request on each side."""

    frames: tuple[str, ...]
    candidate: float
    baseline: float = 0.0


@dataclass(frozen=True, slots=True)
class CostProfile:
    """Where one kind of cost goes, per request: "cpu" (CPU profiles of the measure window),
    "alloc" (the heap profiles' alloc_space/alloc_objects from warm-up to drain) or "heap"
    (inuse_space growth: what a leak keeps), base against candidate where both were profiled."""

    kind: Literal["cpu", "alloc", "heap"]
    unit: str  # "s/request" | "B/request"
    sites: tuple[CostSite, ...] = ()  # the largest changes first
    flame: tuple[FlameStack, ...] = ()
    commands: tuple[str, ...] = ()  # `go tool pprof ...` that open the same profiles
    candidate_total: float | None = None  # per request, over every stack
    baseline_total: float | None = None

    @property
    def compared(self) -> bool:
        """Whether its sites compare two sides (a plain check profiles the candidate alone)."""
        return any(s.baseline is not None for s in self.sites)


@dataclass(frozen=True, slots=True)
class CostSites:
    """The run's cost profiles, in the order cpu, alloc, heap (each only where profiled)."""

    profiles: tuple[CostProfile, ...] = ()
    notes: tuple[str, ...] = ()

    def get(self, kind: str) -> CostProfile | None:
        return next((p for p in self.profiles if p.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: VerdictStatus
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = ()
    comparisons: tuple[ComparisonRow, ...] = ()
    # a run judged without a baseline: what each metric measured (no baseline fields)
    measured: tuple[ComparisonRow, ...] = ()
    leak_sites: LeakSites = field(default_factory=LeakSites)
    costs: CostSites = field(default_factory=CostSites)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status in ("fail", "error"))

    def to_json(self) -> str:
        return json.dumps(to_plain(self), indent=1, allow_nan=False) + "\n"


# -- JSON plumbing -----------------------------------------------------------------------------


def to_plain(obj: Any) -> Any:
    """Dataclasses -> dicts, tuples -> lists, non-finite floats -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


T = TypeVar("T")


def from_plain(cls: type[T], data: Any) -> T:
    """The inverse of to_plain for any of leakgate's dataclasses (a Config saved in a record)."""
    return _build(cls, data)


def _build(cls: type[T], data: Any) -> T:
    hints = typing.get_type_hints(cls)
    if not isinstance(data, dict):
        raise ValueError(f"expected an object for {cls.__name__}")
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{cls.__name__}.{f.name}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except (ValueError, TypeError):
                continue
        raise ValueError(f"{where}: unexpected value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: {value!r} is not one of {args}")
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value)
    if origin is tuple:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin in (Mapping, dict) or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object")
        if not args or args[1] is Any:
            return dict(value)
        return {str(k): _convert(args[1], v, where) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise ValueError(f"{where}: expected {tp.__name__}")
        return value
    raise ValueError(f"{where}: cannot read type {tp}")
