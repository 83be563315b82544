"""A short fuzz run of every parser that reads untrusted input (bench/fuzz.py runs 100,000+).

Hypothesis mutates each parser's valid seed inputs and also feeds it arbitrary bytes; the
parser must return or raise its documented error, nothing else.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .fuzz_targets import TARGETS, Target


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """The seed with a slice replaced, truncated, or repeated: near-valid inputs reach deeper
    into a parser than random bytes do."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = bytearray(seed)
        for _ in range(draw(st.integers(1, 4))):
            if not data:
                break
            i = draw(st.integers(0, len(data) - 1))
            j = draw(st.integers(i, min(len(data), i + 16)))
            data[i:j] = draw(st.binary(max_size=16))
        if draw(st.booleans()):
            data = data[: draw(st.integers(0, len(data)))]
        return bytes(data)

    return build()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_parser_raises_only_its_own_error(target: Target) -> None:
    starts = (*target.seeds, *target.refused)
    inputs = st.one_of(st.binary(max_size=2048), *(mutated(s) for s in starts))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(inputs)
    def run(data: bytes) -> None:
        with contextlib.suppress(*target.allowed):
            target.run(data)

    run()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_seeds_are_valid(target: Target) -> None:
    for seed in target.seeds:
        target.run(seed)


@pytest.mark.parametrize("target", [t for t in TARGETS if t.refused], ids=lambda t: t.name)
def test_bombs_are_refused_quickly(target: Target) -> None:
    for bomb in target.refused:
        started = time.monotonic()
        with pytest.raises(target.allowed):
            target.run(bomb)
        assert time.monotonic() - started < 0.5, len(bomb)
