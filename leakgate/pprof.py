"""Read pprof profiles: gzip + protobuf (leakgate/proto/profile.proto), with limits and checks.

A profile comes from a service under test, so it is untrusted input. What leakgate reads of one
is capped (`Limits`): the compressed and the decompressed size (a gzip bomb stops at the cap,
not in swap) and the number of entries in each table — samples, locations and their lines,
functions, strings, mappings — counted on the wire format before anything is decoded, however a
tag is written, because the protobuf decoder materialises the whole message at once and a tiny
sample costs ~40 times its wire size in memory. Fields leakgate does not read are not decoded.
Every index into the string, function and location tables is checked, and anything that is not a
profile (an HTML error page, a text `?debug=1` dump, a truncated download, a bomb) is a
`ProfileError` that says what it got instead; callers turn it into a note. Stacks are kept as
tuples of location ids, cheap to hash and count; they become `Frame`s (function, file, line,
inlined calls expanded) only where a report needs them.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from leakgate.proto import profile_pb2
from leakgate.units import format_size

_CHUNK = 1024 * 1024
_MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The most leakgate reads of one profile; beyond any of them the profile is refused.

    Sized from the largest real profile at hand with margin: bench/bigprofile's heap profile
    (every allocation sampled, 2^18 distinct stacks) is 13.8 MiB decompressed with 262,195
    samples, 47 locations, 39 functions and 66 strings; the sample service's heap profile at
    GODEBUG=memprofilerate=1 is 0.05 MiB (515 samples, 617 locations, 507 strings). Within
    these caps decoding one profile peaks under 1 GiB of RSS whatever the input: 819 MiB for
    the costliest shape measured, one 32 MiB stack (`python bench/fuzz.py --memory`; README,
    "Profiles are untrusted input").
    """

    compressed_bytes: int = 32 * _MiB
    decompressed_bytes: int = 32 * 1024 * 1024
    samples: int = 1 << 20
    locations: int = 1 << 20
    functions: int = 1 << 20
    strings: int = 1 << 20
    mappings: int = 1 << 16
    # Sample types, comments, unknown fields; a location's fields besides its lines beyond four
    # (an id, a mapping, an address, is_folded): a handful in real profiles.
    other_fields: int = 1 << 16
    # Lines are a location's inlined calls, each a Frame: capped in all and per location (Go's
    # inliner nests a few deep) before any Frame is made.
    lines: int = 1 << 20
    lines_per_location: int = 256


LIMITS = Limits()

# Top-level field numbers of profile.proto's Profile -> the Limits field that caps their count;
# every other field number counts against other_fields.
_COUNTED = {2: "samples", 3: "mappings", 4: "locations", 5: "functions", 6: "strings"}
_NAMES = {
    "samples": "samples",
    "mappings": "mappings",
    "locations": "locations",
    "functions": "functions",
    "strings": "strings",
    "other_fields": "other fields",
}


class ProfileError(ValueError):
    """Not a readable pprof profile; the message names the source and what was wrong."""


class ProfileTooLarge(ProfileError):
    """Input over one of the `Limits`: refused unread. `recognised` says whether what was read
    of it is a profile's framing (gzip whose start is protobuf wire format, or wire format
    itself; every count cap is hit on the wire format): then it may well be a real profile,
    and a caller that only asks "did pprof answer?" can tell it from a large error page."""

    def __init__(self, message: str, *, recognised: bool) -> None:
        super().__init__(message)
        self.recognised = recognised


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


def _decoded_message() -> Any:
    """profile.proto's Profile as decoded here: only the fields leakgate reads are declared.

    The rest (labels, mapping details, columns, comments) stay unknown fields, which the
    decoder keeps as their raw bytes: a sample's labels materialised cost ~30 times their wire
    size, and a packed `comment` of 32 MiB was ~33 M ints.
    """
    used = {
        "Profile": {
            "sample_type",
            "sample",
            "mapping",
            "location",
            "function",
            "string_table",
            "period_type",
            "period",
            "duration_nanos",
        },
        "Sample": {"location_id", "value"},
        "Mapping": {"id"},
        "Location": {"id", "mapping_id", "address", "line"},
        "Line": {"function_id", "line"},
        "Function": {"id", "name", "filename"},
    }
    file = descriptor_pb2.FileDescriptorProto()
    profile_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "leakgate/proto/profile_decoded.proto"
    file.package = "leakgate.pprof.decoded"
    for message in file.message_type:
        fields = [f for f in message.field if f.name in used.get(message.name, {f.name})]
        del message.field[:]
        message.field.extend(fields)
        for f in message.field:
            if f.type_name:  # a message field: its type is this file's too
                f.type_name = f.type_name.replace(".leakgate.pprof.", f".{file.package}.")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{file.package}.Profile"))


