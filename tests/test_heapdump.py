"""The heap dump reader and who-holds-it analysis, on small hand-made dumps written record by
record the way runtime/heapdump.go writes them."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from leakgate import heapdump, retention
from leakgate.heapdump import HeapDumpError

from .factories import DumpGoroutine, DumpObject, heap_dump_bytes, varint

HEAP = 0xC000010000
CACHE_VAR = 0x600010  # a bss slot: main.cache
SYMBOLS = retention.Symbols(
    [0x600000, 0x600010, 0x600020], [16, 8, 8], ["runtime.other", "main.cache", "main.quiet"]
)


def own(function: str) -> bool:
    return function.startswith("main.")


def cache_dump(entries: int, *, entry_size: int = 1024, capacity: int = 0) -> bytes:
    """main.cache -> a table of `entries` pointers -> one `entry_size` object each, the entries
    allocated in main.remember (sampled); a goroutine in main.worker holds a 4 KiB buffer."""
    table = DumpObject(HEAP, 8 * max(entries, capacity, 1))
    objects = [table]
    samples = []
    for i in range(entries):
        address = HEAP + 0x100000 + i * entry_size
        table.pointers[8 * i] = address
        objects.append(DumpObject(address, entry_size))
        stack = [("runtime.mallocgc", "malloc.go", 1), ("main.remember", "cache.go", 12)]
        samples.append((address, stack))
    buffer = DumpObject(HEAP + 0x800000, 4096)
    objects.append(buffer)
    worker = DumpGoroutine(7, [("runtime.gopark", {}), ("main.worker", {8: buffer.address})])
    return heap_dump_bytes(
        objects,
        bss=(0x600000, 64, {0x10: table.address}),
        goroutines=[worker],
        samples=samples,
        heap_alloc=12345,
    )


def test_a_dump_is_read_record_by_record() -> None:
    dump = heapdump.parse(cache_dump(3))
    assert (dump.version, dump.go_version, dump.arch, dump.heap_alloc) == (
        "go1.7",
        "go1.26.0",
        "amd64",
        12345,
    )
    assert dump.objects == 5
    assert list(dump.sizes) == [24, 1024, 1024, 1024, 4096]
    # the table's three pointers, in order
    assert list(dump.pointers)[:3] == [HEAP + 0x100000 + i * 1024 for i in range(3)]
    assert list(dump.starts) == [0, 3, 3, 3, 3, 3]
    kinds = list(zip(dump.root_kinds, dump.root_sources, dump.root_targets, strict=True))
    assert ("bss", CACHE_VAR, HEAP) in kinds
    assert ("stack", 7, HEAP + 0x800000) in kinds
    assert dump.goroutines[7].frames == ("runtime.gopark", "main.worker")
    assert dump.alloc_stacks[HEAP + 0x100000][1] == ("main.remember", "cache.go", 12)
    assert dump.segments["bss"] == (0x600000, 64)


def test_the_variable_that_grew_is_named_first_with_what_it_holds() -> None:
    before, after = heapdump.parse(cache_dump(10)), heapdump.parse(cache_dump(200))
    found = retention.holders(before, after, SYMBOLS, own)
    assert [h.name for h in found] == ["main.cache"]
    cache = found[0]
    assert cache.kind == "variable"
    assert cache.growth == 190 * 1024 + 8 * 190  # the entries and the table's growth
    assert cache.objects == 190
    assert (cache.object_size, cache.object_count) == (1024, 190)
    assert cache.allocated_at == "main.remember"
    assert cache.description.startswith("+191.5 KiB in 190 more objects kept alive by package ")
    assert "main.cache; most of it 190 objects of 1.0 KiB, allocated in main.remember" in (
        cache.description
    )


def test_goroutine_stacks_are_one_holder_named_by_their_own_frame() -> None:
    def dump(goroutines: int) -> heapdump.HeapDump:
        objects = [DumpObject(HEAP + i * 0x10000, 0x10000) for i in range(goroutines)]
        gs = [
            DumpGoroutine(
                100 + i, [("runtime.chansend", {0: o.address}), ("main.produce.func1", {})]
            )
            for i, o in enumerate(objects)
        ]
        return heapdump.parse(heap_dump_bytes(objects, goroutines=gs))

    found = retention.holders(dump(1), dump(12), SYMBOLS, own)
    assert [(h.kind, h.name, h.goroutines, h.goroutines_added, h.waiting) for h in found] == [
        ("goroutines", "main.produce.func1", 12, 11, "chan send")
    ]
    assert "11 more of them than at warm-up, blocked in chan send" in found[0].description
    assert found[0].growth == 11 * 0x10000
    assert "kept alive by the stacks of 12 goroutines in main.produce.func1" in found[0].description


def test_interior_pointers_keep_the_whole_object_and_the_nearest_root_wins() -> None:
    """A 16-byte sub-slice of a 32 KiB array keeps all 32 KiB alive; memory reachable from a
    variable and (further) from a stack counts for the variable."""
    arrays = [DumpObject(HEAP + 0x100000 + i * 0x8000, 0x8000) for i in range(8)]
    table = DumpObject(HEAP, 64, {8 * i: a.address + 0x100 for i, a in enumerate(arrays)})
    holder = DumpObject(HEAP + 0x1000, 16, {0: table.address})
    g = DumpGoroutine(3, [("main.serve", {0: holder.address})])
    data = heap_dump_bytes(
        [table, holder, *arrays], bss=(0x600000, 64, {0x10: table.address}), goroutines=[g]
    )
    empty = heap_dump_bytes([table, holder], bss=(0x600000, 64, {0x10: table.address}))
    found = retention.holders(heapdump.parse(empty), heapdump.parse(data), SYMBOLS, own)
    grown = [(h.name, h.growth, h.object_size, h.pinned) for h in found]
    assert grown == [("main.cache", 8 * 0x8000, 0x8000, 8 * 0x8000)]
    assert "kept whole through a pointer into each: a small sub-slice" in found[0].description


def test_a_short_slice_of_a_large_array_pins_it() -> None:
    """[]byte headers (pointer, len 16, cap 4096) at the start of 4 KiB arrays: the classic
    `keep = buf[:16]`, whose length is read from the two words after the pointer."""
    arrays = [DumpObject(HEAP + 0x100000 + i * 0x1000, 0x1000) for i in range(40)]

    def dump(n: int, length: int) -> heapdump.HeapDump:
        table = DumpObject(HEAP, 24 * max(n, 1))
        raw = bytearray(
            heap_dump_bytes([table, *arrays[:n]], bss=(0x600000, 64, {0x10: table.address}))
        )
        return heapdump.parse(_with_slices(raw, table, [a.address for a in arrays[:n]], length))

    found = retention.holders(dump(2, 16), dump(40, 16), SYMBOLS, own)
    assert found[0].name == "main.cache" and found[0].pinned == 38 * 0x1000
    assert found[0].pinned_view == 16
    assert "kept whole through a 16 B slice of each: a small sub-slice" in found[0].description
    # the same arrays seen whole (len 4096) pin nothing
    plain = retention.holders(dump(2, 4096), dump(40, 4096), SYMBOLS, own)
    assert plain[0].growth == found[0].growth
    assert plain[0].pinned == 0 and "sub-slice" not in plain[0].description


def _with_slices(raw: bytearray, table: DumpObject, targets: list[int], length: int) -> bytes:
    """`table` (written by heap_dump_bytes with zero contents) rewritten as slice headers
    (pointer, len, cap 4096) to `targets`, with its field list marking the pointers."""
    start = raw.index(b"\x01" + varint(table.address))  # the object record
    at = start + 1 + len(varint(table.address)) + len(varint(table.size))
    for i, target in enumerate(targets):
        header = target.to_bytes(8, "little") + length.to_bytes(8, "little")
        raw[at + 24 * i : at + 24 * i + 24] = header + (4096).to_bytes(8, "little")
    fields_at = at + table.size
    end = raw.index(b"\x00", fields_at)  # the table had no pointer fields: just Eol
    fields = b"".join(varint(1) + varint(24 * i) for i in range(len(targets)))
    return bytes(raw[:fields_at] + fields + raw[end:])


def test_the_retention_tree_adds_up() -> None:
    """Every node's bytes are its subtree's and its objects the ones added at it: the table
    (the same 2 KiB both times) holds all of the growth, the entries under it all but none."""
    before = heapdump.parse(cache_dump(10, capacity=256))
    after = heapdump.parse(cache_dump(200, capacity=256))
    (cache,) = retention.holders(before, after, SYMBOLS, own)
    assert [(p.sizes, p.growth, p.objects) for p in cache.paths] == [
        ((2048,), 190 * 1024, 0),
        ((2048, 1024), 190 * 1024, 190),
    ]
    assert cache.growth == 190 * 1024


def test_a_path_that_changed_shape_counts_where_it_went() -> None:
    """A table that was reallocated larger: the new shape carries all it holds, the old one
    shrank; the report's tree shows the difference as "other paths"."""
    before, after = heapdump.parse(cache_dump(10)), heapdump.parse(cache_dump(200))
    (cache,) = retention.holders(before, after, SYMBOLS, own)
    top = {p.sizes: p.growth for p in cache.paths if len(p.sizes) == 1}
    assert top == {(1600,): 1600 + 200 * 1024}
    assert cache.growth == top[(1600,)] - (80 + 10 * 1024)


