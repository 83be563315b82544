"""Where it leaks: diff each candidate trial's profiles from after warm-up to after drain.

Both checkpoints are taken at rest after a forced GC (`?gc=1`), so what the heap profile holds at
drain and did not hold at warm-up was retained by the load. Growth is attributed to the first
frame from the leaf that is the service's own code: a leak that allocates through
`runtime.mapassign` or `bytes.(*Buffer).grow` is reported at the function that called them.
Sites are grouped by function (a leak that shows at two lines of one function is one site, shown
at the line that grew most); goroutines by function and what the runtime frames say they are
blocked in. Figures are summed over the candidate trials; a site is reported with the number of
trials in which it grew, so one noisy trial does not outrank a leak every trial shows.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leakgate import heapdump, pprof, retention
from leakgate.metrics import sites_explaining
from leakgate.model import Checkpoint, Holder, LeakSite, LeakSites, RunRecord, Trial, Verdict
from leakgate.report import is_trial_dir
from leakgate.units import format_size

TOP = 10
# Growth below these is sampling noise of the heap profile (one sample per 512 KiB allocated by
# default) or connection churn, not a leak worth a line in a report.
MIN_HEAP_BYTES = 64 * 1024
MIN_GOROUTINES = 2

# Frames -> what a parked goroutine waits for. The first rule that matches any frame of the
# stack wins, so the sync primitive a developer called is named, not the runtime.semacquire1
# under it.
_STATES: tuple[tuple[str, str], ...] = (
    ("sync.(*Mutex).Lock", "sync.Mutex.Lock"),
    ("sync.(*RWMutex).", "sync.RWMutex"),
    ("sync.(*WaitGroup).Wait", "sync.WaitGroup.Wait"),
    ("sync.(*Cond).Wait", "sync.Cond.Wait"),
    ("time.Sleep", "sleep"),
    ("internal/poll.runtime_pollWait", "IO wait"),
    ("runtime.netpollblock", "IO wait"),
    ("runtime.chansend", "chan send"),
    ("runtime.chanrecv", "chan receive"),
    ("runtime.selectgo", "select"),
    ("runtime.block", "select (no cases)"),
    ("runtime.semacquire", "semacquire"),
)

Kind = Literal["heap", "goroutine"]
SiteKey = tuple[str, str]  # (function, state)


@dataclass
class _Site:
    frame: pprof.Frame
    state: str = ""
    growth: float = 0.0
    objects: int = 0
    trials: int = 0
    stack: tuple[pprof.Frame, ...] = ()
    stack_growth: float = 0.0
    leaked: bool = False


@dataclass
class _Tally:
    sites: dict[SiteKey, _Site] = field(default_factory=dict)
    total: float = 0.0
    best_trial: tuple[float, str] = (0.0, "")  # (growth, diff command) of the worst trial

    def add(self, trial_sites: dict[SiteKey, _Site], command: str) -> None:
        trial_total = sum(s.growth for s in trial_sites.values())
        self.total += trial_total
        if trial_total > self.best_trial[0]:
            self.best_trial = (trial_total, command)
        for key, site in trial_sites.items():
            into = self.sites.setdefault(key, _Site(site.frame, site.state))
            into.growth += site.growth
            into.objects += site.objects
            into.trials += 1
            into.leaked |= site.leaked
            if site.stack_growth > into.stack_growth:
                into.frame, into.stack = site.frame, site.stack
                into.stack_growth = site.stack_growth


def find_or_note(record: RunRecord, profile_dir: Path) -> LeakSites:
    """find(), for the commands: a failure here costs a section of the reports (a note says
    why), never the verdict."""
    try:
        return find(record, profile_dir)
    except Exception as e:  # a bug in the profile analysis must not lose the judged run
        return LeakSites(notes=(f"leak sites could not be computed: {type(e).__name__}: {e}",))


def drop_dumps(record: RunRecord, report_dir: Path, verdict: Verdict) -> RunRecord:
    """The record without its heap dumps, deleted from the report directory, unless a leak check
    failed: a dump is as large as the live heap, and a report directory is a CI artifact. Where
    a leak failed the gate they stay, for digging and for a re-render. Either way no dump the
    record does not name is left in a trial directory (one an interrupted drain gave up on, an
    agent's unfinished temporary file)."""
    keep = any(c.status == "fail" and sites_explaining(c.name) for c in verdict.checks)
    named = {
        (report_dir / p).resolve()
        for t in record.trials
        for cp in t.checkpoints.values()
        for p in (cp.heap_dump, cp.symbols)
        if p and keep
    }
    for trial_dir in report_dir.glob("trial-*"):
        if trial_dir.is_dir() and not trial_dir.is_symlink() and is_trial_dir(trial_dir.name):
            for path in (*trial_dir.glob("*.heapdump*"), *trial_dir.glob("symbols.txt")):
                if path.resolve() not in named:
                    path.unlink(missing_ok=True)
    if keep:
        return record
    trials = []
    for trial in record.trials:
        checkpoints = {
            label: dataclasses.replace(cp, heap_dump=None, symbols=None)
            for label, cp in trial.checkpoints.items()
        }
        trials.append(dataclasses.replace(trial, checkpoints=checkpoints))
    return dataclasses.replace(record, trials=tuple(trials))


def find(record: RunRecord, report_dir: Path, side: str = "candidate") -> LeakSites:
    """Leak sites of `side`'s trials, from the profiles saved under `report_dir`.

    The service's own code is the main package and its module (`environment.go_module`, so a
    module named without a dot, `go mod init orders`, counts too)."""
    module = record.environment.go_module

    def own(function: str) -> bool:
        return pprof.is_own_code(function, module)

    notes: list[str] = []
    heap, goroutines = _Tally(), _Tally()
    held: list[list[Holder]] = []
    for trial in record.trials:
        if trial.side != side:
            continue
        _trial_sites(trial, report_dir, "heap", heap, notes, own)
        _trial_sites(trial, report_dir, "goroutine", goroutines, notes, own)
        held.append(_trial_holders(trial, report_dir, notes, own))
    heap_sites = _top(heap, "heap", own)
    sources = {cp.source for t in record.trials if t.side == side for cp in t.checkpoints.values()}
    if heap_sites and sources and "agent" not in sources:
        notes.append(
            f"no heap dumps: the service was read through {', '.join(sorted(sources))}, not "
            "leakgate's agent (attached, or run without it), so who keeps the growth alive is "
            "not known; the heap sites say where it was allocated"
        )
    return LeakSites(
        heap=heap_sites,
        goroutines=_top(goroutines, "goroutine", own),
        heap_command=heap.best_trial[1],
        goroutine_command=goroutines.best_trial[1],
        trace=next((t.trace for t in record.trials if t.side == side and t.trace), None),
        notes=tuple(notes),
        holders=retention.merge(held),
    )


def _trial_holders(trial: Trial, report_dir: Path, notes: list[str], own: Own) -> list[Holder]:
    """Who keeps what grew alive, from the trial's heap dumps at warm-up and drain."""
    before, after = trial.checkpoints.get("warmup"), trial.checkpoints.get("drain")
    if not (before and after and before.heap_dump and after.heap_dump):
        return []
    symbols = retention.load_symbols(report_dir / after.symbols if after.symbols else None)
    if not symbols.names:
        notes.append(
            f"trial {trial.index + 1}: no symbol table in the binary (built with -s?): "
            "package variables are named by address"
        )
    try:
        dumps = [heapdump.load(report_dir / c.heap_dump) for c in (before, after) if c.heap_dump]
        return retention.holders(dumps[0], dumps[1], symbols, own)
    except heapdump.HeapDumpError as e:
        notes.append(f"trial {trial.index + 1}: heap dump not used: {e}")
        return []


Own = Callable[[str], bool]


def _trial_sites(
    trial: Trial, report_dir: Path, kind: Kind, tally: _Tally, notes: list[str], own: Own
) -> None:
    before, after = trial.checkpoints.get("warmup"), trial.checkpoints.get("drain")
    attr = "heap_profile" if kind == "heap" else "goroutine_profile"
    first = getattr(before, attr) if before else None
    last = getattr(after, attr) if after else None
    if not (isinstance(first, str) and isinstance(last, str)):
        return
    paths = (first, last)
    try:
        profiles = [pprof.load(report_dir / p) for p in paths]
        if kind == "heap":
            sites = _heap_sites(profiles[0], profiles[1], own)
        else:
            leaked = _leaked_stacks(after, report_dir, notes, trial.index) if after else set()
            sites = _goroutine_sites(profiles[0], profiles[1], leaked, own)
    except pprof.ProfileError as e:  # one trial's unreadable profile costs only its sites
        notes.append(f"trial {trial.index + 1}: {kind} profile not used: {e}")
        return
    tally.add(sites, f"go tool pprof -diff_base {paths[0]} {paths[1]}")


def _heap_sites(before: pprof.Profile, after: pprof.Profile, own: Own) -> dict[SiteKey, _Site]:
    space = _by_site(before, after, "inuse_space", lambda frames: "", own)
    objects = _by_site(before, after, "inuse_objects", lambda frames: "", own)
    out = {}
    for key, (growth, stack, stack_growth) in space.items():
        count = objects.get(key, (0.0, (), 0.0))[0]
        frame = _site_frame(stack, own)
        out[key] = _Site(frame, "", growth, max(0, int(count)), 1, stack, stack_growth)
    return out


def _goroutine_sites(
    before: pprof.Profile, after: pprof.Profile, leaked: set[tuple[pprof.Frame, ...]], own: Own
) -> dict[SiteKey, _Site]:
    grown = _by_site(before, after, "goroutine", _state, own)
    return {
        key: _Site(
            _site_frame(stack, own),
            key[1],
            growth,
            0,
            1,
            stack,
            stack_growth,
            leaked=stack in leaked,
        )
        for key, (growth, stack, stack_growth) in grown.items()
    }


def _by_site(
    before: pprof.Profile,
    after: pprof.Profile,
    sample_type: str,
    state: Callable[[tuple[pprof.Frame, ...]], str],
    own: Own,
) -> dict[SiteKey, tuple[float, tuple[pprof.Frame, ...], float]]:
    """(function, state) -> (net growth, the stack that grew most there, its growth).

    Only sites that grew on balance and have a stack that grew are kept."""
    net: Counter[SiteKey] = Counter()
    stacks: dict[SiteKey, tuple[tuple[pprof.Frame, ...], float]] = {}
    for sign, profile in ((-1, before), (1, after)):
        for stack, value in profile.by_stack(sample_type).items():
            frames = profile.frames(stack)
            if frames:
                net[_key(frames, state, own)] += sign * value
    for frames, growth in pprof.diff(before, after, sample_type).items():
        if not frames:  # a sample without a stack has no site
            continue
        key = _key(frames, state, own)
        if growth > stacks.get(key, ((), 0.0))[1]:
            stacks[key] = (frames, float(growth))
    return {
        key: (float(value), *stacks[key])
        for key, value in net.items()
        if value > 0 and key in stacks
    }


def _key(
    frames: tuple[pprof.Frame, ...], state: Callable[[tuple[pprof.Frame, ...]], str], own: Own
) -> SiteKey:
    return (_site_frame(frames, own).function, state(frames))


def _site_frame(frames: Sequence[pprof.Frame], own: Own) -> pprof.Frame:
    """The service's own innermost frame; else the innermost outside the runtime (a goroutine
    net/http started has no frame of the service's)."""
    mine = next((f for f in frames if own(f.function)), None)
    if mine is not None:
        return mine
    return next((f for f in frames if not f.function.startswith(_RUNTIME)), frames[0])


_RUNTIME = ("runtime.", "internal/", "sync.runtime_")

# Standard-library stacks that mean a well-known mistake in the code that called them.
_HINTS = (
    ("net/http.(*persistConn).", "HTTP client connections held open: response bodies not closed?"),
    ("net/http.(*Transport).dialConn", "HTTP client connections held open: bodies not closed?"),
    ("runtime.malg", "goroutine stacks: goroutines leaking? see the goroutine sites"),
    ("context.(*cancelCtx).propagateCancel", "contexts never cancelled?"),
)


def _state(frames: Sequence[pprof.Frame]) -> str:
    for prefix, state in _STATES:
        if any(frame.function.startswith(prefix) for frame in frames):
            return state
    return "running" if frames and not frames[0].function.startswith("runtime.") else "waiting"


def _leaked_stacks(
    after: Checkpoint, report_dir: Path, notes: list[str], index: int
) -> set[tuple[pprof.Frame, ...]]:
    """Stacks of the runtime's own goroutineleak profile (Go builds that offer it)."""
    if not after.goroutineleak_profile:
        return set()
    try:
        profile = pprof.load(report_dir / after.goroutineleak_profile)
    except pprof.ProfileError as e:
        notes.append(f"trial {index}: goroutineleak profile not used: {e}")
        return set()
    return {profile.frames(stack) for stack, _ in profile.samples}


def _top(tally: _Tally, kind: Kind, own: Own) -> tuple[LeakSite, ...]:
    minimum = MIN_HEAP_BYTES if kind == "heap" else MIN_GOROUTINES
    # The service's own code first: a developer fixes their code, and a standard-library site
    # (goroutine stacks, net/http buffers) is most often the consequence of it.
    ranked = sorted(
        (s for s in tally.sites.values() if s.growth >= minimum),
        key=lambda s: (not s.leaked, not own(s.frame.function), -s.trials, -s.growth),
    )
    return tuple(_leak_site(s, kind, tally.total, own) for s in ranked[:TOP])


def _leak_site(site: _Site, kind: Kind, total: float, own: Own) -> LeakSite:
    frame = site.frame
    where = f"{frame.function} ({Path(frame.file).name}:{frame.line})"
    caller = _caller(site.stack, frame, own)
    if caller is not None:
        where += f" called from {caller.function} ({Path(caller.file).name}:{caller.line})"
    if kind == "heap":
        description = f"+{format_size(site.growth)} in {site.objects:,} objects retained at {where}"
    else:
        count = int(site.growth)
        noun = "goroutine" if count == 1 else "goroutines"
        description = f"{count:,} {noun} blocked in {site.state} at {where}"
        if site.state == "running":
            description = f"{count:,} more {noun} at {where}"
        if site.leaked:
            description += " (the runtime's goroutineleak profile confirms the leak)"
    hint = next(
        (h for prefix, h in _HINTS for f in site.stack if f.function.startswith(prefix)), ""
    )
    if hint and not own(frame.function):
        description += f" ({hint})"
    return LeakSite(
        kind=kind,
        function=frame.function,
        file=frame.file,
        line=frame.line,
        growth=site.growth,
        objects=site.objects if kind == "heap" else None,
        share=site.growth / total if total > 0 else 0.0,
        state=site.state,
        trials=site.trials,
        leaked=site.leaked,
        caller=caller.function if caller is not None else "",
        stack=tuple(str(f) for f in _trim(site.stack)),
        description=description,
    )


def _caller(stack: Sequence[pprof.Frame], frame: pprof.Frame, own: Own) -> pprof.Frame | None:
    """The service's own frame that called `frame`'s function, when it is another function."""
    if frame not in stack:
        return None
    outer = stack[stack.index(frame) + 1 :]
    caller = next((f for f in outer if own(f.function)), None)
    if caller is None or caller.function == frame.function:
        return None
    return caller


def _trim(frames: Iterable[pprof.Frame], limit: int = 12) -> list[pprof.Frame]:
    return list(frames)[:limit]
