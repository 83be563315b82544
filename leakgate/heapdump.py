"""A reader of Go heap dumps (`runtime/debug.WriteHeapDump`, formats "go1.5" to "go1.7 heap dump").

The format is the Go wiki's "heapdump15-through-heapdump17" as `runtime/heapdump.go` writes it:
a header line, then records, each a uvarint tag and its fields (uvarints, length-prefixed strings
and memory ranges, and field lists: (kind 1 = pointer, offset) pairs ended by kind 0), ended by
an EOF record. What the retention analysis needs is kept and the rest skipped:

- every object's address, size (its size class: the runtime dumps the whole slot) and the
  pointers it holds, read from its contents at the field list's offsets;
- the roots: pointer slots of the data and bss segments (package-level variables, named later
  from the binary's symbols), of every goroutine's stack frames (with the function and the
  goroutine), goroutine closure contexts, defer and panic records, finalizers, and "other" roots;
- the allocation sample of each sampled object (its stack, from the dump's memory-profile
  buckets), the goroutines, and the few parameters and MemStats figures a report prints.

The file is untrusted input as much as a profile is: every length is checked against what is
left, a field offset outside its object (or given twice) is an error, and the reader allocates
in proportion to the bytes it has read, never to a length it was told. What costs more to keep
than it takes in the file is deduplicated and counted: strings and profile frames are stored
once (a real dump repeats the same few thousand function names millions of times), and a dump
with more distinct strings, allocation samples, goroutines or small roots than any real program
has is refused (`LIMITS`). `MAX_BYTES` bounds what it will read. `python bench/heapdump.py
--hostile` measures the peak memory of the costliest inputs the bounds let through.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

MAX_BYTES = 1 << 30
# What a real dump stays far below (a 512 MiB heap sampled every 64 KiB has ~8k samples; a
# binary has ~10^5 function names): past them a file is damaged or hostile, and refused.
LIMITS = {
    "distinct strings": 1 << 20,
    "distinct profile frames": 1 << 20,
    "allocation samples": 1 << 20,
    "goroutines": 1 << 21,
    "finalizer, defer, panic and other roots": 1 << 21,
}
MIN_OBJECT = 8  # the smallest size class: a heap object the runtime dumps is never smaller
NARROW = 8  # a slice that sees at most an eighth of its capacity is "narrow"
HEADERS = (b"go1.5 heap dump\n", b"go1.6 heap dump\n", b"go1.7 heap dump\n")

(
    _EOF,
    _OBJECT,
    _OTHER_ROOT,
    _TYPE,
    _GOROUTINE,
    _STACK_FRAME,
    _PARAMS,
    _FINALIZER,
    _ITAB,
    _OS_THREAD,
    _MEMSTATS,
    _QUEUED_FINALIZER,
    _DATA,
    _BSS,
    _DEFER,
    _PANIC,
    _MEMPROF,
    _ALLOC_SAMPLE,
) = range(18)

_MEMSTATS_FIELDS = 24 + 256 + 1  # Alloc .. PauseTotalNs, PauseNs[256], NumGC
_HEAP_ALLOC = 6  # the index of HeapAlloc among them

RootKind = Literal["data", "bss", "stack", "finalizer", "other"]


class HeapDumpError(ValueError):
    """The file is not a heap dump this reader understands, or is damaged."""


@dataclass(frozen=True, slots=True)
class Goroutine:
    address: int
    goid: int
    status: int
    system: bool
    wait_reason: str
    frames: tuple[str, ...] = ()  # function names, innermost first


@dataclass
class HeapDump:
    version: str  # the header, "go1.7"
    pointer_size: int = 8
    go_version: str = ""
    arch: str = ""
    heap_alloc: int | None = None  # MemStats.HeapAlloc when the dump was written
    addresses: array[int] = field(default_factory=lambda: array("Q"))
    sizes: array[int] = field(default_factory=lambda: array("Q"))
    # The pointers of object i are pointers[starts[i]:starts[i + 1]].
    starts: array[int] = field(default_factory=lambda: array("Q", [0]))
    pointers: array[int] = field(default_factory=lambda: array("Q"))
    # Per pointer: `len << 32 | cap` of the narrow slice it starts (0: none, see fields()).
    views: array[int] = field(default_factory=lambda: array("Q"))
    # One entry per root pointer: its kind, its source (data/bss: the slot's address; stack:
    # the goroutine's id; otherwise 0), its label (an index into `labels`: the frame's function,
    # or what the root is; "" for data/bss) and the address it points to.
    root_kinds: list[RootKind] = field(default_factory=list)
    root_sources: array[int] = field(default_factory=lambda: array("Q"))
    root_labels: array[int] = field(default_factory=lambda: array("L"))
    root_targets: array[int] = field(default_factory=lambda: array("Q"))
    root_views: array[int] = field(default_factory=lambda: array("Q"))
    labels: list[str] = field(default_factory=lambda: [""])
    segments: dict[str, tuple[int, int]] = field(default_factory=dict)  # data/bss: start, size
    goroutines: dict[int, Goroutine] = field(default_factory=dict)
    # Sampled objects' allocation stacks: address -> (function, file, line), leaf first.
    alloc_stacks: dict[int, tuple[tuple[str, str, int], ...]] = field(default_factory=dict)

    @property
    def objects(self) -> int:
        return len(self.addresses)


def load(path: Path, max_bytes: int = MAX_BYTES) -> HeapDump:
    """Read and parse a dump file; HeapDumpError names the file when it cannot."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise HeapDumpError(f"{path}: {size} bytes, over the {max_bytes}-byte bound")
        data = path.read_bytes()
    except OSError as e:
        raise HeapDumpError(f"{path}: {e.strerror or e}") from e
    try:
        return parse(data)
    except HeapDumpError as e:
        raise HeapDumpError(f"{path}: {e}") from e