def test_nothing_grew_nothing_is_named() -> None:
    same = heapdump.parse(cache_dump(50))
    assert retention.holders(same, same, SYMBOLS, own) == []


def test_holders_over_trials_add_up_and_count_the_trials() -> None:
    before, after = heapdump.parse(cache_dump(10)), heapdump.parse(cache_dump(200))
    one = retention.holders(before, after, SYMBOLS, own)
    merged = retention.merge([one, one, []])
    assert len(merged) == 1
    assert merged[0].trials == 2 and merged[0].growth == 2 * one[0].growth
    assert merged[0].share == 1.0


def test_a_variable_without_a_symbol_is_named_by_its_address() -> None:
    before, after = heapdump.parse(cache_dump(10)), heapdump.parse(cache_dump(200))
    found = retention.holders(before, after, retention.load_symbols(None), own)
    assert found[0].name == "bss segment +0x600010"


def test_symbols_round_trip_through_the_report_directory(tmp_path: Path) -> None:
    path = tmp_path / "symbols.txt"
    path.write_text("600010 8 main.cache\n600000 16 runtime.other\n")
    symbols = retention.load_symbols(path)
    assert symbols.name(0x600010) == "main.cache"
    assert symbols.name(0x600017) == "main.cache"
    assert symbols.name(0x600018) is None
    assert symbols.name(0x600004) == "runtime.other"


