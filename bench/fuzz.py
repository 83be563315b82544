#!/usr/bin/env python3
"""Fuzz every parser of untrusted input with >= 100,000 inputs each (issue 8).

Inputs: each parser's valid seeds (tests/fuzz_targets.py) mutated — bytes replaced, inserted,
deleted, slices duplicated, truncated — plus random bytes, from a fixed random seed so a run
can be repeated. A parser must return or raise its documented error; anything else is counted
and the first few are printed with the input that caused them.

--memory measures the profile parser's peak memory instead (issue 14, item 5): each input is
parsed by pprof.parse in a fresh process, which prints its peak RSS (VmHWM) and the time. The
inputs are a real large profile (bench/bigprofile's heap profile, every allocation sampled from
2^18 stacks: the reference), the issue's gzip bomb (8.4 M tiny samples, 64 MiB that gzip to
~65 KB), a bomb of samples under the byte cap, the shapes a review found past the counts (samples
half of them with a padded tag, a location of 16.7 M empty lines, a packed comment), and the
costliest inputs the caps still let through to the decoder (a table at its cap, one message
filling the byte cap): their largest peak is the parser's memory bound. --repo measures another
checkout's parser (the one before a change, for a before/after figure); --reference reuses a
profile instead of running bigprofile.

    python bench/fuzz.py [--inputs 100000] [--targets pprof,config,...] [--seed 1]
    python bench/fuzz.py --memory [--only bomb,reference] [--repo DIR] [--reference FILE]
"""

from __future__ import annotations

import argparse
import collections
import gzip
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.factories import TINY_SAMPLE, varint, wire_field  # noqa: E402
from tests.fuzz_targets import TARGETS, Target, profile_bomb  # noqa: E402

