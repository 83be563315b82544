"""pprof decoding on hand-made profiles: values, stacks, diffs, and every way a file can be bad."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from leakgate import pprof
from leakgate.proto import profile_pb2

from .factories import (
    TINY_ENTRY,
    by_function,
    profile_bytes,
    profile_message,
    sample_totals,
    wire_field,
)

LEAKY = [
    (["main.leak", "main.handle", "net/http.(*conn).serve"], [100, 6400]),
    (["runtime.mapassign", "main.leak", "main.handle"], [10, 2048]),
    (["bytes.growSlice", "main.render"], [1, 512]),
]


def test_totals_and_aggregation() -> None:
    profile = pprof.parse(profile_bytes(LEAKY))
    assert sample_totals(profile) == {"inuse_objects": 111, "inuse_space": 8960}
    flat = by_function(profile, "inuse_space")
    assert flat == {"main.leak": 6400, "runtime.mapassign": 2048, "bytes.growSlice": 512}
    cum = by_function(profile, "inuse_space", cumulative=True)
    assert cum["main.leak"] == 8448 and cum["main.handle"] == 8448
    stacks = profile.by_stack("inuse_objects")
    assert sorted(stacks.values()) == [1, 10, 100]
    first = next(iter(stacks))
    assert str(profile.frames(first)[0]) == "main.leak (main.go:10)"


def test_diff_keeps_only_growth_and_matches_stacks_across_profiles() -> None:
    before = pprof.parse(profile_bytes([(["main.leak", "main.handle"], [1, 100])]))
    after = pprof.parse(
        profile_bytes(
            [
                (["bytes.growSlice", "main.render"], [1, 50]),  # other ids in this profile
                (["main.leak", "main.handle"], [9, 900]),
            ]
        )
    )
    grown = pprof.diff(before, after, "inuse_space")
    by_leaf = {stack[0].function: v for stack, v in grown.items()}
    assert by_leaf == {"main.leak": 800, "bytes.growSlice": 50}
    assert pprof.diff(after, before, "inuse_space") == {}


def test_plain_protobuf_is_read_too() -> None:
    raw = profile_bytes(LEAKY, compress=False)
    assert sample_totals(pprof.parse(raw))["inuse_space"] == 8960


@pytest.mark.parametrize(
    ("function", "own"),
    [
        ("main.leak", True),
        ("main.(*app).handle.func1", True),
        ("github.com/acme/orders.(*Store).Add", True),
        ("example.com/svc/internal/cache.Put", True),
        ("runtime.mallocgc", False),
        ("net/http.(*conn).serve", False),
        ("encoding/json.Marshal", False),
        ("internal/poll.runtime_pollWait", False),
    ],
)
def test_own_code_is_told_from_the_standard_library(function: str, own: bool) -> None:
    assert pprof.is_own_code(function) is own


def test_unknown_sample_type_names_the_ones_there() -> None:
    profile = pprof.parse(profile_bytes(LEAKY))
    with pytest.raises(pprof.ProfileError, match=r"no 'goroutine' values.*inuse_objects"):
        profile.by_stack("goroutine")


def _invalid(mutate: str) -> bytes:
    p = profile_message(LEAKY)
    if mutate == "string_index":
        p.function[0].name = 999
    elif mutate == "location":
        p.sample[0].location_id.append(77)
    elif mutate == "function":
        p.location[0].line[0].function_id = 55
    elif mutate == "values":
        p.sample[0].value.append(1)
    elif mutate == "first_string":
        p.string_table[0] = "x"
    elif mutate == "duplicate_id":
        p.function[1].id = p.function[0].id
    return p.SerializeToString()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        ("string_index", "function.name points at string 999"),
        ("location", "names location 77"),
        ("function", "names function 55"),
        ("values", "has 3 values for 2 sample types"),
        ("first_string", r"string_table\[0\] must be the empty string"),
        ("duplicate_id", "function id 1 is zero or repeated"),
    ],
)
def test_invalid_profiles_are_refused_with_the_reason(mutate: str, message: str) -> None:
    with pytest.raises(pprof.ProfileError, match=message):
        pprof.parse(_invalid(mutate))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "got HTML"),
        (b"<html>oops</html>", "got HTML"),
        (b"heap profile: 1: 2 [3: 4] @ heap/1048576\n", "text profile"),
        (b"goroutine profile: total 4\n", "text profile"),
        (b"404 page not found\n", "got text"),
        (b'{"error": "no such profile"}', "got text"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "corrupt protobuf"),
    ],
)
def test_what_is_not_a_profile_says_what_it_is(data: bytes, message: str) -> None:
    with pytest.raises(pprof.ProfileError, match=message):
        pprof.parse(data)


def test_truncated_gzip_is_refused() -> None:
    data = profile_bytes(LEAKY)
    with pytest.raises(pprof.ProfileError, match="truncated gzip"):
        pprof.parse(data[: len(data) // 2])


def test_corrupt_gzip_is_refused() -> None:
    data = bytearray(profile_bytes(LEAKY))
    data[12:20] = b"\xff" * 8
    with pytest.raises(pprof.ProfileError, match=r"gzip|protobuf"):
        pprof.parse(bytes(data))


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    limits = pprof.Limits(decompressed_bytes=8 * 1024 * 1024)
    with pytest.raises(pprof.ProfileError, match=r"decompresses to more than 8\.0 MiB"):
        pprof.parse(bomb, limits)


def test_plain_protobuf_over_the_byte_cap_is_refused() -> None:
    raw = profile_bytes(LEAKY, compress=False)
    with pytest.raises(pprof.ProfileError, match="larger than"):
        pprof.parse(raw, pprof.Limits(decompressed_bytes=len(raw) - 1))
    assert pprof.parse(raw, pprof.Limits(decompressed_bytes=len(raw))).samples


def test_the_default_caps_are_the_documented_ones() -> None:
    limits = pprof.LIMITS
    assert limits.decompressed_bytes == 32 * 1024 * 1024
    assert limits.compressed_bytes == limits.decompressed_bytes
    assert (limits.samples, limits.locations, limits.functions, limits.strings) == (2**20,) * 4
    assert (limits.mappings, limits.other_fields) == (2**16, 2**16)
    assert (limits.lines, limits.lines_per_location) == (2**20, 256)


_TABLE = {  # kind -> (its cap's field in Limits, one 4-byte top-level entry)
    "sample": ("samples", b"\x12\x02\x08\x01"),
    "mapping": ("mappings", TINY_ENTRY["mapping"]),
    "location": ("locations", TINY_ENTRY["location"]),
    "function": ("functions", TINY_ENTRY["function"]),
    "string": ("strings", TINY_ENTRY["string"]),
    "other": ("other_fields", TINY_ENTRY["comment"]),  # unpacked `comment` entries
}


@pytest.mark.parametrize("kind", sorted(_TABLE))
def test_each_count_cap_is_honoured(kind: str) -> None:
    field, entry = _TABLE[kind]
    head = profile_bytes(LEAKY, compress=False)
    have = pprof.count_entries(head)
    limits = pprof.Limits(**{field: have[field] + 10})
    under = head + entry * 10
    try:
        pprof.parse(under, limits)
    except pprof.ProfileError as e:  # repeated ids are refused, but not for their number
        assert "more than" not in str(e)
    with pytest.raises(pprof.ProfileError, match=rf"more than {have[field] + 10} {kind}"):
        pprof.parse(under + entry, limits)


def test_cap_refusals_are_their_own_kind_of_profile_error(tmp_path: Path) -> None:
    raw = profile_bytes(LEAKY, compress=False)
    path = tmp_path / "heap.pb.gz"
    path.write_bytes(gzip.compress(raw))
    for limits in (
        pprof.Limits(samples=2),
        pprof.Limits(decompressed_bytes=10),
        pprof.Limits(compressed_bytes=10),
        pprof.Limits(lines_per_location=0),
    ):
        with pytest.raises(pprof.ProfileTooLarge):
            pprof.parse(raw, limits)
        with pytest.raises(pprof.ProfileTooLarge, match=r"heap\.pb\.gz: "):
            pprof.load(path, limits)
    with pytest.raises(pprof.ProfileError) as refused:
        pprof.parse(b"<html>502</html>")
    assert not isinstance(refused.value, pprof.ProfileTooLarge)


def test_a_bomb_is_refused_before_the_protobuf_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    class NotDecoded:
        def ParseFromString(self, data: bytes) -> None:
            raise AssertionError("decoded a profile over the caps")

    bomb = gzip.compress(profile_bytes(LEAKY, compress=False) + b"\x12\x02\x08\x01" * 5000)
    monkeypatch.setattr(pprof, "_Decoded", NotDecoded)
    with pytest.raises(pprof.ProfileError, match="more than 1,000 samples"):
        pprof.parse(bomb, pprof.Limits(samples=1000))


def test_lines_are_capped_before_any_frame_is_made() -> None:
    p = profile_message(LEAKY)
    p.location[0].line.extend([profile_pb2.Line(function_id=1, line=n) for n in range(300)])
    with pytest.raises(pprof.ProfileTooLarge, match="location 1 has more than 256 lines"):
        pprof.parse(p.SerializeToString())
    with pytest.raises(pprof.ProfileError, match="more than 100 lines in all locations"):
        pprof.parse(p.SerializeToString(), pprof.Limits(lines=100, lines_per_location=1000))
    assert pprof.parse(p.SerializeToString(), pprof.Limits(lines_per_location=301)).samples


def test_counting_refuses_what_the_decoder_would_skip_unseen() -> None:
    # a group (wire type 3) is not in profile.proto: refused rather than skipped uncounted
    with pytest.raises(pprof.ProfileError, match="corrupt protobuf"):
        pprof.parse(b"\x0b" + b"\x12\x02\x08\x01" * 10 + b"\x0c")


def test_oversized_file_is_refused_before_decompressing(tmp_path: Path) -> None:
    path = tmp_path / "big.pb.gz"
    path.write_bytes(zlib.compress(b"x" * 10) * 200)
    with pytest.raises(pprof.ProfileError, match=r"big.pb.gz: larger than"):
        pprof.load(path, pprof.Limits(compressed_bytes=1000))


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "heap-drain.pb.gz"
    path.write_bytes(b"<html>")
    with pytest.raises(pprof.ProfileError, match=r"heap-drain.pb.gz: got HTML"):
        pprof.load(path)
    with pytest.raises(pprof.ProfileError, match="cannot read"):
        pprof.load(tmp_path / "missing.pb.gz")


def _head() -> bytes:
    return profile_bytes(LEAKY, compress=False)


class _NotDecoded:
    def ParseFromString(self, data: bytes) -> None:
        raise AssertionError("decoded a profile over the caps")


def test_samples_count_against_one_cap_however_their_tag_is_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `92 00` is field 2's tag written in two bytes: the decoder reads it as a sample too
    head = _head()
    have = pprof.count_entries(head)["samples"]
    minimal, long_tag = b"\x12\x02\x08\x01", b"\x92\x00\x02\x08\x01"
    both = head + (minimal + long_tag) * 6
    assert pprof.count_entries(both)["samples"] == have + 12
    monkeypatch.setattr(pprof, "_Decoded", _NotDecoded)
    with pytest.raises(pprof.ProfileTooLarge, match=rf"more than {have + 10} samples"):
        pprof.parse(both, pprof.Limits(samples=have + 10))


def _location(loc_id: int, lines: bytes) -> bytes:
    return wire_field(4, b"\x08" + bytes([loc_id]) + lines)


def test_lines_are_counted_on_the_wire_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # empty lines (`22 00`, 2 bytes each) were 16.7 M Line messages in 32 MiB before the count
    head = _head()
    monkeypatch.setattr(pprof, "_Decoded", _NotDecoded)
    with pytest.raises(pprof.ProfileTooLarge, match="location 90 has more than 256 lines"):
        pprof.parse(head + _location(90, b"\x22\x00" * 257))
    long_tag = b"\xa2\x00\x00"  # field 4's tag in two bytes: still a Line to the decoder
    with pytest.raises(pprof.ProfileTooLarge, match="location 90 has more than 256 lines"):
        pprof.parse(head + _location(90, long_tag * 200 + b"\x22\x00" * 57))
    id_last = b"\x22\x00" * 257 + b"\x08\x5a"  # its id after its lines: named by position
    number = pprof.count_entries(head)["locations"] + 1
    with pytest.raises(pprof.ProfileTooLarge, match=rf"location number {number} has more than"):
        pprof.parse(head + wire_field(4, id_last))
    many = b"".join(_location(90 + n, b"\x22\x00" * 20) for n in range(6))
    have = pprof.count_entries(head)["lines"]
    with pytest.raises(pprof.ProfileTooLarge, match=rf"more than {have + 100} lines in all"):
        pprof.parse(head + many, pprof.Limits(lines=have + 100))
    counts = pprof.count_entries(head + many + _location(99, long_tag * 3 + b"\x20\x00"))
    assert counts["lines"] == have + 123  # `20 00` (field 4 as a varint) is no Line
    assert counts["locations"] == pprof.count_entries(head)["locations"] + 7


def test_lines_under_the_caps_are_decoded() -> None:
    p = profile_message(LEAKY)
    p.location[0].line.extend([profile_pb2.Line(function_id=1, line=n) for n in range(255)])
    assert len(pprof.parse(p.SerializeToString()).locations[1]) == 256


def test_fields_leakgate_does_not_read_are_not_decoded() -> None:
    # a packed `comment` (13) of 32 MiB was ~33 M ints in the decoded message
    profile_fields = set(pprof._Decoded.DESCRIPTOR.fields_by_name)
    assert profile_fields == {
        "sample_type",
        "sample",
        "mapping",
        "location",
        "function",
        "string_table",
        "period_type",
        "period",
        "duration_nanos",
    }
    comment = wire_field(13, b"\x01" * 100_000)  # a packed `comment`
    assert sample_totals(pprof.parse(_head() + comment))["inuse_space"] == 8960


@pytest.mark.parametrize(
    ("body", "recognised"),
    [
        (b"<html>" + b"x" * 5000 + b"</html>", False),  # an error page over the byte cap
        (gzip.compress(b"<html>" + b"x" * 50_000), False),  # gzipped, over the decompressed cap
        (gzip.compress(b"\0" * 50_000), False),  # zeros: no protobuf (field 0 is invalid)
        (b"\x1f\x8b" + b"\xff" * 5000, False),  # gzip magic, then no gzip data
        (gzip.compress(b"\x12\x02\x08\x01" * 100), True),  # a sample bomb, by its count
        (gzip.compress(b"\x12\x02\x08\x01" * 12_500), True),  # a profile over the byte cap
        (b"\x12\x02\x08\x01" * 1250, True),  # plain protobuf over the byte cap
    ],
    ids=["html", "gzipped-html", "zeros", "not-gzip", "sample-bomb", "gzip-bomb", "plain"],
)
def test_too_large_says_whether_it_was_a_profile(body: bytes, recognised: bool) -> None:
    limits = pprof.Limits(compressed_bytes=4096, decompressed_bytes=4096, samples=64)
    with pytest.raises(pprof.ProfileTooLarge) as refused:
        pprof.parse(body, limits)
    assert refused.value.recognised is recognised


def test_force_gc_counts_a_too_large_answer_only_when_it_is_a_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from leakgate import probes

    monkeypatch.setattr(pprof, "LIMITS", pprof.Limits(compressed_bytes=4096, samples=64))
    for body, forced in [
        (gzip.compress(b"\x12\x02\x08\x01" * 100), True),  # pprof's answer: a profile bomb
        (b"<html>" + b"x" * 5000 + b"</html>", False),  # a proxy's large error page
    ]:
        monkeypatch.setattr(probes, "fetch", lambda url, *, body=body, **_: body)
        source = probes.RuntimeSource()
        source.force_gc()
        assert source.forced_gc is forced
