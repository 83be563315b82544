"""Who holds it: the roots that keep the live heap alive, from a pair of heap dumps.

A heap profile says where leaked memory was allocated; a heap dump also says what still points
at it. For each dump (after the agent's forced GCs, so what it holds is live) every object is
given to the root that reaches it first in a breadth-first walk from all roots at once: the
nearest holder, by the fewest pointers. Roots are grouped into holders a developer can act on:

- a package-level variable (a pointer slot in the data or bss segment, named from the built
  binary's symbol table: `main.auditLog`);
- the stack frames of one function, over however many goroutines run it (a goroutine leak keeps
  its buffers alive from its frames);
- finalizers, and the runtime's other roots.

The warm-up dump and the drain dump are grouped the same way, and the holders whose retained
bytes grew are the ones that kept what the load left behind. This is a first-reach attribution,
not a dominator tree: memory reachable from two holders counts for the nearer one (for the
leaks a gate meets, a cache or a registry in a package variable, or parked goroutines, the
nearer holder is the one to fix).
"""

from __future__ import annotations

import bisect
import dataclasses
import re
import struct
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leakgate.heapdump import HeapDump
from leakgate.model import Holder, HolderPath
from leakgate.units import format_size

_GOWRAP = re.compile(r"\.gowrap\d+$").search  # the compiler's wrapper of a `go f(x)` statement
MIN_GROWTH = 64 * 1024  # bytes; below, churn of the runtime's own buffers
PINNED_SIZE = 4096  # an object this large kept whole for a small part of it is "pinned"
ARRAY_SIZE = 64 * 1024  # a slice backing array this large that reaches most of a growth
TIMERS = "runtime.allp"  # the Ps: each holds its timer heap, so armed timers are reached here
MAX_DEPTH = 6  # path shapes: steps from the root
PATHS = 16  # nodes of the retention tree kept per holder (with their ancestors)
TOP = 5
_SHT_SYMTAB = 2
_STT_OBJECT = 1


@dataclass(frozen=True, slots=True)
class Symbols:
    """Data and bss symbols of a binary, sorted by address."""

    addresses: Sequence[int]
    sizes: Sequence[int]
    names: Sequence[str]

    def name(self, address: int) -> str | None:
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0 or address >= self.addresses[i] + max(self.sizes[i], 1):
            return None
        return self.names[i]


def elf_symbols(binary: Path) -> list[tuple[int, int, str]]:
    """The data objects of a 64-bit little-endian ELF binary's symbol table: (address, size,
    name). [] for a binary without one (stripped with -ldflags=-s) or not ELF."""
    try:
        data = binary.read_bytes()
    except OSError:
        return []
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        at = shoff + i * shentsize
        if at + 64 > len(data):
            return []
        _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize = struct.unpack_from(
            "<IIQQQQIIQQ", data, at
        )
        sections.append((kind, offset, size, link, entsize))
    out = []
    for kind, offset, size, link, entsize in sections:
        if kind != _SHT_SYMTAB or entsize != 24 or link >= len(sections):
            continue
        str_offset, str_size = sections[link][1], sections[link][2]
        strings = data[str_offset : str_offset + str_size]
        for name_at, info, _other, _shndx, value, sym_size in struct.iter_unpack(
            "<IBBHQQ", data[offset : offset + size - size % 24]
        ):
            if info & 0xF != _STT_OBJECT or not value:
                continue
            end = strings.find(b"\0", name_at)
            out.append((value, sym_size, strings[name_at:end].decode("utf-8", "replace")))
    return sorted(out)


def save_symbols(binary: Path, dest: Path) -> Path | None:
    """The binary's data symbols as `address size name` lines, for the analysis to read after
    the run (the binary may be gone by a re-render); None when it has none."""
    rows = elf_symbols(binary)
    if not rows:
        return None
    dest.write_text("".join(f"{a:x} {s} {n}\n" for a, s, n in rows))
    return dest


