#!/usr/bin/env python3
"""Fuzz every parser of untrusted input with >= 100,000 inputs each (issue 8).

Inputs: each parser's valid seeds (tests/fuzz_targets.py) mutated — bytes replaced, inserted,
deleted, slices duplicated, truncated — plus random bytes, from a fixed random seed so a run
can be repeated. A parser must return or raise its documented error; anything else is counted
and the first few are printed with the input that caused them.

    python bench/fuzz.py [--inputs 100000] [--targets pprof,config,...] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fuzz_targets import TARGETS, Target  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS))
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
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
