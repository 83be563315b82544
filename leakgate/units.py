"""Durations and sizes: one parser and one formatter each, used everywhere."""

from __future__ import annotations

import math
import re
import sys

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")


def parse_duration(text: str | int | float) -> float:
    """Parse "20s", "1m30s", "250ms" (Go's syntax) or a bare number of seconds into seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration like 20s or 250ms")
    if isinstance(text, (int, float)):
        return _bare(text, "a duration must be a finite, non-negative number of seconds", "seconds")
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(f"{text!r} is not a duration (examples: 20s, 1m30s, 250ms)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def parse_size(text: str | int | float) -> float:
    """Parse "16B", "1MiB", "512 KiB", "2MB" or a bare number of bytes into bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size like 16B or 1MiB")
    if isinstance(text, (int, float)):
        return _bare(text, "a size must be a finite, non-negative number of bytes", "bytes")
    m = _SIZE.fullmatch(text.strip())
    if not m or m.group(2).lower() not in _SIZE_UNITS | {"": 1}:
        raise ValueError(f"{text!r} is not a size (examples: 16B, 512KiB, 1MiB)")
    return float(m.group(1)) * _SIZE_UNITS.get(m.group(2).lower(), 1)


def parse_percent(text: str | int | float) -> float:
    """Parse "10%" into 0.10; a bare number is taken as a fraction (0.1)."""
    if isinstance(text, bool):
        raise ValueError("expected a percentage like 10%")
    if isinstance(text, (int, float)):
        fraction = _bare(text, "a fraction must be finite and non-negative", None)
        if fraction > 1:
            raise ValueError(f"{text} is ambiguous: write {text}% (or a fraction such as 0.1)")
        return fraction
    m = _PERCENT.fullmatch(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a percentage (example: 10%)")
    return float(m.group(1)) / 100.0


def _bare(value: int | float, invalid: str, unit: str | None) -> float:
    """A bare number from a config as a float, or ValueError(`invalid`) unless it is finite
    and not negative. Compared by range, not math.isfinite: an integer over the largest float
    (~1.8e308, 309 digits) is finite, but isfinite and float() raise OverflowError on it."""
    if value < 0 or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(invalid)
    if value > sys.float_info.max:
        what = f"a number of {unit}" if unit else "a fraction"
        raise ValueError(f"{number_text(value)} is too large for {what}")
    return float(value)


_SHOWN_DIGITS = 20


def number_text(value: float) -> str:
    """A number for a message: as Python writes it, but an integer of more than 20 digits by
    its length ("an integer of 400 digits"): nobody reads it digit by digit, and str() of one
    over 4,300 digits raises ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value.bit_length() <= 64:
        return str(value)
    digits = _digits(abs(value))
    return str(value) if digits <= _SHOWN_DIGITS else f"an integer of {digits} digits"


def _digits(n: int) -> int:
    """How many decimal digits the positive integer `n` has, without str() (limited to
    4,300 digits): log10 gives it to within one, the powers of ten settle it."""
    digits = int(math.log10(n)) + 1
    if 10 ** (digits - 1) > n:
        digits -= 1
    elif 10**digits <= n:
        digits += 1
    return digits


def format_size(n: float) -> str:
    """1024-based, short: 512 B, 1.5 KiB, 12.3 MiB. Negative sizes keep their sign; NaN and
    infinities (from a damaged record) read "n/a"."""
    if not math.isfinite(n):
        return "n/a"
    sign = "-" if n < 0 else ""
    v = abs(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if v < 1024 or unit == "GiB":
            if unit == "B":
                return f"{sign}{v:.0f} B" if v >= 10 or v == int(v) else f"{sign}{v:.1f} B"
            return f"{sign}{v:.1f} {unit}"
        v /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Short human form: 850 µs, 12.3 ms, 4.20 s, 2m05s; "n/a" for NaN and infinities."""
    if not math.isfinite(seconds):
        return "n/a"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:02.0f}s"


def format_cost(seconds: float) -> str:
    """CPU time per request, finer than format_duration below a millisecond (where 14 µs
    against 15 µs is a 7% change): 400 ns, 3.50 µs, 14.2 µs, 152 µs, 2.5 ms."""
    magnitude = abs(seconds)
    if not math.isfinite(seconds) or magnitude >= 1e-3 or magnitude == 0:
        return format_duration(seconds)
    sign = "-" if seconds < 0 else ""
    if magnitude < 1e-6:
        return f"{sign}{magnitude * 1e9:.0f} ns"
    micros = magnitude * 1e6
    digits = 2 if micros < 10 else 1 if micros < 100 else 0
    return f"{sign}{micros:.{digits}f} µs"


def format_per_request(value: float, unit: str, *, signed: bool = False) -> str:
    """A cost per request without its "/request": "14.2 µs", "1.5 KiB"; `signed` for a
    change."""
    if not math.isfinite(value):
        return "n/a"
    sign = "+" if signed and value > 0 else ""
    if unit == "s/request":
        return sign + format_cost(value)
    if unit == "B/request":
        return sign + format_size(value)
    return f"{sign}{value:.3g} {unit}".rstrip()


def format_change(candidate: float, baseline: float | None) -> str:
    """The change against the baseline: "+12.5%", "new" where the baseline had none, "" where
    there is no baseline."""
    if baseline is None or not (math.isfinite(candidate) and math.isfinite(baseline)):
        return ""
    if baseline == 0:
        return "new" if candidate > 0 else ""
    return f"{(candidate - baseline) / abs(baseline):+.1%}"


def format_percent(fraction: float) -> str:
    if not math.isfinite(fraction):
        return "n/a"
    return f"{fraction * 100:.2f}%"


def format_metric(value: float | None, unit: str, *, signed: bool = False) -> str:
    """A metric value in its unit, as every report shows it. `signed` for growth figures."""
    if value is None or not math.isfinite(value):
        return "n/a"
    sign = "+" if signed and value > 0 else ""
    if unit == "s":
        return sign + format_duration(value)
    if unit == "bytes":
        return sign + format_size(value)
    if unit == "B/request":
        if abs(value) >= 10 * 1024:  # below, to the byte: a leak's size is read off this
            return f"{sign}{format_size(value)}/request"
        return f"{value:+.1f} B/request" if signed else f"{value:.1f} B/request"
    if unit == "s/request":
        return f"{sign}{format_cost(value)}/request"
    if unit == "fraction":
        return sign + format_percent(value)
    if unit == "change":
        return f"{value:+.1%}"
    if unit == "goroutines":
        return f"{value:+.0f} goroutines" if signed else f"{value:.0f} goroutines"
    number = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{sign}{number} {unit}".rstrip()
