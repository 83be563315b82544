from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from leakgate import baseline as bl
from leakgate.errors import EXIT_USAGE, UsageError
from leakgate.model import SCHEMA_VERSION, Environment, RunRecord
from leakgate.report import write_atomic as report_write_atomic

from .factories import trial

REPO = Path(__file__).resolve().parent.parent


def record(trials: int = 3, **kwargs: object) -> RunRecord:
    values: dict[str, object] = {
        "created": "2024-05-01T12:00:00Z",
        "package": "./cmd/server",
        "command": "baseline record",
        "config": {"trials": trials},
        "environment": Environment(go_version="go1.22.5", gomaxprocs=4, num_cpu=8),
        "trials": tuple(trial(index=i) for i in range(trials)),
    }
    values.update(kwargs)
    return RunRecord(**values)  # type: ignore[arg-type]


def load_error(path: Path) -> str:
    with pytest.raises(bl.BaselineError) as info:
        bl.load_baseline(path)
    message = info.value.message
    assert str(path) in message  # every refusal names the file
    return message


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- round trip ---------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    original = record()
    bl.save_baseline(original, path)
    loaded = bl.load_baseline(path)
    assert loaded == original
    assert loaded.schema_version == SCHEMA_VERSION
    assert loaded.environment.go_version == "go1.22.5"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert files_in(tmp_path) == ["baseline.json"]