def load_symbols(path: Path | None) -> Symbols:
    rows: list[tuple[int, int, str]] = []
    if path is not None:
        try:
            for line in path.read_text().splitlines():
                a, s, n = line.split(" ", 2)
                rows.append((int(a, 16), int(s), n))
        except (OSError, ValueError):
            rows = []
    rows.sort()
    return Symbols([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


@dataclass
class _Held:
    kind: str  # "variable" | "goroutines" | "finalizer" | "runtime"
    name: str
    bytes: int = 0
    objects: int = 0
    goroutines: set[int] = field(default_factory=set)
    sizes: Counter[int] = field(default_factory=Counter)
    sites: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # goroutines: what they wait for
    pinned: int = 0  # bytes of large objects first reached for a small part of them
    views: Counter[int] = field(default_factory=Counter)  # pinned: the bytes a slice saw
    # sampled bytes by the package own code called to allocate them (context, time, runtime)
    made_by: Counter[str] = field(default_factory=Counter)
    # large sampled arrays made by append (runtime.growslice): their path shape -> bytes
    slices: dict[tuple[int, ...], int] = field(default_factory=dict)
    # sizes from the root -> [bytes, objects]
    paths: dict[tuple[int, ...], list[int]] = field(default_factory=dict)


Own = Callable[[str], bool]


def attribute(dump: HeapDump, symbols: Symbols, own: Own) -> dict[tuple[str, str], _Held]:
    """Every live object given to its nearest holder; bytes, objects, object sizes and sampled
    allocation sites summed per holder. A goroutine's frames are one holder named by the
    goroutine's innermost frame in the service's own code (`own`), so a buffer held by
    runtime.chansend under main.worker counts for main.worker; sampled objects are placed at
    the first own function of their allocation stack (the function only: the dump gives each
    PC its physical function but the file and line of the code inlined there)."""
    n = dump.objects
    held: dict[tuple[str, str], _Held] = {}
    if not n:
        return held
    addresses = np.frombuffer(dump.addresses, dtype=np.uint64)
    sizes = np.frombuffer(dump.sizes, dtype=np.uint64)
    order = np.argsort(addresses, kind="stable")
    sorted_addresses, sorted_ends = addresses[order], addresses[order] + sizes[order]

    def _pins(values: np.ndarray, at: np.ndarray, views: np.ndarray) -> list[bool]:
        """Pointers that keep a large object whole for a small part of it: into its middle (a
        sub-slice, a field's address), or a narrow slice's (heapdump.NARROW)."""
        ok = at >= 0
        where = np.maximum(at, 0)
        target_sizes = sizes[where]
        middle = values != addresses[where]
        narrow = views > 0
        pins: list[bool] = (ok & (target_sizes >= PINNED_SIZE) & (middle | narrow)).tolist()
        return pins

    def resolve(values: np.ndarray) -> np.ndarray:
        """The object each pointer points into (interior pointers included), or -1."""
        if not len(values):
            return np.empty(0, dtype=np.int64)
        at = np.searchsorted(sorted_addresses, values, side="right") - 1
        ok = at >= 0
        clipped = np.where(ok, at, 0)
        ok &= values < sorted_ends[clipped]
        return np.where(ok, order[clipped], -1).astype(np.int64)

    def edges(
        pointers: array[int], raw_views: array[int]
    ) -> tuple[list[int], list[bool], list[int]]:
        """Per pointer: the object it points into (-1: none), whether it pins it, its view."""
        values = np.frombuffer(pointers, dtype=np.uint64)
        resolved = resolve(values)
        views = np.frombuffer(raw_views, dtype=np.uint64)
        return resolved.tolist(), _pins(values, resolved, views), views.tolist()

    children, interior, view_list = edges(dump.pointers, dump.views)
    targets, root_interior, root_views_list = edges(dump.root_targets, dump.root_views)
    starts = dump.starts.tolist()
    size_list = dump.sizes.tolist()

    keys: list[tuple[str, str]] = []
    key_ids: dict[tuple[str, str], int] = {}
    root_key: list[int] = []
    names: dict[int, str | None] = {}
    for kind, source, label, target in zip(
        dump.root_kinds, dump.root_sources, dump.root_labels, targets, strict=True
    ):
        if target < 0:
            root_key.append(-1)
            continue
        if kind in ("data", "bss"):
            name = symbols.name(source) or f"{kind} segment +{source:#x}"
            key = ("variable", name)
        elif kind == "stack":
            if source not in names:  # once per goroutine, not per frame's pointer
                names[source] = _goroutine_name(dump, source, own)
            key = ("goroutines", names[source] or dump.labels[label])
        else:
            key = ("finalizer" if kind == "finalizer" else "runtime", dump.labels[label])
        if key not in key_ids:
            key_ids[key] = len(keys)
            keys.append(key)
            held[key] = _Held(key[0], key[1])
        root_key.append(key_ids[key])
        if kind == "stack":
            entry = held[key]
            if source not in entry.goroutines:
                entry.goroutines.add(source)
                g = dump.goroutines.get(source)
                if g is not None:
                    entry.reasons[g.wait_reason or "running"] += 1

    # Package variables first, then stacks, then the rest: at equal distance, the variable.
    rank = {"variable": 0, "goroutines": 1, "finalizer": 2, "runtime": 3}
    owner = [-1] * n
    pinned = [False] * n
    seen = [0] * n  # pinned through a narrow slice: its len << 32 | cap
    # The path shape of each object: the sizes of the objects from its root down (an index
    # into `shapes`). A chain of same-size objects (a list, a tree of nodes) is one step, and
    # below MAX_DEPTH steps everything counts for the deepest, so the shapes stay few.
    shape = [0] * n
    shapes: list[tuple[int, tuple[int, ...]]] = []  # (holder, sizes)
    shape_ids: dict[tuple[int, int, int], int] = {}

    def step(parent: int, holder: int, size: int) -> int:
        if parent >= 0:
            sizes_so_far = shapes[parent][1]
            if sizes_so_far[-1] == size or len(sizes_so_far) >= MAX_DEPTH:
                return parent
        key = (parent, holder, size)
        found = shape_ids.get(key)
        if found is None:
            base = shapes[parent][1] if parent >= 0 else ()
            found = shape_ids[key] = len(shapes)
            shapes.append((holder, (*base, size)))
        return found

    queue: deque[int] = deque()
    roots = sorted(
        (i for i, k in enumerate(root_key) if k >= 0), key=lambda i: rank[keys[root_key[i]][0]]
    )
    for i in roots:
        t = targets[i]
        if owner[t] < 0:
            owner[t] = root_key[i]
            pinned[t] = root_interior[i]
            seen[t] = root_views_list[i]
            shape[t] = step(-1, owner[t], size_list[t])
            queue.append(t)
    while queue:
        i = queue.popleft()
        h = owner[i]
        for e in range(starts[i], starts[i + 1]):
            j = children[e]
            if j >= 0 and owner[j] < 0:
                owner[j] = h
                pinned[j] = interior[e]
                seen[j] = view_list[e]
                shape[j] = step(shape[i], h, size_list[j])
                queue.append(j)

    owners = np.asarray(owner, dtype=np.int64)
    live = owners >= 0
    weights = sizes[live].astype(np.float64)
    byte_sums = np.bincount(owners[live], weights=weights, minlength=len(keys))
    counts = np.bincount(owners[live], minlength=len(keys))
    for k, key in enumerate(keys):
        held[key].bytes, held[key].objects = int(byte_sums[k]), int(counts[k])
    # Object sizes and path shapes per holder, for what grew ("1,204 objects of 32 KiB").
    per_shape: Counter[int] = Counter()
    shape_objects: Counter[int] = Counter()
    for i, h in enumerate(owner):
        if h >= 0:
            found = held[keys[h]]
            found.sizes[size_list[i]] += 1
            per_shape[shape[i]] += size_list[i]
            shape_objects[shape[i]] += 1
            if pinned[i]:
                found.pinned += size_list[i]
                if seen[i]:  # the narrow slice's len << 32 | cap: the bytes it sees
                    length, capacity = seen[i] >> 32, seen[i] & 0xFFFFFFFF
                    found.views[length * size_list[i] // capacity] += 1
    for s, total in per_shape.items():
        holder, path = shapes[s]
        held[keys[holder]].paths[path] = [total, shape_objects[s]]
    # The allocation sites of the sampled objects, weighted by their size: the first own
    # function, the package it called to allocate, and the large arrays append made.
    if dump.alloc_stacks:
        sampled = list(dump.alloc_stacks)
        where = resolve(np.asarray(sampled, dtype=np.uint64)).tolist()
        for address, i in zip(sampled, where, strict=True):
            if i < 0 or owner[i] < 0:
                continue
            functions = [f[0] for f in dump.alloc_stacks[address]]
            mine = next((k for k, name in enumerate(functions) if own(name)), None)
            if mine is None:
                continue
            found, size = held[keys[owner[i]]], size_list[i]
            found.sites[functions[mine]] += size
            if mine:
                found.made_by[package(functions[mine - 1])] += size
            if size >= ARRAY_SIZE and "runtime.growslice" in functions[:mine]:
                found.slices[shapes[shape[i]][1]] = size
    return held


def package(function: str) -> str:
    """The import path of a function's package: "net/http" for net/http.(*Client).Do."""
    slash = function.rfind("/") + 1
    dot = function.find(".", slash)
    return function[:dot] if dot > 0 else function


def _goroutine_name(dump: HeapDump, goid: int, own: Own) -> str | None:
    """The goroutine's innermost frame in the service's own code, else the function it was
    started in (its outermost frame outside the runtime: net/http.(*persistConn).readLoop)."""
    g = dump.goroutines.get(goid)
    if g is None:
        return None
    mine = next((f for f in g.frames if own(f)), None)
    started = (f for f in reversed(g.frames) if not f.startswith("runtime.") and not _GOWRAP(f))
    return mine or next(started, None)


def holders(before: HeapDump, after: HeapDump, symbols: Symbols, own: Own) -> list[Holder]:
    """The holders whose retained bytes grew from `before` to `after`, most first."""
    old = attribute(before, symbols, own)
    new = attribute(after, symbols, own)
    total = sum(h.bytes for h in new.values()) - sum(h.bytes for h in old.values())
    out = []
    for key, h in new.items():
        was = old.get(key)
        growth = h.bytes - (was.bytes if was else 0)
        if growth < MIN_GROWTH:
            continue
        sizes = h.sizes
        old_sizes = was.sizes if was else Counter()
        size, count = max(
            ((s, c - old_sizes.get(s, 0)) for s, c in sizes.items()),
            key=lambda sc: sc[0] * sc[1],
            default=(0, 0),
        )
        sites, reasons = h.sites, h.reasons
        made_by = h.made_by - (was.made_by if was else Counter())  # what the growth was made by
        made = made_by.most_common(1)
        out.append(
            Holder(
                kind=h.kind,
                name=h.name,
                growth=growth,
                objects=h.objects - (was.objects if was else 0),
                retained=h.bytes,
                share=growth / total if total > 0 else 0.0,
                goroutines=len(h.goroutines),
                goroutines_added=len(h.goroutines - (was.goroutines if was else set())),
                object_size=size if count > 0 else 0,
                object_count=max(count, 0),
                allocated_at=sites.most_common(1)[0][0] if sites else "",
                pinned=max(0, h.pinned - (was.pinned if was else 0)),
                pinned_view=h.views.most_common(1)[0][0] if h.views else 0,
                waiting=reasons.most_common(1)[0][0] if reasons else "",
                made_by=made[0][0] if made else "",
                made_share=made[0][1] / made_by.total() if made else 0.0,
                slice_array=_slice_array(h, was, growth),
                paths=_grown_paths(h, was),
            )
        )
    out.sort(key=lambda x: x.growth, reverse=True)
    return [_described(x) for x in out[:TOP]]


def _subtree_growth(h: _Held, was: _Held | None, root: tuple[int, ...]) -> int:
    """The net bytes added under one path shape (the node itself included)."""
    new, old = h.paths, (was.paths if was else {})
    under = {path for path in (*new, *old) if path[: len(root)] == root}
    return sum(new.get(path, [0, 0])[0] - old.get(path, [0, 0])[0] for path in under)


def _slice_array(h: _Held, was: _Held | None, growth: int) -> int:
    """The bytes of the one slice backing array (made by append) that reaches at least half of
    the growth, or 0: a slice that is only appended to."""
    for path, size in sorted(h.slices.items(), key=lambda ps: len(ps[0])):
        if _subtree_growth(h, was, path) * 2 >= growth:
            return size
    return 0


def _grown_paths(h: _Held, was: _Held | None) -> tuple[HolderPath, ...]:
    """The tree of what grew under a holder: each node a path shape from the root down, with
    the net bytes added in its subtree (so the children of a node add up to it, shrunk parts
    included) and the objects added at the node itself. The nodes that added the most, with
    their ancestors, up to PATHS of them."""
    new, old = h.paths, (was.paths if was else {})
    subtree: Counter[tuple[int, ...]] = Counter()
    here: Counter[tuple[int, ...]] = Counter()
    here_bytes: Counter[tuple[int, ...]] = Counter()
    for path in set(new) | set(old):
        grown = new.get(path, [0, 0])[0] - old.get(path, [0, 0])[0]
        here[path] += new.get(path, [0, 0])[1] - old.get(path, [0, 0])[1]
        here_bytes[path] += grown
        for depth in range(1, len(path) + 1):
            subtree[path[:depth]] += grown
    least = max(1, (h.bytes - (was.bytes if was else 0)) // 100)
    chosen: set[tuple[int, ...]] = set()
    for path, grown in subtree.most_common():
        if grown < least or len(chosen) + len(path) > PATHS:
            break
        chosen.update(path[:depth] for depth in range(1, len(path) + 1))
    return tuple(HolderPath(p, subtree[p], here[p], here_bytes[p]) for p in sorted(chosen))


def describe(h: Holder) -> str:
    """One line a developer can act on: what holds how much, of what, allocated where."""
    what = {
        "variable": "the runtime's timers (runtime.allp: each P's timer heap)"
        if h.name == TIMERS
        else f"package variable {h.name}",
        "goroutines": f"the stacks of {h.goroutines:,} goroutine{'s' * (h.goroutines != 1)} "
        f"in {h.name}",
        "finalizer": f"a {h.name}",
        "runtime": f"the runtime ({h.name})",
    }.get(h.kind, h.name)
    objects = f" in {h.objects:,} more object{'s' * (h.objects != 1)}" if h.objects > 0 else ""
    line = f"+{format_size(h.growth)}{objects} kept alive by {what}"
    if h.object_count and h.object_size:
        line += f"; most of it {_objects(h.object_count)} of {format_size(h.object_size)}"
    if h.allocated_at:
        line += f", allocated in {h.allocated_at}"
    return line + meaning(h)


def meaning(h: Holder) -> str:
    """What the shape says, in plain words (a sentence that starts with ". ", or "")."""
    if h.pinned * 2 >= h.growth:
        through = (
            f"a {format_size(h.pinned_view)} slice of each"
            if h.pinned_view
            else "a pointer into each"
        )
        return (
            f". {format_size(h.pinned)} of it is large arrays kept whole through {through}"
            ": a small sub-slice keeps its whole backing array alive; copy the bytes you "
            "keep (bytes.Clone)"
        )
    if h.name == TIMERS:
        return (
            ". Timers armed and never stopped (time.AfterFunc, time.NewTimer, a Ticker): each "
            "keeps its function, and what that captures, until it fires; Stop the timer when "
            "the work is done, or keep one per key instead of one per request"
        )
    if h.made_by == "context" and h.made_share * 3 >= 1:
        return (
            f". {h.made_share:.0%} of the sampled bytes it gained were made by context.With…"
            f"{f' in {h.allocated_at}' if h.allocated_at else ''}: a context derived from a "
            "long-lived parent and never cancelled stays in the parent's children, with its "
            "values, until the parent is cancelled; call its cancel function when the work is "
            "done (defer cancel())"
        )
    if h.name.startswith("runtime."):
        return ""
    if h.kind == "goroutines" and h.goroutines_added >= 2:
        return (
            f". {h.goroutines_added:,} more of them than at warm-up, blocked in "
            f"{h.waiting or 'something'}: goroutines that never return keep what their stacks "
            "point to"
        )
    if h.slice_array:
        return (
            f". One {format_size(h.slice_array)} slice backing array reaches most of it: a slice "
            "that is only appended to (a queue whose consumed entries are never dropped, a "
            "log never trimmed); drop what was consumed (q = q[head:] into a fresh slice, "
            "clear the slots), or bound it"
        )
    if h.kind == "goroutines":
        return (
            ". A long-lived goroutine reaches it through its local variables: follow what they "
            "point to that only grows (a context never cancelled, a cache)"
        )
    if h.kind == "variable":
        return ". Nothing removes what is added: bound it, evict, or delete entries when done"
    return ""


def _objects(n: int) -> str:
    return f"{n:,} object{'s' * (n != 1)}"


def _described(h: Holder) -> Holder:
    return dataclasses.replace(h, description=describe(h))


def _bulk(a: Holder, b: Holder) -> tuple[int, int]:
    """The object size that added the most bytes over two trials' holders, and how many."""
    if a.object_size == b.object_size:
        return a.object_size, a.object_count + b.object_count
    big = max(a, b, key=lambda h: h.object_size * h.object_count)
    return big.object_size, big.object_count


def _merged_paths(a: tuple[HolderPath, ...], b: tuple[HolderPath, ...]) -> tuple[HolderPath, ...]:
    """Two trials' retention trees as one: nodes of the same shape summed."""
    nodes: dict[tuple[int, ...], list[int]] = {}
    for p in (*a, *b):
        node = nodes.setdefault(p.sizes, [0, 0, 0])
        node[0] += p.growth
        node[1] += p.objects
        node[2] += p.own
    return tuple(HolderPath(s, g, o, own) for s, (g, o, own) in sorted(nodes.items()))


def merge(per_trial: Iterable[list[Holder]]) -> tuple[Holder, ...]:
    """Holders over trials: figures summed by (kind, name), with the trials each grew in."""
    merged: dict[tuple[str, str], Holder] = {}
    for found in per_trial:
        for h in found:
            key = (h.kind, h.name)
            was = merged.get(key)
            if was is None:
                merged[key] = dataclasses.replace(h, trials=1)
                continue
            size, count = _bulk(was, h)
            merged[key] = dataclasses.replace(
                was,
                object_size=size,
                object_count=count,
                growth=was.growth + h.growth,
                pinned=was.pinned + h.pinned,
                objects=was.objects + h.objects,
                retained=max(was.retained, h.retained),
                goroutines=max(was.goroutines, h.goroutines),
                goroutines_added=max(was.goroutines_added, h.goroutines_added),
                allocated_at=was.allocated_at or h.allocated_at,
                pinned_view=was.pinned_view or h.pinned_view,
                slice_array=max(was.slice_array, h.slice_array),
                paths=_merged_paths(was.paths, h.paths),
                trials=was.trials + 1,
            )
    total = sum(h.growth for h in merged.values())
    out = sorted(merged.values(), key=lambda h: (h.trials, h.growth), reverse=True)[:TOP]
    return tuple(
        _described(dataclasses.replace(h, share=h.growth / total if total else 0.0)) for h in out
    )
