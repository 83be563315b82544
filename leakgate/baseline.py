"""Stored baselines: a saved RunRecord, written atomically, read back defensively.

A baseline from a newer leakgate, a truncated write or a file that is not a run record is
refused with a message naming the file; it is never misread and never modified.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from leakgate.analysis import BASELINE_SIDES, baseline_trials
from leakgate.atomic import write_atomic
from leakgate.errors import UsageError
from leakgate.model import SCHEMA_VERSION, RunRecord
from leakgate.units import format_size, number_text

MAX_BASELINE_BYTES = 256 * 1024 * 1024


class BaselineError(UsageError):
    """The baseline file cannot be used; nothing was started (exit code 4)."""

    kind = "baseline error"


def _size_limit() -> str:
    return format_size(MAX_BASELINE_BYTES)


def _record_hint(path: Path) -> str:
    return f"record one with `leakgate baseline record DIR -o {path}`"


def save_baseline(record: RunRecord, path: Path) -> None:
    """Store `record` as the baseline at `path`, atomically.

    Readers see the previous baseline or the new one, never a partial file; if writing fails
    the previous baseline is left as it was. A record with no usable trial is refused, so a
    failed run cannot replace a good baseline.
    """
    if not baseline_trials(record):
        raise BaselineError(
            f"{path}: not saved: the run has no trial usable as a baseline "
            f"({_why_unusable(record)}); the previous baseline, if any, is unchanged"
        )
    try:
        write_atomic(path, record.to_json())
    except OSError as e:
        raise BaselineError(
            f"{path}: cannot write the baseline: {e.strerror or e}; "
            "the previous baseline, if any, is unchanged"
        ) from None


def load_baseline(path: Path) -> RunRecord:
    """Read the baseline at `path`; BaselineError, naming the file, when it cannot be used.

    Refused: a missing, unreadable or oversized (> 256 MiB) file; text that is not UTF-8 JSON
    or that ends early (a truncated write); JSON that is not a run record; a record written by
    a newer leakgate (schema_version above this one's); a record without usable trials.
    The file is only read.
    """
    record = _read(path, "baseline", f"; {_record_hint(path)}")
    if not record.trials:
        raise BaselineError(f"{path}: the baseline has no trials; {_record_hint(path)}")
    if not baseline_trials(record):
        raise BaselineError(
            f"{path}: no trial in the baseline is usable ({_why_unusable(record)}); "
            f"{_record_hint(path)}"
        )
    return record


def load_run(path: Path) -> RunRecord:
    """Read a saved run.json for `leakgate report`, refused like a baseline when unusable."""
    return _read(path, "run record", "")


def _read(path: Path, what: str, hint: str) -> RunRecord:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BaselineError(f"{path}: no {what} there{hint}") from None
    except OSError as e:
        raise BaselineError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    if path.is_dir():
        raise BaselineError(f"{path}: is a directory, not a {what} file")
    if size > MAX_BASELINE_BYTES:
        raise BaselineError(f"{path}: {size} bytes, over the {_size_limit()} limit for a {what}")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BASELINE_BYTES + 1)  # the file may have grown since stat
    except OSError as e:
        raise BaselineError(f"{path}: cannot read the {what}: {e.strerror or e}") from None
    if len(raw) > MAX_BASELINE_BYTES:
        raise BaselineError(f"{path}: over the {_size_limit()} limit for a {what}")
    return _parse(path, raw, what, hint)


def _parse(path: Path, raw: bytes, what: str, hint: str) -> RunRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BaselineError(f"{path}: not a {what}: not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise BaselineError(f"{path}: the {what} is empty{hint}")
    try:
        data = _loads(text)
    except json.JSONDecodeError as e:
        # A record is one JSON object ending in "}": a parse error at the very end, or an
        # object that never closes, is a write that stopped partway.
        body = text.strip()
        if e.pos >= len(body) or (body.startswith("{") and not body.endswith("}")):
            raise BaselineError(
                f"{path}: the {what} is truncated (its JSON stops before the record is "
                f"complete: {e.msg} at line {e.lineno}){hint}"
            ) from None
        raise BaselineError(
            f"{path}: not a {what}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except RecursionError:
        raise BaselineError(f"{path}: not a {what}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BaselineError(
            f"{path}: not a leakgate run record: a JSON object was expected, "
            f"found {_json_kind(data)}"
        )
    version = data.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BaselineError(
            f"{path}: not a leakgate run record: no valid schema_version (found {version!r})"
        )
    if version > SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: was written by a newer leakgate (schema {version} > {SCHEMA_VERSION}); "
            f"upgrade leakgate{' or record the baseline again' if what == 'baseline' else ''}"
        )
    problem = find_impossible_number(data)
    if problem is not None:
        raise BaselineError(f"{path}: {problem}; not a usable {what}{hint}")
    del data  # from_json parses again; do not hold two copies of a large record
    try:
        return RunRecord.from_json(text)
    except (ValueError, TypeError) as e:
        raise BaselineError(f"{path}: not a valid leakgate run record: {e}") from None
    except RecursionError:
        raise BaselineError(f"{path}: not a {what}: JSON nested too deeply") from None


# Fields whose value is a count, a size, a duration or a rate: never below 0. The names are
# those of model.py's Trial, LoadResult, Histogram, SecondStat, Checkpoint and Counters.
_NON_NEGATIVE = frozenset(
    (
        "measure_seconds", "rss_peak", "connections", "target_rate", "duration_s", "requests",
        "ok", "achieved_rate", "planned", "count", "min_ns", "max_ns", "sum_ns", "errors",
        "heap_alloc", "heap_objects", "goroutines", "gc_cycles", "gc_cpu_seconds", "rss",
        "cpu_seconds", "alloc_bytes", "alloc_objects", "seconds",
    )
)  # fmt: skip
MAX_OFFERED_RATE = 10_000_000.0  # load.rate's own limit
MAX_HISTOGRAM_GROWTH = 2.0  # leakgate writes 1.02; a wider bucket could not hold 1% error


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # Not a JSONDecodeError: int() refused an integer over Python's digit limit (4,300 by
        # default). Read again with each such integer standing in by its length, so that
        # find_impossible_number names its field (a syntax error after it is raised now).
        return json.loads(text, parse_int=_read_int)


class _LongInteger:
    """In place of an integer too long for int() to read, from _read_int."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits} digits"


def _read_int(text: str) -> int | _LongInteger:
    try:
        return int(text)
    except ValueError:
        return _LongInteger(len(text.lstrip("-")))


def find_impossible_number(data: object) -> str | None:
    """The first number in a parsed run record that leakgate could not have written, as
    "FIELD.PATH: why" (e.g. "trials[2].offered_rate: NaN ..."), or None.

    leakgate writes no NaN or infinity (to_json refuses them), no negative count, size, rate
    or duration, and offers between 0 and 10,000,000 requests per second. A record that has
    one was edited or damaged; read as it stands it would drive a run at a rate of NaN, pass
    a comparison silently or break a report.
    """
    stack: list[tuple[str, str, object]] = [("", "", data)]
    while stack:
        where, key, value = stack.pop()
        if isinstance(value, dict):
            items = [(f"{where}.{k}" if where else str(k), str(k), v) for k, v in value.items()]
            stack.extend(reversed(items))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}[{i}]", key, v) for i, v in enumerate(value)]))
        elif isinstance(value, _LongInteger):
            return f"{where}: {value!r}, {_NEVER_WRITTEN}"
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            # Ranges are the trials' (a config's numbers have checks of their own); no
            # non-finite number anywhere, no integer beyond a float's range.
            problem = _number_problem(key if where.startswith("trials") else "", value)
            if problem is not None:
                return f"{where}: {problem}"
    return None