def test_save_replaces_an_existing_baseline_and_creates_directories(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "baseline.json"
    bl.save_baseline(record(trials=2), path)
    bl.save_baseline(record(trials=5), path)
    assert len(bl.load_baseline(path).trials) == 5
    assert files_in(path.parent) == ["baseline.json"]


def test_baseline_error_is_a_usage_error() -> None:
    assert issubclass(bl.BaselineError, UsageError)
    assert bl.BaselineError("x").exit_code == EXIT_USAGE == 4


def test_report_write_atomic_is_the_shared_one() -> None:
    from leakgate.atomic import write_atomic

    assert report_write_atomic is write_atomic


# -- refusals -----------------------------------------------------------------------------


def test_missing_baseline_says_how_to_record_one(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    message = load_error(path)
    assert f"leakgate baseline record DIR -o {path}" in message


def test_a_directory_is_not_a_baseline(tmp_path: Path) -> None:
    assert "directory" in load_error(tmp_path)


def test_oversized_baseline_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    with path.open("wb") as f:
        f.truncate(bl.MAX_BASELINE_BYTES + 1)  # sparse: costs no disk
    assert "over the 256.0 MiB limit" in load_error(path)


def test_corrupt_baseline_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text('{"schema_version": 1, "trials": [}\n')
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    message = load_error(path)
    assert "not a baseline: invalid JSON at line 1" in message
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    path.write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in load_error(path)
    path.write_text("   \n")
    assert "empty" in load_error(path)


@pytest.mark.parametrize("share", [0.5, 0.25, 0.75, 0.999])
def test_truncated_baseline(tmp_path: Path, share: float) -> None:
    path = tmp_path / "baseline.json"
    text = record().to_json()
    path.write_text(text[: int(len(text) * share)])
    message = load_error(path)
    assert "truncated" in message
    assert "leakgate baseline record" in message


def test_truncated_inside_a_string(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    text = record().to_json()
    cut = text.index('"go1.22.5"') + 4
    path.write_text(text[:cut])
    assert "truncated" in load_error(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    data = json.loads(record().to_json())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))
    message = load_error(path)
    assert (
        f"was written by a newer leakgate (schema {SCHEMA_VERSION + 1} > {SCHEMA_VERSION}); "
        "upgrade leakgate or record the baseline again"
    ) in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1, 2, 3]", "a JSON object was expected, found a list"),
        ('"baseline"', "found a str"),
        ("null", "found null"),
        ('{"trials": []}', "no valid schema_version"),
        ('{"schema_version": true}', "no valid schema_version"),
        ('{"schema_version": "1"}', "no valid schema_version"),
        ('{"schema_version": 1, "trials": "many"}', "not a valid leakgate run record"),
        ('{"schema_version": 1, "trials": [{"index": "one"}]}', "not a valid leakgate run record"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_not_a_run_record(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(text)
    assert expected in load_error(path)


def test_record_without_trials_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(RunRecord().to_json())
    message = load_error(path)
    assert "has no trials" in message and "leakgate baseline record" in message


def test_record_whose_service_always_died_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    dead = RunRecord(trials=(trial(index=0, died=True), trial(index=1, died=True)))
    path.write_text(dead.to_json())
    assert "the service died in every trial" in load_error(path)
    with pytest.raises(bl.BaselineError, match="not saved"):
        bl.save_baseline(dead, tmp_path / "other.json")
    assert not (tmp_path / "other.json").exists()


# -- which trials stand for the baseline ----------------------------------------------------


def test_baseline_trials_of_a_single_run_skip_dead_ones() -> None:
    run = RunRecord(trials=(trial(index=0), trial(index=1, died=True), trial(index=2)))
    assert [t.index for t in bl.baseline_trials(run)] == [0, 2]


def test_baseline_trials_of_a_compare_run_are_its_candidate_side() -> None:
    from dataclasses import replace

    trials = tuple(
        replace(trial(index=i), side="baseline" if i % 2 else "candidate") for i in range(6)
    )
    assert [t.index for t in bl.baseline_trials(RunRecord(trials=trials))] == [0, 2, 4]
    base_only = tuple(t for t in trials if t.side == "baseline")
    assert [t.index for t in bl.baseline_trials(RunRecord(trials=base_only))] == [1, 3, 5]
    other = (replace(trial(index=0), side="calibration"),)
    assert bl.baseline_trials(RunRecord(trials=other)) == []


# -- interrupted writes leave the old baseline -----------------------------------------------


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_failed_write_keeps_the_old_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    path = tmp_path / "baseline.json"
    bl.save_baseline(record(trials=2), path)
    old = path.read_bytes()

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, target, boom)
    with pytest.raises(bl.BaselineError, match=r"No space left on device.*unchanged"):
        bl.save_baseline(record(trials=6), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert files_in(tmp_path) == ["baseline.json"]
    assert len(bl.load_baseline(path).trials) == 2


def test_interrupt_during_write_keeps_the_old_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "baseline.json"
    bl.save_baseline(record(trials=2), path)
    old = path.read_bytes()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bl.save_baseline(record(trials=6), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert files_in(tmp_path) == ["baseline.json"]


# A child process that saves a large baseline (5 MB) over an existing one.
_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from dataclasses import replace
    from pathlib import Path

    from leakgate import baseline
    from leakgate.model import RunRecord, Series
    from tests.factories import trial

    points = tuple((t / 10, 10e6 + 37.25 * t) for t in range(5_000))
    big = RunRecord(trials=tuple(
        replace(trial(index=i), series={"heap_live": Series("heap_live", "bytes", points)})
        for i in range(20)
    ))
    if sys.argv[2] == "stall":
        # Stop between writing the temporary file and renaming it, and say so.
        def stall(fd):
            print("written", flush=True)
            time.sleep(600)
        os.fsync = stall
    else:
        print("starting", flush=True)
    baseline.save_baseline(big, Path(sys.argv[1]))
    print("done", flush=True)
    """
)


def _start_writer(path: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_before_rename_keeps_the_old_baseline(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    old_record = record(trials=2)
    bl.save_baseline(old_record, path)
    proc = _start_writer(path, "stall")
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "written\n", proc.stderr.read() if proc.stderr else ""
        temps = [p for p in tmp_path.iterdir() if p.name != "baseline.json"]
        assert len(temps) == 1 and temps[0].stat().st_size > 1_000_000  # mid-save, for real
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert bl.load_baseline(path) == old_record
    # The stray temporary file does not get in the way of the next save.
    bl.save_baseline(record(trials=4), path)
    assert len(bl.load_baseline(path).trials) == 4


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_old_or_new_never_torn(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    old_record = record(trials=2)
    bl.save_baseline(old_record, path)
    proc = _start_writer(path, "run")
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "starting\n"
        # Kill as soon as the temporary file appears, mid-write if we are quick enough.
        while proc.poll() is None and len(files_in(tmp_path)) < 2:
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    loaded = bl.load_baseline(path)  # must parse: the old record or the complete new one
    assert loaded == old_record or len(loaded.trials) == 20


# -- impossible numbers (issue 14, item 9) ----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("offered_rate", float("nan"), "trials[1].offered_rate: NaN, a number leakgate never"),
        ("offered_rate", float("inf"), "trials[1].offered_rate: Infinity"),
        ("offered_rate", -1e308, "trials[1].offered_rate: must be above 0 requests per second"),
        ("offered_rate", 1e308, "trials[1].offered_rate: must be at most 10,000,000"),
        ("measure_seconds", -1.0, "trials[1].measure_seconds: must not be negative, got -1"),
        ("rss_peak", float("-inf"), "trials[1].rss_peak: -Infinity"),
    ],
)
def test_baseline_with_an_impossible_number_names_the_field(
    tmp_path: Path, field: str, value: float, expected: str
) -> None:
    data = json.loads(record().to_json())
    data["trials"][1][field] = value
    path = tmp_path / "base.json"
    path.write_text(json.dumps(data))
    message = load_error(path)
    assert expected in message, message
    assert path.read_text() == json.dumps(data)  # only read


@pytest.mark.parametrize(
    ("digits", "field", "expected"),
    [
        (400, "offered_rate", "trials[1].offered_rate: an integer of 400 digits, a number "
         "leakgate never writes (the file was edited or damaged)"),
        (400, "rss_peak", "trials[1].rss_peak: an integer of 400 digits"),
        # over 4,300 digits json.loads raises a plain ValueError, not a JSONDecodeError
        (5000, "rss_peak", "trials[1].rss_peak: an integer of 5000 digits, a number leakgate "
         "never writes (the file was edited or damaged)"),
        (5000, "schema_version", "no valid schema_version (found an integer of 5000 digits)"),
    ],
)  # fmt: skip
def test_baseline_with_a_huge_integer_names_the_field(
    tmp_path: Path, digits: int, field: str, expected: str
) -> None:
    data = json.loads(record().to_json())
    placeholder = 314159265358979323846
    if field == "schema_version":
        data[field] = placeholder
    else:
        data["trials"][1][field] = placeholder
    text = json.dumps(data).replace(str(placeholder), "9" * digits)
    path = tmp_path / "base.json"
    path.write_text(text)
    message = load_error(path)
    assert expected in message, message
    with pytest.raises(bl.BaselineError) as info:
        bl.load_run(path)  # `leakgate report RUN.json` reads a run the same way
    assert expected in info.value.message
    assert path.read_text() == text  # only read


def test_find_impossible_number_compares_integers_by_range() -> None:
    data = json.loads(record().to_json())
    data["trials"][0]["load"]["requests"] = 10**400
    assert bl.find_impossible_number(data) == (
        "trials[0].load.requests: an integer of 401 digits, a number leakgate never writes "
        "(the file was edited or damaged)"
    )
    data["trials"][0]["load"]["requests"] = 10**300  # a float holds it: in range, not refused
    assert bl.find_impossible_number(data) is None
    data["config"]["load"] = {"rate": -(16**5000)}
    assert bl.find_impossible_number(data) == (
        "config.load.rate: an integer of 6021 digits, a number leakgate never writes "
        "(the file was edited or damaged)"
    )


def test_find_impossible_number_walks_nested_fields() -> None:
    data = json.loads(record().to_json())
    assert bl.find_impossible_number(data) is None
    data["trials"][0]["series"]["heap_live"]["points"][2][1] = float("nan")
    assert bl.find_impossible_number(data) == (
        "trials[0].series.heap_live.points[2][1]: NaN, a number leakgate never writes "
        "(the file was edited or damaged)"
    )
    data = json.loads(record().to_json())
    data["trials"][2]["load"]["latency"]["growth"] = 1.0
    assert bl.find_impossible_number(data) == (
        "trials[2].load.latency.growth: must be above 1 and at most 2, got 1"
    )
    data = json.loads(record().to_json())
    data["config"]["load"] = {"connections": -3, "rate": float("nan")}
    # a config's ranges are its own (checked when it is read back); NaN is refused anywhere
    assert bl.find_impossible_number(data) == (
        "config.load.rate: NaN, a number leakgate never writes (the file was edited or damaged)"
    )


def test_a_run_record_with_nan_is_refused_for_report(tmp_path: Path) -> None:
    data = json.loads(record().to_json())
    data["trials"][0]["checkpoints"]["drain"]["gc_cpu_seconds"] = float("nan")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    with pytest.raises(bl.BaselineError, match=r"run.json: trials\[0\]\.checkpoints\.drain"):
        bl.load_run(path)
