from __future__ import annotations

import json
import math

import pytest

from leakgate.model import SCHEMA_VERSION, Histogram, RunRecord, Series, Trial

from .factories import histogram, trial


def test_run_record_round_trips() -> None:
    record = RunRecord(
        created="2026-11-27T00:00:00+00:00", package="svc", trials=(trial(), trial(index=1))
    )
    again = RunRecord.from_json(record.to_json())
    assert again == record


def test_nan_is_never_written() -> None:
    t = Trial(index=0, series={"x": Series("x", "bytes", ((0.0, math.nan), (1.0, math.inf)))})
    text = RunRecord(trials=(t,)).to_json()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["trials"][0]["series"]["x"]["points"] == [[0.0, None], [1.0, None]]


def test_newer_schema_is_refused() -> None:
    data = json.loads(RunRecord().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(ValueError, match="schema_version"):
        RunRecord.from_json(json.dumps(data))


def test_wrong_types_are_refused() -> None:
    data = json.loads(RunRecord(trials=(trial(),)).to_json())
    data["trials"][0]["load"]["requests"] = "many"
    with pytest.raises(ValueError, match="requests"):
        RunRecord.from_json(json.dumps(data))


def test_histogram_percentiles_within_one_percent() -> None:
    import random

    rng = random.Random(3)
    values = [10 ** rng.uniform(-2, 4) for _ in range(20_000)]  # 10 µs .. 10 s, in ms
    h = histogram(values)
    exact = sorted(values)
    for q in (50, 90, 95, 99, 99.9):
        truth = exact[math.ceil(q / 100 * len(exact)) - 1] / 1e3
        got = h.percentile(q)
        assert got is not None and got == pytest.approx(truth, rel=0.01)


def test_empty_histogram_has_no_percentile() -> None:
    assert Histogram().percentile(95) is None
