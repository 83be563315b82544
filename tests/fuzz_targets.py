"""The parsers leakgate points at untrusted input, each with the one error it may raise.

A parser fed anything must either return or raise its documented error: never another
exception (an internal error, exit 3), never a hang. Used by tests/test_fuzz.py (a short
hypothesis run) and bench/fuzz.py (>= 100,000 inputs per parser). Inputs are bytes; each
target decodes them the way leakgate receives that input.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leakgate import heapdump, pprof, prometheus, retention
from leakgate.config import parse_config
from leakgate.errors import ConfigError, LoadError
from leakgate.load.builtin import parse_result
from leakgate.load.external import read_results
from leakgate.load.wrk import MARKER, parse_wrk_output
from leakgate.probes import ProbeError, expvar_sample

from .factories import (
    LOADGEN_RESULT,
    TINY_ENTRY,
    TINY_SAMPLE,
    DumpGoroutine,
    DumpObject,
    heap_dump_bytes,
    profile_bytes,
    wire_field,
    wrk_result,
)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], object]
    allowed: tuple[type[BaseException], ...]
    seeds: tuple[bytes, ...]  # valid inputs that mutations start from
    # inputs the parser must refuse with its error, quickly and in little memory (bombs);
    # mutations start from these too
    refused: tuple[bytes, ...] = ()


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _vegeta(data: bytes) -> object:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(data)
        f.flush()
        return read_results([Path(f.name)])


# The valid profile every bomb starts from: one sample of 4096 bytes in main.leak.
_PROFILE = profile_bytes(
    [(["main.leak"], [4096])], ("inuse_space",), file="main.go", line=7, compress=False
)


def profile_bomb(samples: int, *, compress: bool = True) -> bytes:
    """A valid profile of `samples` tiny samples: 8 bytes apiece, so the 8.4 M of issue 14's
    bomb are 64 MiB that gzip to ~65 KB (and took 2.8 GB and 40 s to decode before the caps)."""
    raw = _PROFILE + TINY_SAMPLE * samples
    return gzip.compress(raw, compresslevel=9) if compress else raw


def long_tag_bomb(samples: int) -> bytes:
    """`samples` tiny samples, every other one with its tag written in two bytes (`92 00`, which
    the decoder reads as `12`), gzipped: each half under the sample cap, the whole over it."""
    pair = TINY_SAMPLE + b"\x92\x00" + TINY_SAMPLE[1:]
    return gzip.compress(_PROFILE + pair * (samples // 2), compresslevel=9)


def empty_lines_bomb(lines: int, *, locations: int = 1) -> bytes:
    """`locations` locations of `lines` empty lines each (`22 00`, 2 bytes a line), gzipped."""
    location = wire_field(4, b"\x08\x02" + b"\x22\x00" * lines)
    return gzip.compress(_PROFILE + location * locations, compresslevel=9)


def table_bomb(kind: str, count: int) -> bytes:
    """A profile with `count` more entries of one table (mapping, location, ...), gzipped."""
    return gzip.compress(_PROFILE + TINY_ENTRY[kind] * count, compresslevel=9)


# Caps small enough that every bomb below is refused in microseconds: the fuzz targets then
# reach the cap checks on every mutation instead of allocating what a real-size bomb would.
SMALL_LIMITS = pprof.Limits(
    compressed_bytes=16 * 1024,
    decompressed_bytes=64 * 1024,
    samples=64,
    locations=64,
    functions=64,
    strings=64,
    mappings=16,
    other_fields=64,
    lines=64,
    lines_per_location=16,
)
SMALL_BOMBS = (
    profile_bomb(65),
    profile_bomb(65, compress=False),
    profile_bomb(100_000),  # 800 KB: over the byte cap as well
    *(table_bomb(kind, 65) for kind in TINY_ENTRY),
    gzip.compress(b"\0" * (1024 * 1024), compresslevel=9),  # zeros: the byte cap alone
    long_tag_bomb(66),  # 33 + 33 samples: over the cap together
    empty_lines_bomb(17),  # one location over lines_per_location
    empty_lines_bomb(16, locations=5),  # each location under it, over `lines` in all
    empty_lines_bomb(20_000),  # 40 KB of empty lines
)
_VEGETA = (
    b'{"attack":"","seq":0,"code":200,"timestamp":"2026-11-27T08:00:00.000000001Z",'
    b'"latency":1200000,"bytes_out":0,"bytes_in":2,"error":"","body":null}\n'
)
_WRK = (MARKER + " " + json.dumps(wrk_result(requests=1000)) + "\n").encode()


def _holders(data: bytes) -> object:
    """A dump read and analysed against itself: the analysis must survive what the reader
    accepts (pointers anywhere, frames of goroutines it never saw)."""
    dump = heapdump.parse(data)
    return retention.attribute(dump, retention.load_symbols(None), lambda f: f.startswith("main."))


_OBJECTS = [
    DumpObject(0xC000000000, 32, {0: 0xC000000100, 8: 0xC000000108}),
    DumpObject(0xC000000100, 64, {16: 0xC000000000}),
]
_DUMP = heap_dump_bytes(
    _OBJECTS,
    bss=(0x600000, 32, {8: 0xC000000000}),
    goroutines=[DumpGoroutine(5, [("runtime.gopark", {}), ("main.work", {0: 0xC000000110})])],
    samples=[(0xC000000100, [("main.work", "w.go", 3)])],
)

TARGETS: tuple[Target, ...] = (
    Target("heapdump", heapdump.parse, (heapdump.HeapDumpError,), (_DUMP,)),
    Target("heapdump-holders", _holders, (heapdump.HeapDumpError,), (_DUMP,)),
    Target(
        "pprof",
        pprof.parse,
        (pprof.ProfileError,),
        (_PROFILE, gzip.compress(_PROFILE)),
    ),
    Target(
        "pprof-capped",
        lambda d: pprof.parse(d, SMALL_LIMITS),
        (pprof.ProfileError,),
        (_PROFILE, profile_bomb(63), profile_bomb(63, compress=False)),
        SMALL_BOMBS,
    ),
    Target(
        "prometheus",
        lambda d: prometheus.parse(_text(d)),
        (prometheus.MetricsError,),
        (b"# TYPE go_goroutines gauge\ngo_goroutines 12\ngo_gc_duration_seconds_count 3\n",),
    ),
    Target(
        "expvar",
        lambda d: expvar_sample(d, "/debug/vars"),
        (ProbeError,),
        (b'{"memstats": {"HeapAlloc": 123, "NextGC": 4194304, "NumGC": 2}, "cmdline": []}',),
    ),
    Target("wrk-output", lambda d: parse_wrk_output(_text(d)), (LoadError,), (_WRK,)),
    Target(
        "loadgen-result",
        lambda d: parse_result(_text(d)),
        (LoadError,),
        (LOADGEN_RESULT,),
    ),
    Target("vegeta-results", _vegeta, (LoadError,), (_VEGETA, _VEGETA * 3)),
    Target(
        "config",
        lambda d: parse_config(_text(d), "fuzz.yml"),
        (ConfigError,),
        (
            b"service:\n  ready_path: /healthz\nload:\n  duration: 5s\n  rate: auto\n"
            b"thresholds:\n  p95_latency: {max: 200ms, max_increase: 10%}\n",
        ),
    ),
)
