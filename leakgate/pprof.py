"""Read pprof profiles: gzip + protobuf (leakgate/proto/profile.proto), with limits and checks.

A profile comes from a service under test, so it is untrusted input: both the compressed and the
decompressed size are capped (a gzip bomb stops at the cap, not in swap), every index into the
string, function and location tables is checked, and anything that is not a profile (an HTML
error page, a text `?debug=1` dump, a truncated download) is a `ProfileError` that says what it
got instead. Stacks are kept as tuples of location ids, cheap to hash and count; they become
`Frame`s (function, file, line, inlined calls expanded) only where a report needs them.
"""

from __future__ import annotations

import gzip
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import DecodeError

from leakgate.proto import profile_pb2
from leakgate.units import format_size

MAX_COMPRESSED_BYTES = 64 * 1024 * 1024
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024
_CHUNK = 1024 * 1024


class ProfileError(ValueError):
    """Not a readable pprof profile; the message names the source and what was wrong."""


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str
    line: int

    def __str__(self) -> str:
        where = f"{self.file.rsplit('/', 1)[-1]}:{self.line}" if self.file else "?"
        return f"{self.function} ({where})"


Stack = tuple[int, ...]  # location ids, leaf first


@dataclass(frozen=True, slots=True)
class Profile:
    """A decoded, validated profile. Values are indexed like `sample_types`."""

    sample_types: tuple[tuple[str, str], ...]  # (type, unit), e.g. ("inuse_space", "bytes")
    samples: tuple[tuple[Stack, tuple[int, ...]], ...]
    locations: dict[int, tuple[Frame, ...]]  # id -> frames, innermost inlined call first
    period_type: tuple[str, str] = ("", "")
    period: int = 0
    duration_nanos: int = 0

    def value_index(self, sample_type: str) -> int:
        """The position of `sample_type` (e.g. "inuse_space") in each sample's values."""
        for i, (name, _) in enumerate(self.sample_types):
            if name == sample_type:
                return i
        have = ", ".join(name for name, _ in self.sample_types) or "none"
        raise ProfileError(f"the profile has no {sample_type!r} values (it has: {have})")

    def totals(self) -> dict[str, int]:
        """Sum of every sample type's values over all samples."""
        sums = [0] * len(self.sample_types)
        for _, values in self.samples:
            for i, v in enumerate(values):
                sums[i] += v
        return {name: total for (name, _), total in zip(self.sample_types, sums, strict=True)}

    def by_stack(self, sample_type: str) -> Counter[Stack]:
        """Value per distinct stack (samples with the same stack and labels are merged)."""
        i = self.value_index(sample_type)
        out: Counter[Stack] = Counter()
        for stack, values in self.samples:
            if values[i]:
                out[stack] += values[i]
        return out

    def frames(self, stack: Stack) -> tuple[Frame, ...]:
        """The stack as frames, leaf first, inlined calls expanded."""
        return tuple(f for loc in stack for f in self.locations[loc])

    def by_function(self, sample_type: str, *, cumulative: bool = False) -> Counter[str]:
        """Value per function: flat (the leaf frame's) or cumulative (anywhere in the stack)."""
        out: Counter[str] = Counter()
        for stack, value in self.by_stack(sample_type).items():
            frames = self.frames(stack)
            if not frames:
                continue
            if cumulative:
                for name in {f.function for f in frames}:
                    out[name] += value
            else:
                out[frames[0].function] += value
        return out


def load(path: Path) -> Profile:
    """Read a profile file (gzipped or plain protobuf)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_COMPRESSED_BYTES + 1)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse(data)
    except ProfileError as e:
        raise ProfileError(f"{path}: {e}") from None


def parse(data: bytes) -> Profile:
    """Decode profile bytes as served by /debug/pprof/<name> (debug=0)."""
    if len(data) > MAX_COMPRESSED_BYTES:
        raise ProfileError(f"larger than {format_size(MAX_COMPRESSED_BYTES)}; refusing to read it")
    if not data:
        raise ProfileError("empty: no profile data")
    raw = _gunzip(data) if data[:2] == b"\x1f\x8b" else data
    _reject_text(raw)
    message = profile_pb2.Profile()
    try:
        message.ParseFromString(raw)
    except DecodeError as e:
        raise ProfileError(f"not a pprof profile: corrupt protobuf ({e})") from None
    return _build(message)


def _gunzip(data: bytes) -> bytes:
    """Decompress all gzip members, stopping at the decompressed-size cap."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while not d.eof:
                room = MAX_DECOMPRESSED_BYTES - len(out)
                chunk = d.decompress(rest, min(_CHUNK, room + 1))
                out += chunk
                if len(out) > MAX_DECOMPRESSED_BYTES:
                    raise ProfileError(
                        f"decompresses to more than {format_size(MAX_DECOMPRESSED_BYTES)} "
                        "(a gzip bomb?); refusing to read it"
                    )
                rest = d.unconsumed_tail
                if not chunk and not rest:  # no input left and no output pending
                    break
        except zlib.error as e:
            raise ProfileError(f"corrupt gzip data ({e})") from None
        if not d.eof:
            raise ProfileError(
                f"truncated gzip data: the stream ends after {len(data)} bytes "
                "(an interrupted download?)"
            )
        rest = d.unused_data
        if rest[:2] != b"\x1f\x8b":  # trailing padding, as gzip(1) tolerates
            break
    return bytes(out)