def test_a_real_binarys_data_symbols_are_read(tmp_path: Path) -> None:
    rows = retention.elf_symbols(Path(sys.executable).resolve())
    # CPython's own binary: an ELF file with a symbol table, or stripped (then nothing)
    assert all(size >= 0 and name for _, size, name in rows)
    assert retention.elf_symbols(tmp_path / "missing") == []
    (tmp_path / "text").write_text("not an ELF file")
    assert retention.elf_symbols(tmp_path / "text") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"go1.4 heap dump\n", "not a Go heap dump"),
        (b"go1.7 heap dump\n", "truncated"),
        (b"go1.7 heap dump\n" + varint(99), "unknown record tag"),
        (b"go1.7 heap dump\n" + varint(1) + varint(HEAP) + varint(1 << 40), "runs past the end"),
        (
            b"go1.7 heap dump\n"
            + varint(1)
            + varint(HEAP)
            + varint(8)
            + bytes(8)
            + varint(1)
            + varint(4)
            + varint(0)
            + varint(0),
            "a pointer field at offset 4 of a 8-byte range",
        ),
        (
            b"go1.7 heap dump\n"
            + varint(1)
            + varint(HEAP)
            + varint(8)
            + bytes(8)
            + varint(2)
            + varint(0)
            + varint(0),
            "field kind 2",
        ),
        (
            b"go1.7 heap dump\n"
            + varint(1)
            + varint(HEAP)
            + varint(16)
            + bytes(16)
            + (varint(1) + varint(8)) * 2
            + varint(0),
            "a pointer field given twice in a 16-byte range",
        ),
        (
            b"go1.7 heap dump\n" + varint(1) + varint(HEAP) + varint(4) + bytes(4) + varint(0),
            "a heap object of 4 bytes",
        ),
        (b"go1.7 heap dump\n" + b"\xff" * 11, "longer than 10 bytes"),
        (b"go1.7 heap dump\n" + varint(1) + b"\xff" * 9 + b"\x7f", "over 64 bits"),
        (b"go1.7 heap dump\n" + varint(16) + varint(1) + varint(0) + varint(1 << 30), "frames"),
    ],
)
def test_a_damaged_dump_is_refused_with_where(data: bytes, message: str) -> None:
    with pytest.raises(HeapDumpError, match=message):
        heapdump.parse(data)