INTERESTING = (
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\n",
    b"{",
    b"}",
    b"[",
    b'"',
    b"NaN",
    b"-1",
    b"1e999",
    b"\x1f\x8b",
    b"\x08\xff\xff\xff\xff\x0f",
)


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(6)
        i = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip bits
            data[min(i, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert an interesting token
            data[i:i] = rng.choice(INTERESTING)
        elif op == 2 and data:  # delete a run
            del data[i : i + rng.randint(1, 32)]
        elif op == 3 and data:  # duplicate a slice (deep nesting, repeated fields)
            j = rng.randrange(len(data))
            piece = data[min(i, j) : max(i, j)][:256]
            data[i:i] = piece * rng.randint(1, 8)
        elif op == 4:  # random bytes
            data[i : i + rng.randint(0, 8)] = rng.randbytes(rng.randint(0, 8))
        else:  # truncate
            del data[i:]
    return bytes(data)


def fuzz(target: Target, inputs: int, rng: random.Random) -> tuple[int, collections.Counter[str]]:
    crashes: collections.Counter[str] = collections.Counter()
    shown = 0
    for n in range(inputs):
        if n % 10 == 0:
            data = rng.randbytes(rng.randint(0, 512))
        else:
            data = mutate(rng, rng.choice(target.seeds))
        try:
            target.run(data)
        except target.allowed:
            pass
        except Exception as e:  # what the bench is for: anything but the documented error
            key = f"{type(e).__name__}: {str(e)[:80]}"
            crashes[key] += 1
            if shown < 3:
                print(f"    {target.name}: {key}\n      input {data[:120]!r}", flush=True)
                shown += 1
    return inputs, crashes


# -- --memory: the profile parser's peak RSS ------------------------------------------------

MiB = 1024 * 1024
CAP_BYTES = 32 * MiB  # leakgate's pprof.LIMITS, spelled out so --repo can measure an older one
CAP_COUNT = 1 << 20

# The peak is the process's VmHWM: ru_maxrss would carry over the parent's high-water mark,
# which Linux keeps across exec (this bench's own ~200 MiB after building a bomb).
PARSE = """
import sys, time
sys.path.insert(0, sys.argv[2])
from leakgate import pprof
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
data = open(sys.argv[1], "rb").read()
before = hwm()
start = time.perf_counter()
try:
    outcome = f"read: {len(pprof.parse(data).samples):,} samples"
except pprof.ProfileError as e:
    outcome = f"refused: {e}"
took = time.perf_counter() - start
print(f"{hwm() / 1024:.0f}\t{before / 1024:.0f}\t{took:.2f}\t{outcome}")
"""


def _table(number: int, count: int, entry: Callable[[int], bytes]) -> bytes:
    return profile_bomb(0, compress=False) + b"".join(
        wire_field(number, entry(n)) for n in range(count)
    )


def _one_message(number: int, inner: bytes) -> bytes:
    return profile_bomb(0, compress=False) + wire_field(number, inner)


def _labelled_samples() -> bytes:
    # samples at the cap, each padded with empty labels up to the byte cap
    labels = (CAP_BYTES // CAP_COUNT - len(TINY_SAMPLE) - 2) // 2
    sample = wire_field(2, TINY_SAMPLE[2:] + b"\x1a\x00" * labels)
    return profile_bomb(0, compress=False) + sample * (CAP_COUNT - 2)


ROOM = CAP_BYTES - 1024  # what one message may fill under the byte cap, header aside
SHAPES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "bomb": ("issue 14's bomb: 8.4 M tiny samples, 64 MiB", lambda: profile_bomb(8_388_608)),
    "sample-bomb": (
        "2.1 M tiny samples, 16 MiB: under the byte cap",
        lambda: profile_bomb(2 * CAP_COUNT),
    ),
    "samples": ("tiny samples at the cap (read)", lambda: profile_bomb(CAP_COUNT - 2)),
    "labels": ("samples at the cap filled with labels", _labelled_samples),
    "long-tags": (
        "2.1 M samples, every other tag written `92 00`: each half under the cap",
        lambda: (
            profile_bomb(0, compress=False)
            + (TINY_SAMPLE + b"\x92\x00" + TINY_SAMPLE[1:]) * (CAP_COUNT - 2)
        ),
    ),
    "stack": (
        "one sample, a 32 MiB stack",
        lambda: _one_message(2, wire_field(1, b"\x01" * (ROOM - 16)) + b"\x12\x01\x01"),
    ),
    "values": (
        "one sample, 16 M values",
        lambda: _one_message(2, b"\x0a\x01\x01" + wire_field(2, b"\x80\x01" * (ROOM // 2 - 16))),
    ),
    "lines": (
        "one location, 5.6 M lines",
        lambda: _one_message(4, b"\x08\x02" + b"\x22\x04\x08\x01\x10\x07" * (ROOM // 6)),
    ),
    "empty-lines": (
        "one location, 16.7 M empty lines (`22 00`)",
        lambda: _one_message(4, b"\x08\x02" + b"\x22\x00" * (ROOM // 2 - 8)),
    ),
    "empty-inlined": (
        "empty lines at the cap, 256 to a location",
        lambda: _table(
            4, CAP_COUNT // 256 - 1, lambda n: b"\x08" + varint(n + 2) + b"\x22\x00" * 256
        ),
    ),
    "inlined": (
        "lines at the cap, 256 to a location",
        lambda: _table(
            4,
            CAP_COUNT // 256 - 1,
            lambda n: b"\x08" + varint(n + 2) + b"\x22\x04\x08\x01\x10\x07" * 256,
        ),
    ),
    "locations": (
        "locations at the cap, a line each",
        lambda: _table(4, CAP_COUNT - 2, lambda n: b"\x08" + varint(n + 2) + b"\x22\x02\x08\x01"),
    ),
    "functions": (
        "functions at the cap",
        lambda: _table(5, CAP_COUNT - 2, lambda n: b"\x08" + varint(n + 2) + b"\x10\x03\x20\x04"),
    ),
    "comment": (
        "a packed comment of 33 M ints (field 13, unread)",
        lambda: _one_message(13, b"\x01" * (ROOM - 16)),
    ),
    "strings": (
        "strings at the cap, filling the byte cap",
        lambda: _table(6, CAP_COUNT - 80, lambda n: b"%028d" % n),
    ),
}


def _reference(tmp: Path, given: Path | None) -> Path | None:
    if given is not None:
        return given
    if shutil.which("go") is None:
        print("reference: skipped (no `go` on PATH; give --reference FILE)")
        return None
    path = tmp / "bigprofile.pb.gz"
    subprocess.run(
        ["go", "run", ".", "-depth", "18", "-o", str(path)],
        cwd=REPO / "bench" / "bigprofile",
        check=True,
        capture_output=True,
        timeout=900,
    )
    return path


def memory(only: list[str] | None, repo: Path, reference: Path | None) -> int:
    print(f"pprof.parse of {repo}, one fresh process per input (peak RSS: VmHWM)")
    print(f"{'input':12} {'gzip':>9} {'protobuf':>9} {'peak RSS':>9} {'+parse':>8} {'seconds':>8}")
    peaks = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        inputs: list[tuple[str, str, Callable[[], bytes]]] = []
        if only is None or "reference" in only:
            ref = _reference(tmp, reference)
            if ref is not None:
                inputs.append(
                    ("reference", f"bench/bigprofile -depth 18 ({ref.name})", ref.read_bytes)
                )
        inputs += [
            (k, what, build) for k, (what, build) in SHAPES.items() if only is None or k in only
        ]
        for key, what, build in inputs:
            data = build()
            raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            packed = data if data is not raw else gzip.compress(raw, compresslevel=1)
            path = tmp / f"{key}.pb.gz"
            path.write_bytes(packed)
            del data, raw
            child = subprocess.run(
                [sys.executable, "-c", PARSE, str(path), str(repo)],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if child.returncode != 0:
                print(f"{key:12} the parser's process failed: {child.stderr.strip()[-300:]}")
                continue
            peak, base, took, outcome = child.stdout.strip().split("\t", 3)
            size = len(gzip.decompress(packed))
            peaks[key] = int(peak)
            print(
                f"{key:12} {len(packed) / MiB:>7.2f}Mi {size / MiB:>7.1f}Mi {peak:>7}Mi "
                f"{int(peak) - int(base):>+6}Mi {float(took):>8.2f}  {what}: {outcome[:110]}"
            )
            path.unlink()
    if peaks:
        worst = max(peaks, key=lambda k: peaks[k])
        print(f"largest peak: {peaks[worst]} MiB ({worst})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="the profile parser's peak RSS")
    parser.add_argument("--only", help="with --memory: the inputs to parse, comma-separated")
    parser.add_argument("--repo", type=Path, default=REPO, help="with --memory: whose leakgate")
    parser.add_argument("--reference", type=Path, help="with --memory: the reference profile")
    opts = parser.parse_args()
    if opts.memory:
        only = opts.only.split(",") if opts.only else None
        return memory(only, opts.repo.resolve(), opts.reference)
    wanted = opts.targets.split(",")
    print(f"{'parser':16} {'inputs':>9} {'uncaught':>9} {'seconds':>8}")
    total_crashes = 0
    for target in TARGETS:
        if target.name not in wanted:
            continue
        rng = random.Random(f"{opts.seed}:{target.name}")
        start = time.monotonic()
        count, crashes = fuzz(target, opts.inputs, rng)
        uncaught = sum(crashes.values())
        total_crashes += uncaught
        print(f"{target.name:16} {count:>9,} {uncaught:>9,} {time.monotonic() - start:>8.1f}")
        for key, n in crashes.most_common(5):
            print(f"    {n:,} x {key}")
    print(f"all parsers raised only their own errors: {total_crashes == 0}")
    return 0 if total_crashes == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
