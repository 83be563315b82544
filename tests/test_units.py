from __future__ import annotations

import pytest

from leakgate.units import (
    format_duration,
    format_size,
    number_text,
    parse_duration,
    parse_percent,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20s", 20.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("500us", 5e-4),
        ("1.5s", 1.5),
        (3, 3.0),
        (0.5, 0.5),
        ("100ns", 1e-7),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "20", "20 s", "-1s", "1d", True, float("nan"), -2])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16B", 16),
        ("1KiB", 1024),
        ("1MiB", 1024**2),
        ("1.5 MiB", 1.5 * 1024**2),
        ("2MB", 2e6),
        ("512", 512),
        (64, 64),
        ("1gib", 1024**3),
    ],
)
def test_parse_size(text: str | int, size: float) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-3B", True])
def test_parse_size_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)  # type: ignore[arg-type]


def test_parse_percent() -> None:
    assert parse_percent("10%") == pytest.approx(0.10)
    assert parse_percent("0.5%") == pytest.approx(0.005)
    assert parse_percent(0.2) == 0.2
    with pytest.raises(ValueError):
        parse_percent("10")


def test_formatting() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(-3 * 1024**2) == "-3.0 MiB"
    assert format_duration(0.0125) == "12.5 ms"
    assert format_duration(0.0004) == "400 µs"
    assert format_duration(125) == "2m05s"


@pytest.mark.parametrize(
    ("parse", "value", "message"),
    [
        (parse_duration, 10**400, "an integer of 401 digits is too large for a number of seconds"),
        (parse_size, 10**400, "an integer of 401 digits is too large for a number of bytes"),
        (parse_percent, 10**400, "an integer of 401 digits is too large for a fraction"),
        (parse_duration, -(10**400), "a duration must be a finite, non-negative number"),
        (parse_size, 16**5000, "an integer of 6021 digits is too large for a number of bytes"),
    ],
    ids=["duration", "size", "percent", "negative", "size-6021-digits"],  # str() of 16**5000 fails
)
def test_bare_integers_too_large_for_a_float_are_refused(
    parse: object, value: int, message: str
) -> None:
    """float() of an integer over ~1.8e308 raises OverflowError (math.isfinite too); the
    parsers compare it by range first and say what it is."""
    with pytest.raises(ValueError) as info:
        parse(value)  # type: ignore[operator]
    assert message in str(info.value)


def test_bare_integers_within_a_float_are_read() -> None:
    assert parse_duration(10**300) == 1e300
    assert parse_size(2**1000) == float(2**1000)
    with pytest.raises(ValueError, match="is ambiguous"):
        parse_percent(10**300)


def test_number_text() -> None:
    assert number_text(12) == "12"
    assert number_text(-3.5) == "-3.5"
    assert number_text(float("nan")) == "nan"
    assert number_text(10**19) == "10000000000000000000"  # 20 digits: shown
    assert number_text(10**20) == "an integer of 21 digits"
    assert number_text(10**400 - 1) == "an integer of 400 digits"
    assert number_text(-(10**400)) == "an integer of 401 digits"
    assert number_text(16**5000) == "an integer of 6021 digits"  # str() refuses over 4,300