_NEVER_WRITTEN = "a number leakgate never writes (the file was edited or damaged)"


def _number_problem(key: str, value: float) -> str | None:
    # An integer by its range first: math.isfinite (and float) of one over ~1.8e308 raises
    # OverflowError. leakgate's counts and sizes are far below.
    if isinstance(value, int) and not -sys.float_info.max <= value <= sys.float_info.max:
        return f"{number_text(value)}, {_NEVER_WRITTEN}"
    if not math.isfinite(value):
        token = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"{token}, {_NEVER_WRITTEN}"
    if key == "offered_rate" and not 0 <= value <= MAX_OFFERED_RATE:
        if value < 0:
            return f"must be above 0 requests per second, got {value:g}"
        return f"must be at most {MAX_OFFERED_RATE:,.0f} requests per second, got {value:g}"
    if key == "growth" and not 1 < value <= MAX_HISTOGRAM_GROWTH:
        return f"must be above 1 and at most {MAX_HISTOGRAM_GROWTH:g}, got {value:g}"
    if key in _NON_NEGATIVE and value < 0:
        return f"must not be negative, got {value:g}"
    return None


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, _LongInteger):
        return repr(value)
    return f"a {type(value).__name__}"


def _why_unusable(record: RunRecord) -> str:
    if not record.trials:
        return "no trials"
    sides = [t for t in record.trials if t.side in BASELINE_SIDES]
    if not sides:
        found = ", ".join(sorted({t.side for t in record.trials}))
        return f"no candidate or baseline trials, only: {found}"
    return "the service died in every trial"