_Decoded = _decoded_message()


def load(path: Path, limits: Limits | None = None) -> Profile:
    """Read a profile file (gzipped or plain protobuf)."""
    limits = limits or LIMITS
    try:
        with path.open("rb") as f:
            data = f.read(limits.compressed_bytes + 1)
    except OSError as e:
        raise ProfileError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse(data, limits)
    except ProfileTooLarge as e:
        raise ProfileTooLarge(f"{path}: {e}", recognised=e.recognised) from None
    except ProfileError as e:
        raise ProfileError(f"{path}: {e}") from None


def parse(data: bytes, limits: Limits | None = None) -> Profile:
    """Decode profile bytes as served by /debug/pprof/<name> (debug=0), within `limits`
    (default `LIMITS`): a profile over any of them is refused before it is decoded."""
    limits = limits or LIMITS
    if len(data) > limits.compressed_bytes:
        raise ProfileTooLarge(
            f"larger than {format_size(limits.compressed_bytes)}; refusing to read it",
            recognised=_framed(_head(data)),
        )
    if not data:
        raise ProfileError("empty: no profile data")
    if data[:2] == b"\x1f\x8b":
        raw = _gunzip(data, limits.decompressed_bytes)
    elif len(data) > limits.decompressed_bytes:
        raise ProfileTooLarge(
            f"larger than {format_size(limits.decompressed_bytes)}; refusing to read it",
            recognised=_framed(data[:_HEAD]),
        )
    else:
        raw = data
    _reject_text(raw)
    count_entries(raw, limits)
    message = _Decoded()
    try:
        message.ParseFromString(raw)
    except DecodeError as e:
        raise ProfileError(f"not a pprof profile: corrupt protobuf ({e})") from None
    return _build(message)


def count_entries(raw: bytes, limits: Limits | None = None) -> dict[str, int]:
    """The number of entries of each top-level table of a protobuf profile, and of lines (a
    location's inlined calls), read from the wire format without decoding any of them; a count
    over its cap in `limits` is a ProfileTooLarge.

    Each table has one counter, checked as it grows, whichever way an entry's tag is written
    (the decoder takes a tag padded to more bytes, `92 00` for `12`, as the same field). A bomb
    is refused after reading `cap + 1` entry headers, not the whole input. Wire types the
    profile format does not use (groups) and field number 0 are refused too: the decoder would
    skip a group, and whatever it held would go uncounted.
    """
    limits = limits or LIMITS
    names = list(_NAMES)
    caps = [getattr(limits, name) for name in names]
    counts = [0] * len(names)
    slot_of = [names.index(_COUNTED.get(n, "other_fields")) for n in range(16)]
    other = names.index("other_fields")
    sample_slot = names.index("samples")
    location_slot = names.index("locations")
    samples, sample_cap = 0, limits.samples
    lines, lines_cap, per_cap = 0, limits.lines, limits.lines_per_location
    i, end = 0, len(raw)
    try:
        while i < end:
            key = raw[i]
            if key == 0x12:  # a sample (field 2, length-delimited): nearly every entry
                size = raw[i + 1]
                if size < 0x80:
                    i += 2 + size
                else:
                    size, i = _varint(raw, i + 1)
                    i += size
                samples += 1
                if samples > sample_cap:
                    _refuse(sample_cap, _NAMES["samples"])
                continue
            i += 1
            if key >= 0x80:
                key, i = _varint(raw, i - 1)
            wire, field = key & 7, key >> 3
            if field == 0:
                raise ProfileError("not a pprof profile: corrupt protobuf (field number 0)")
            slot = slot_of[field] if field < 16 else other
            if wire == 2:
                size = raw[i]
                i += 1
                if size >= 0x80:
                    size, i = _varint(raw, i - 1)
                if slot == location_slot:  # its lines, and fields other than an id and such
                    j, stop = i, i + size
                    here = others = 0
                    id_at = -1  # where the location's id is, if it comes before a refusal
                    most = lines_cap - lines if lines_cap - lines < per_cap else per_cap
                    most_others = 4 + caps[other] - counts[other]
                    while j < stop:
                        key = raw[j]
                        if key == 0x22:  # a line, as Go writes its tag
                            size_ = raw[j + 1]
                            if size_ < 0x80:
                                j += 2 + size_
                            else:
                                size_, j = _varint(raw, j + 1)
                                j += size_
                            here += 1
                            if here > most:
                                break
                            continue
                        if key & 7 == 0 and key < 0x80:  # an id, a mapping, an address
                            if key == 0x08:
                                id_at = j + 1
                            j += 1
                            while raw[j] >= 0x80:
                                j += 1
                            j += 1
                        else:
                            key, j = _skip_field(raw, j)
                            if key == 0x22:  # a line whose tag is padded (`a2 00`)
                                here += 1
                                if here > most:
                                    break
                                continue
                        others += 1
                        if others > most_others:
                            break
                    if here > per_cap:
                        where = f"number {counts[slot] + 1}"
                        if id_at >= 0:
                            where = str(_varint(raw, id_at)[0])
                        raise ProfileTooLarge(
                            f"invalid profile: location {where} has more than {per_cap:,} "
                            f"lines (inlined calls); leakgate reads at most {per_cap}",
                            recognised=True,
                        )
                    lines += here
                    if lines > lines_cap:
                        _refuse(lines_cap, "lines in all locations")
                    if others > 4:  # beyond an id, a mapping, an address and is_folded
                        counts[other] += others - 4
                        if counts[other] > caps[other]:
                            _refuse(caps[other], _NAMES["other_fields"])
                i += size
            elif wire == 0:
                while raw[i] >= 0x80:
                    i += 1
                i += 1
            elif wire == 1:
                i += 8
            elif wire == 5:
                i += 4
            else:
                raise ProfileError(f"not a pprof profile: corrupt protobuf (wire type {wire})")
            if slot == sample_slot:  # a sample whose tag is not the one byte `12`
                samples += 1
                if samples > sample_cap:
                    _refuse(sample_cap, _NAMES["samples"])
                continue
            counts[slot] += 1
            if counts[slot] > caps[slot]:
                _refuse(caps[slot], _NAMES[names[slot]])
    except IndexError:
        pass  # cut short: the decoder says so
    counts[sample_slot] = samples
    return {**dict(zip(names, counts, strict=True)), "lines": lines}