def test_a_dump_over_the_bound_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "big.heapdump"
    path.write_bytes(cache_dump(100))
    with pytest.raises(HeapDumpError, match=r"big.heapdump: \d+ bytes, over the 1000-byte bound"):
        heapdump.load(path, max_bytes=1000)
    assert heapdump.load(path).objects == 102


def test_slice_headers_are_read_after_their_pointer() -> None:
    """A narrow slice (len 16 of cap 4096) is marked; a slice seen whole, or two words that are
    no slice header (len > cap), are not."""
    objects = [DumpObject(HEAP + 0x1000 * (i + 1), 4096) for i in range(3)]
    table = DumpObject(HEAP, 72)
    raw = bytearray(heap_dump_bytes([table, *objects]))
    headers = [(16, 4096), (4096, 4096), (9, 3)]
    raw = bytearray(_with_slices(raw, table, [o.address for o in objects], 0))
    at = raw.index(objects[0].address.to_bytes(8, "little"))
    for i, (length, capacity) in enumerate(headers):
        raw[at + 24 * i + 8 : at + 24 * i + 24] = length.to_bytes(8, "little") + capacity.to_bytes(
            8, "little"
        )
    dump = heapdump.parse(bytes(raw))
    assert list(dump.views) == [16 << 32 | 4096, 0, 0]


def test_a_deferred_closure_is_held_by_its_goroutine() -> None:
    """Defer records name their goroutine by its G's address, not its id."""
    closure = DumpObject(HEAP, 0x20000)

    def dump(with_defer: bool) -> heapdump.HeapDump:
        g = DumpGoroutine(9, [("main.serve", {})], defers=[closure.address] if with_defer else [])
        return heapdump.parse(heap_dump_bytes([closure], goroutines=[g]))

    assert dump(True).root_sources[-1] == 9
    found = retention.holders(dump(False), dump(True), SYMBOLS, own)
    assert [(h.kind, h.name, h.goroutines) for h in found] == [("goroutines", "main.serve", 1)]


def test_goroutines_added_since_a_warm_up_that_had_none() -> None:
    buffers = [DumpObject(HEAP + i * 0x10000, 0x10000) for i in range(5)]
    gs = [DumpGoroutine(20 + i, [("main.wait", {0: b.address})]) for i, b in enumerate(buffers)]
    empty = heapdump.parse(heap_dump_bytes())
    found = retention.holders(
        empty, heapdump.parse(heap_dump_bytes(buffers, goroutines=gs)), SYMBOLS, own
    )
    assert found[0].goroutines_added == 5
    assert "5 more of them than at warm-up" in found[0].description


def test_holders_of_trials_merge_their_trees_and_sizes() -> None:
    before = heapdump.parse(cache_dump(10, capacity=256))
    after = heapdump.parse(cache_dump(200, capacity=256))
    one = retention.holders(before, after, SYMBOLS, own)
    (merged,) = retention.merge([one, one])
    assert (merged.object_size, merged.object_count) == (1024, 2 * 190)
    assert [(p.sizes, p.growth) for p in merged.paths] == [
        ((2048,), 2 * 190 * 1024),
        ((2048, 1024), 2 * 190 * 1024),
    ]


def held_dump(
    entries: int,
    *,
    table_size: int,
    table_stack: Sequence[tuple[str, str, int]] = (),
    entry_stack: Sequence[tuple[str, str, int]] = (("main.remember", "cache.go", 12),),
    variable: int = CACHE_VAR,
    goroutine: str = "",
) -> heapdump.HeapDump:
    """A root (the bss slot `variable`, or the frame of a goroutine in `goroutine`) -> one
    `table_size` array (sampled with `table_stack`) -> `entries` 1 KiB objects (sampled with
    `entry_stack`)."""
    table = DumpObject(HEAP, table_size)
    objects = [table]
    samples = [(table.address, table_stack)] if table_stack else []
    for i in range(entries):
        entry = DumpObject(HEAP + 0x1000000 + i * 1024, 1024)
        table.pointers[8 * i] = entry.address
        objects.append(entry)
        samples.append((entry.address, [("runtime.mallocgc", "malloc.go", 1), *entry_stack]))
    if goroutine:
        g = DumpGoroutine(3, [("runtime.gopark", {}), (goroutine, {0: table.address})], "select")
        return heapdump.parse(heap_dump_bytes(objects, goroutines=[g], samples=samples))
    bss = (0x600000, 64, {variable - 0x600000: table.address})
    return heapdump.parse(heap_dump_bytes(objects, bss=bss, samples=samples))