def parse(data: bytes) -> HeapDump:
    return _Reader(data).read()


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.ptr = struct.Struct("<Q")
        self.goroutine: Goroutine | None = None
        self.frames: list[str] = []
        self.label_ids: dict[str, int] = {"": 0}
        self.strings: dict[bytes, str] = {}
        self.stack_frames: dict[tuple[str, str, int], tuple[str, str, int]] = {}
        self.counts: dict[str, int] = dict.fromkeys(LIMITS, 0)

    def read(self) -> HeapDump:
        header = next((h for h in HEADERS if self.data.startswith(h)), None)
        if header is None:
            raise HeapDumpError("not a Go heap dump (no 'go1.N heap dump' header)")
        self.pos = len(header)
        dump = HeapDump(version=header.split()[0].decode())
        buckets: dict[int, tuple[tuple[str, str, int], ...]] = {}
        samples: array[int] = array("Q")  # address, bucket, address, bucket, ...
        while True:
            at = self.pos
            tag = self.uvarint()
            try:
                if tag == _EOF:
                    break
                self.record(tag, dump, buckets, samples)
            except HeapDumpError as e:
                raise HeapDumpError(f"record at byte {at} (tag {tag}): {e}") from None
        self.end_goroutine(dump)
        dump.alloc_stacks = {
            a: buckets[b] for a, b in zip(samples[::2], samples[1::2], strict=True) if b in buckets
        }
        return dump

    # -- primitives ---------------------------------------------------------------------------

    def uvarint(self) -> int:
        data, pos = self.data, self.pos
        value = shift = 0
        while True:
            if pos >= len(data):
                raise HeapDumpError("truncated (the file ends inside a record)")
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                raise HeapDumpError(f"a varint longer than 10 bytes at byte {self.pos}")
        if value >> 64:
            raise HeapDumpError(f"a varint over 64 bits at byte {self.pos}")
        self.pos = pos
        return value

    def uvarints(self, n: int) -> list[int]:
        return [self.uvarint() for _ in range(n)]

    def span(self) -> tuple[int, int]:
        """A length-prefixed range: (start, length), checked against what is left."""
        n = self.uvarint()
        start = self.pos
        if n > len(self.data) - start:
            raise HeapDumpError(f"a length of {n} bytes runs past the end of the file")
        self.pos = start + n
        return start, n

    def string(self) -> str:
        """A length-prefixed string, stored once however often it occurs."""
        start, n = self.span()
        raw = self.data[start : start + n]
        found = self.strings.get(raw)
        if found is None:
            self.count("distinct strings")
            found = self.strings[raw] = raw.decode("utf-8", "replace")
        return found

    def skip_string(self) -> None:
        self.span()

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n
        if self.counts[what] > LIMITS[what]:
            raise HeapDumpError(f"more than {LIMITS[what]:,} {what}: not a real program's dump")

    def fields(
        self,
        start: int,
        size: int,
        out: array[int],
        views: array[int],
        slots: array[int] | None = None,
        base: int = 0,
    ) -> None:
        """The pointers at a field list's offsets into data[start:start + size], appended to
        `out`, each with its view in `views`: `len << 32 | cap` when the two words after it are
        no pointers and read as the header of a slice that sees at most 1/NARROW of its
        capacity (0 < len, len * NARROW <= cap < 2^32), else 0. With `slots`, each pointer's own
        address (base + offset)."""
        unpack, data = self.ptr.unpack_from, self.data
        offsets = []
        while True:
            kind = self.uvarint()
            if kind == 0:
                break
            offset = self.uvarint()
            if kind != 1:
                raise HeapDumpError(f"field kind {kind} (this reader knows 1 = pointer)")
            if offset + 8 > size:
                raise HeapDumpError(f"a pointer field at offset {offset} of a {size}-byte range")
            offsets.append(offset)
        taken = set(offsets)
        if len(taken) != len(offsets):  # so pointers never outnumber the range's words
            raise HeapDumpError(f"a pointer field given twice in a {size}-byte range")
        for offset in offsets:
            value = unpack(data, start + offset)[0]
            if not value:
                continue
            view = 0
            if offset + 24 <= size and offset + 8 not in taken and offset + 16 not in taken:
                length = unpack(data, start + offset + 8)[0]
                capacity = unpack(data, start + offset + 16)[0]
                if length > 0 and length * NARROW <= capacity < 1 << 32:
                    view = length << 32 | capacity
            if slots is not None:
                if base + offset >= 1 << 64:
                    raise HeapDumpError(f"a segment slot past the 64-bit address space: {base:#x}")
                slots.append(base + offset)
            out.append(value)
            views.append(view)

    # -- records ------------------------------------------------------------------------------

    def record(
        self,
        tag: int,
        dump: HeapDump,
        buckets: dict[int, tuple[tuple[str, str, int], ...]],
        samples: array[int],
    ) -> None:
        if tag == _OBJECT:
            address = self.uvarint()
            start, size = self.span()
            if size < MIN_OBJECT:
                raise HeapDumpError(f"a heap object of {size} bytes (the smallest is 8)")
            self.fields(start, size, dump.pointers, dump.views)
            dump.addresses.append(address)
            dump.sizes.append(size)
            dump.starts.append(len(dump.pointers))
        elif tag == _STACK_FRAME:
            self.uvarints(3)  # sp, depth, child sp
            start, size = self.span()
            self.uvarints(3)  # entry pc, pc, continuation pc
            function = self.string()
            self.frames.append(function)
            goid = self.goroutine.goid if self.goroutine else 0
            self.roots(dump, "stack", goid, function, start, size)
        elif tag == _GOROUTINE:
            self.end_goroutine(dump)
            address, _sp, goid, _gopc, status = self.uvarints(5)
            system, _background, _since = self.uvarints(3)
            reason = self.string()
            context, _m, _defer, _panic = self.uvarints(4)
            self.count("goroutines")
            self.goroutine = Goroutine(address, goid, status, bool(system), reason)
            if context:
                self.root(dump, "stack", goid, "closure context", context)
        elif tag in (_DATA, _BSS):
            address = self.uvarint()
            start, size = self.span()
            kind: RootKind = "data" if tag == _DATA else "bss"
            dump.segments[kind] = (address, size)
            slots: array[int] = array("Q")
            self.fields(start, size, dump.root_targets, dump.root_views, slots, address)
            dump.root_kinds.extend([kind] * len(slots))
            dump.root_sources.extend(slots)
            dump.root_labels.extend([0] * len(slots))
        elif tag == _OTHER_ROOT:
            description = self.string()
            self.root(dump, "other", 0, description, self.uvarint())
        elif tag in (_FINALIZER, _QUEUED_FINALIZER):
            obj, funcval, _pc, _fint, _ot = self.uvarints(5)
            label = "finalizer" if tag == _FINALIZER else "queued finalizer"
            self.root(dump, "finalizer", 0, label, funcval)
            if tag == _QUEUED_FINALIZER:  # about to run: the object itself is kept for it
                self.root(dump, "finalizer", 0, label, obj)
        elif tag == _DEFER:
            _addr, g, _sp, _pc, funcval, _fn, _link = self.uvarints(7)
            self.root(dump, "stack", self.goid_at(g), "deferred call", funcval)
        elif tag == _PANIC:
            _addr, g, _type, value, _zero, _link = self.uvarints(6)
            self.root(dump, "stack", self.goid_at(g), "panic value", value)
        elif tag == _PARAMS:
            big_endian, dump.pointer_size = self.uvarints(2)
            if big_endian or dump.pointer_size != 8:
                raise HeapDumpError("only little-endian 64-bit dumps are read")
            self.uvarints(2)  # the heap arenas' range
            dump.arch, dump.go_version = self.string(), self.string()
            self.uvarint()  # CPUs
        elif tag == _MEMSTATS:
            dump.heap_alloc = self.uvarints(_MEMSTATS_FIELDS)[_HEAP_ALLOC]
        elif tag == _MEMPROF:
            bucket, _size, frames = self.uvarints(3)
            if frames > len(self.data) - self.pos:  # each frame takes at least 3 bytes
                raise HeapDumpError(f"{frames} frames in a profile record past the end")
            stack = tuple(self.stack_frame() for _ in range(frames))
            self.uvarints(2)  # allocs, frees
            buckets[bucket] = stack
        elif tag == _ALLOC_SAMPLE:
            self.count("allocation samples")
            samples.extend(self.uvarints(2))  # address, bucket
        elif tag == _TYPE:
            self.uvarints(2)
            self.skip_string()
            self.uvarint()
        elif tag == _ITAB:
            self.uvarints(2)
        elif tag == _OS_THREAD:
            self.uvarints(3)
        else:
            raise HeapDumpError("unknown record tag")

    def roots(
        self, dump: HeapDump, kind: RootKind, source: int, label: str, start: int, size: int
    ) -> None:
        before = len(dump.root_targets)
        self.fields(start, size, dump.root_targets, dump.root_views)
        added = len(dump.root_targets) - before
        if added:
            dump.root_kinds.extend([kind] * added)
            dump.root_sources.extend([source] * added)
            dump.root_labels.extend([self.label(dump, label)] * added)

    def stack_frame(self) -> tuple[str, str, int]:
        """One frame of a profile bucket's stack: (function, file, line), stored once."""
        frame = (self.string(), self.string(), self.uvarint())
        found = self.stack_frames.get(frame)
        if found is None:
            self.count("distinct profile frames")
            found = self.stack_frames[frame] = frame
        return found

    def root(self, dump: HeapDump, kind: RootKind, source: int, label: str, target: int) -> None:
        """One root from a record of its own (not a range of pointer slots): counted, since
        such a record can be as short as three bytes."""
        self.count("finalizer, defer, panic and other roots")
        if target:
            dump.root_kinds.append(kind)
            dump.root_sources.append(source)
            dump.root_labels.append(self.label(dump, label))
            dump.root_targets.append(target)
            dump.root_views.append(0)

    def goid_at(self, address: int) -> int:
        """The id of the goroutine whose record (G) is at `address`: defer and panic records
        name their goroutine by address, and follow its frames."""
        g = self.goroutine
        return g.goid if g is not None and g.address == address else 0

    def label(self, dump: HeapDump, label: str) -> int:
        index = self.label_ids.get(label)
        if index is None:
            index = self.label_ids[label] = len(dump.labels)
            dump.labels.append(label)
        return index

    def end_goroutine(self, dump: HeapDump) -> None:
        g = self.goroutine
        if g is not None:
            dump.goroutines[g.goid] = Goroutine(
                g.address, g.goid, g.status, g.system, g.wait_reason, tuple(self.frames)
            )
        self.goroutine, self.frames = None, []