def _reject_text(raw: bytes) -> None:
    head = raw[:256].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<")):
        raise ProfileError("got HTML, not a profile (an error page? check the pprof URL)")
    for prefix in (b"heap profile:", b"goroutine profile:", b"--- ", b"goroutine "):
        if head.startswith(prefix):
            raise ProfileError("got a text profile (?debug=1 or 2); leakgate reads ?debug=0")
    if head.startswith((b"404", b"not found", b"{")) or _is_text(raw[:512]):
        snippet = raw[:80].decode("utf-8", "replace").strip()
        raise ProfileError(f"got text, not a profile: {snippet!r}")


def _is_text(head: bytes) -> bool:
    """Printable ASCII throughout: a protobuf profile starts with binary field tags."""
    return len(head) >= 8 and all(32 <= b < 127 or b in (9, 10, 13) for b in head)


def _build(m: Any) -> Profile:  # a profile_pb2.Profile
    strings = list(m.string_table)
    if strings and strings[0] != "":
        raise ProfileError("invalid profile: string_table[0] must be the empty string")
    n_strings = len(strings)

    def string(index: int, what: str) -> str:
        if not 0 <= index < n_strings:
            raise ProfileError(
                f"invalid profile: {what} points at string {index}, "
                f"but the table has {n_strings} strings"
            )
        return str(strings[index])

    sample_types = tuple(
        (string(v.type, "sample_type.type"), string(v.unit, "sample_type.unit"))
        for v in m.sample_type
    )
    functions: dict[int, tuple[str, str]] = {}
    for fn in m.function:
        if fn.id == 0 or fn.id in functions:
            raise ProfileError(f"invalid profile: function id {fn.id} is zero or repeated")
        functions[fn.id] = (string(fn.name, "function.name"), string(fn.filename, "filename"))
    mapping_ids = {mp.id for mp in m.mapping}
    locations: dict[int, tuple[Frame, ...]] = {}
    for loc in m.location:
        if loc.id == 0 or loc.id in locations:
            raise ProfileError(f"invalid profile: location id {loc.id} is zero or repeated")
        if loc.mapping_id and loc.mapping_id not in mapping_ids:
            raise ProfileError(
                f"invalid profile: location {loc.id} names mapping {loc.mapping_id}, "
                "which the profile does not have"
            )
        frames = []
        for ln in loc.line:
            fn = functions.get(ln.function_id)
            if fn is None:
                raise ProfileError(
                    f"invalid profile: location {loc.id} names function {ln.function_id}, "
                    "which the profile does not have"
                )
            frames.append(Frame(fn[0], fn[1], ln.line))
        if not frames:  # an unsymbolized address
            frames.append(Frame(f"0x{loc.address:x}", "", 0))
        locations[loc.id] = tuple(frames)
    width = len(sample_types)
    samples = [(tuple(s.location_id), tuple(s.value)) for s in m.sample]
    # Checked in bulk (one set of every id used), and located only when something is wrong:
    # a per-id check in Python costs more than decoding the whole profile.
    used: set[int] = set()
    for stack, values in samples:
        used.update(stack)
        if len(values) != width:
            break
    if used - locations.keys() or any(len(v) != width for _, v in samples):
        _locate_bad_sample(samples, locations, width)
    period_type = ("", "")
    if m.HasField("period_type"):
        period_type = (
            string(m.period_type.type, "period_type.type"),
            string(m.period_type.unit, "period_type.unit"),
        )
    return Profile(
        sample_types=sample_types,
        samples=tuple(samples),
        locations=locations,
        period_type=period_type,
        period=m.period,
        duration_nanos=m.duration_nanos,
    )


def _locate_bad_sample(
    samples: list[tuple[Stack, tuple[int, ...]]],
    locations: dict[int, tuple[Frame, ...]],
    width: int,
) -> None:
    for i, (stack, values) in enumerate(samples):
        if len(values) != width:
            raise ProfileError(
                f"invalid profile: sample {i} has {len(values)} values for {width} sample types"
            )
        for loc_id in stack:
            if loc_id not in locations:
                raise ProfileError(
                    f"invalid profile: sample {i} names location {loc_id}, "
                    "which the profile does not have"
                )


def diff(before: Profile, after: Profile, sample_type: str) -> Counter[tuple[Frame, ...]]:
    """Growth per stack (as frames, so the two profiles' own ids do not matter): after - before.

    Only stacks that grew are kept.
    """
    grown: Counter[tuple[Frame, ...]] = Counter()
    for stack, value in after.by_stack(sample_type).items():
        grown[after.frames(stack)] += value
    for stack, value in before.by_stack(sample_type).items():
        grown[before.frames(stack)] -= value
    return Counter({k: v for k, v in grown.items() if v > 0})


def is_own_code(function: str, module: str = "") -> bool:
    """True for the service's own functions (and third-party modules), False for the runtime
    and the standard library: a standard-library import path has no dot in its first element,
    so a service module without one (`go mod init orders`) is named by `module`."""
    if module and function.startswith((module + ".", module + "/")):
        return True
    if function.startswith("main."):
        # leakgate's agent is injected into package main but is not the service's code.
        return not function.startswith("main.leakgateAgent")
    path = function.split("(", 1)[0]
    package = path[: path.rfind("/") + 1] + path[path.rfind("/") + 1 :].split(".", 1)[0]
    return "." in package.split("/", 1)[0]


def first_own_frame(frames: Iterable[Frame], module: str = "") -> Frame | None:
    """The innermost frame that is the service's own code, or None."""
    return next((f for f in frames if is_own_code(f.function, module)), None)


def gzip_bytes(raw: bytes) -> bytes:
    """Compress as the Go runtime does; used by tests and benchmarks that write profiles."""
    return gzip.compress(raw, compresslevel=1)