APPEND = [("runtime.growslice", "slice.go", 1), ("main.enqueue", "queue.go", 30)]


def test_one_appended_array_that_reaches_the_growth_is_a_slice_never_trimmed() -> None:
    before = held_dump(10, table_size=0x10000, table_stack=APPEND)
    after = held_dump(300, table_size=0x20000, table_stack=APPEND)
    (queue,) = retention.holders(before, after, SYMBOLS, own)
    assert queue.slice_array == 0x20000
    assert ". One 128.0 KiB slice backing array reaches most of it: a slice that is only " in (
        queue.description
    )
    assert "Nothing removes what is added" not in queue.description


def test_a_slice_a_long_lived_goroutine_only_appends_to_is_named_as_a_slice() -> None:
    before = held_dump(10, table_size=0x10000, table_stack=APPEND, goroutine="main.worker")
    after = held_dump(300, table_size=0x20000, table_stack=APPEND, goroutine="main.worker")
    (queue,) = retention.holders(before, after, SYMBOLS, own)
    assert (queue.kind, queue.name, queue.goroutines_added) == ("goroutines", "main.worker", 0)
    assert "slice backing array reaches most of it" in queue.description
    assert "A long-lived goroutine" not in queue.description


@pytest.mark.parametrize(
    ("table_size", "stack"),
    [
        (0x20000, [("runtime.makeBucketArray", "map.go", 1), ("main.enqueue", "queue.go", 30)]),
        (0x20000, []),  # the array was not sampled: what made it is not known
        (0x8000, APPEND),  # too small to be what a leak is made of
    ],
)
def test_an_array_not_made_by_append_or_small_is_not_called_a_slice(
    table_size: int, stack: list[tuple[str, str, int]]
) -> None:
    before = held_dump(10, table_size=min(table_size, 0x10000), table_stack=stack)
    after = held_dump(300, table_size=table_size, table_stack=stack)
    (held,) = retention.holders(before, after, SYMBOLS, own)
    assert held.slice_array == 0
    assert "Nothing removes what is added" in held.description


def test_a_slice_reaching_less_than_half_the_growth_is_not_named() -> None:
    """main.cache's appended array reaches 100 KiB of a growth of 400 KiB: the rest is a
    300 KiB object it points to directly, so the slice is not what the holder is about."""
    symbols = retention.Symbols([CACHE_VAR], [16], ["main.cache"])

    def dump(entries: int, other: int) -> heapdump.HeapDump:
        big = DumpObject(HEAP + 0x8000000, other)
        table = DumpObject(HEAP, 0x10000)
        objects = [table, big]
        for i in range(entries):
            table.pointers[8 * i] = HEAP + 0x1000000 + i * 1024
            objects.append(DumpObject(table.pointers[8 * i], 1024))
        samples = [(HEAP, APPEND)]
        bss = (0x600000, 64, {0x10: table.address, 0x18: big.address})
        return heapdump.parse(heap_dump_bytes(objects, bss=bss, samples=samples))

    (held,) = retention.holders(dump(10, 1024), dump(110, 300 * 1024), symbols, own)
    assert held.name == "main.cache" and held.slice_array == 0
    (queue,) = retention.holders(dump(10, 1024), dump(400, 1024), symbols, own)
    assert queue.slice_array == 0x10000


def test_armed_timers_are_named_as_the_runtimes_timers() -> None:
    symbols = retention.Symbols([0x600010], [8], ["runtime.allp"])
    stack = [("time.AfterFunc", "sleep.go", 1), ("main.watch", "watch.go", 9)]
    before = held_dump(10, table_size=0x10000, entry_stack=stack)
    after = held_dump(300, table_size=0x10000, entry_stack=stack)
    (timers,) = retention.holders(before, after, symbols, own)
    assert (timers.kind, timers.name, timers.made_by) == ("variable", "runtime.allp", "time")
    assert "kept alive by the runtime's timers (runtime.allp: each P's timer heap)" in (
        timers.description
    )
    assert ". Timers armed and never stopped (time.AfterFunc" in timers.description
    assert "allocated in main.watch" in timers.description