def _skip_field(raw: bytes, i: int) -> tuple[int, int]:
    """The key of the field at raw[i:] and the index after the field."""
    key, i = _varint(raw, i)
    wire = key & 7
    if wire == 0:
        while raw[i] >= 0x80:
            i += 1
        i += 1
    elif wire == 2:
        size, i = _varint(raw, i)
        i += size
    elif wire == 1:
        i += 8
    elif wire == 5:
        i += 4
    else:
        raise ProfileError(f"not a pprof profile: corrupt protobuf (wire type {wire})")
    return key, i


def _refuse(cap: int, what: str) -> NoReturn:
    raise ProfileTooLarge(
        f"more than {cap:,} {what} (a profile bomb?); refusing to read it", recognised=True
    )


_HEAD = 64 * 1024  # what of an input over a byte cap is read to tell whether it is a profile


def _head(data: bytes) -> bytes:
    """The start of `data` as a profile's protobuf: its first _HEAD bytes, decompressed if gzip
    (b"" if that gzip is corrupt)."""
    if data[:2] != b"\x1f\x8b":
        return data[:_HEAD]
    try:
        return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS).decompress(data, _HEAD)
    except zlib.error:
        return b""


def _framed(head: bytes) -> bool:
    """Whether `head`, the start of an input, reads as a profile's protobuf wire format (up to
    where it is cut): no text, only the profile format's wire types, no field number 0."""
    if not head:
        return False
    try:
        _reject_text(head)
        count_entries(head)
    except ProfileTooLarge:  # a count cap hit within the head: wire format all the way
        return True
    except ProfileError:
        return False
    return True


def _varint(raw: bytes, i: int) -> tuple[int, int]:
    """The varint at raw[i:] and the index after it."""
    value = shift = 0
    while True:
        byte = raw[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ProfileError("not a pprof profile: corrupt protobuf (a varint over 10 bytes)")


def _gunzip(data: bytes, cap: int) -> bytes:
    """Decompress all gzip members, stopping at `cap` decompressed bytes."""
    out = bytearray()
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while not d.eof:
                room = cap - len(out)
                chunk = d.decompress(rest, min(_CHUNK, room + 1))
                out += chunk
                if len(out) > cap:
                    raise ProfileTooLarge(
                        f"decompresses to more than {format_size(cap)} "
                        "(a gzip bomb?); refusing to read it",
                        recognised=_framed(bytes(out[:_HEAD])),
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


def _build(m: Any) -> Profile:  # m: a _Decoded
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
    # lines are within limits.lines and limits.lines_per_location: counted on the wire
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