def test_contexts_never_cancelled_are_told_by_what_made_them() -> None:
    made = [("context.withCancel", "context.go", 1), ("main.derive", "jobs.go", 40)]
    before = held_dump(10, table_size=0x10000, entry_stack=made, goroutine="main.run")
    after = held_dump(300, table_size=0x10000, entry_stack=made, goroutine="main.run")
    (held,) = retention.holders(before, after, SYMBOLS, own)
    assert (held.kind, held.name, held.made_by, held.made_share) == (
        "goroutines",
        "main.run",
        "context",
        1.0,
    )
    assert (
        ". 100% of the sampled bytes it gained were made by context.With… in main.derive: a "
        in (held.description)
    )
    # the same growth made by the service's own code is a long-lived goroutine's locals
    plain = held_dump(300, table_size=0x10000, goroutine="main.run")
    (locals_,) = retention.holders(
        held_dump(10, table_size=0x10000, goroutine="main.run"), plain, SYMBOLS, own
    )
    assert (
        locals_.made_by == "runtime" and "A long-lived goroutine reaches it" in locals_.description
    )


@pytest.mark.parametrize(
    ("function", "package"),
    [
        ("context.WithCancel", "context"),
        ("net/http.(*Client).Do", "net/http"),
        ("example.com/shop/orders.(*Store).Put", "example.com/shop/orders"),
        ("gopkg.in/yaml%2ev3.Unmarshal", "gopkg.in/yaml%2ev3"),
        ("main.main.func1", "main"),
        ("", ""),
    ],
)
def test_a_functions_package(function: str, package: str) -> None:
    assert retention.package(function) == package


@pytest.mark.parametrize(
    ("what", "record"),
    [
        ("distinct strings", lambda n: varint(2) + varint(len(b"%d" % n)) + b"%d" % n + varint(8)),
        ("allocation samples", lambda n: varint(17) + varint(HEAP + 16 * n) + varint(1)),
        ("goroutines", lambda n: varint(4) + varint(n) * 8 + varint(0) + varint(0) * 4),
        ("finalizer, defer, panic and other roots", lambda n: varint(2) + varint(0) + varint(8)),
        (
            "distinct profile frames",
            lambda n: (
                varint(16)
                + varint(n)
                + varint(8)
                + varint(1)
                + b"\x00\x00"
                + varint(n)
                + varint(1) * 2
            ),
        ),
    ],
)
def test_more_of_what_costs_memory_than_a_real_dump_has_is_refused(
    monkeypatch: pytest.MonkeyPatch, what: str, record: Callable[[int], bytes]
) -> None:
    monkeypatch.setitem(heapdump.LIMITS, what, 50)
    records = b"".join(record(n) for n in range(50))
    heapdump.parse(b"go1.7 heap dump\n" + records + varint(0))  # at the limit: read
    with pytest.raises(HeapDumpError, match=f"more than 50 {what}: not a real program's dump"):
        heapdump.parse(b"go1.7 heap dump\n" + records + record(50) + varint(0))


def test_names_and_profile_frames_are_stored_once() -> None:
    frames = [("main.serve", {0: HEAP}), ("main.serve", {0: HEAP})]
    stack = [("runtime.mallocgc", "malloc.go", 1), ("main.remember", "cache.go", 12)]
    dump = heapdump.parse(
        heap_dump_bytes(
            [DumpObject(HEAP, 64), DumpObject(HEAP + 64, 64)],
            goroutines=[DumpGoroutine(1, frames), DumpGoroutine(2, frames)],
            samples=[(HEAP, stack), (HEAP + 64, stack)],
        )
    )
    names = [f for g in dump.goroutines.values() for f in g.frames]
    assert len(names) == 4 and all(name is names[0] for name in names)
    one, two = dump.alloc_stacks[HEAP], dump.alloc_stacks[HEAP + 64]
    assert one == two and all(a is b for a, b in zip(one, two, strict=True))
