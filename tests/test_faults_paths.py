"""The fault catalogue, paths: where leakgate writes is checked before anything starts.

A report never lands on an input (the baseline, the config, a load result, the run record
`report` reads) or on another report, however the two paths are spelled (a symlink, a hard
link); `--out` clears only a directory leakgate marked as its own; an output that cannot be
written is refused up front, naming the flag. Each refusal is exit 4 with a message naming
both paths, nothing written, and the user's files byte-for-byte as they were. The cases run
the real `leakgate` command, in attach mode on the stand-in service (tests/fakes.py) where a
run would otherwise start, so that a run which wrongly goes ahead is short.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from leakgate.build import AGENT_FILE_NAME
from leakgate.config import Config
from leakgate.model import RunRecord, to_plain

from .conftest import SAMPLE
from .factories import trial
from .fakes import fake_config, fake_service
from .gate import GateRun, go_module, run_gate, write_config

MARKER = ".leakgate-report"
JUDGED = ("run.json", "verdict.json", "junit.xml", "summary.md", "report.html")

FAKE_CONFIG = fake_config()  # the stand-in service's, in attach mode


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under `root`: a file's bytes, a symlink's target, "dir" for a directory."""
    entries: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                entries[key] = "dir"
            else:
                entries[key] = path.read_bytes()
    return entries


def record_json(command: str = "check") -> str:
    """A small valid RunRecord: usable as a baseline and as a run.json for `report`."""
    record = RunRecord(
        command=command, config=to_plain(Config()), trials=(trial(index=0), trial(index=1))
    )
    return record.to_json()


@pytest.fixture
def url() -> Iterator[str]:
    with fake_service() as base:
        yield base


def refused(run: GateRun, message: str) -> None:
    assert run.returncode == 4, run.output
    assert re.search(message, run.stderr), f"{message!r} not in:\n{run.stderr}"
    assert "Traceback" not in run.output


# -- item 1: a report path that is an input or another report -----------------------------


@dataclass
class Clash:
    # makes the user's files in the directory it is given; returns the arguments
    setup: Callable[[Path], list[str]]
    message: str
    command: str = "check"


def _baseline(tmp: Path, name: str = "base.json") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_json())
    return path


def _config(tmp: Path) -> Path:
    path = tmp / "leakgate.yml"
    path.write_text(FAKE_CONFIG)
    return path


def _out_run_json_is_the_baseline(tmp: Path) -> list[str]:
    base = _baseline(tmp / "out", "run.json")
    return ["--out", str(tmp / "out"), "--baseline", str(base)]


def _junit_is_the_baseline(tmp: Path) -> list[str]:
    base = _baseline(tmp)
    return ["--baseline", str(base), "--junit", str(base)]


def _json_is_a_symlink_to_the_baseline(tmp: Path) -> list[str]:
    base = _baseline(tmp)
    (tmp / "link.json").symlink_to(base)
    return ["--baseline", str(base), "--json", str(tmp / "link.json")]


def _junit_is_a_hard_link_to_the_baseline(tmp: Path) -> list[str]:
    base = _baseline(tmp)
    os.link(base, tmp / "hard.xml")
    return ["--baseline", str(base), "--junit", str(tmp / "hard.xml")]


def _baseline_through_a_symlinked_directory(tmp: Path) -> list[str]:
    base = _baseline(tmp / "real", "run.json")
    (tmp / "alias").symlink_to(tmp / "real")
    return ["--out", str(tmp / "alias"), "--baseline", str(base)]


def _json_is_the_config(tmp: Path) -> list[str]:
    return ["--json", str(_config(tmp))]


def _openmetrics_is_the_junit(tmp: Path) -> list[str]:
    return ["--junit", str(tmp / "r.txt"), "--openmetrics", str(tmp / "r.txt")]


def _junit_is_the_summary(tmp: Path) -> list[str]:
    return ["--out", str(tmp / "out"), "--junit", str(tmp / "out" / "summary.md")]


def _external_config(tmp: Path) -> Path:
    config = tmp / "leakgate.yml"
    external = "  rate: 100\n  tool: external\n  command: [sh, -c, 'sleep {duration}']\n"
    config.write_text(FAKE_CONFIG.replace("  rate: 100\n", external))
    return config


def _openmetrics_is_a_load_result(tmp: Path) -> list[str]:
    _external_config(tmp)
    results = tmp / "results.json"
    results.write_text('{"code": 200, "latency": 1000000, "timestamp": "2026-11-27T08:00:00Z"}\n')
    return ["--load-results", str(results), "--openmetrics", str(results)]


def _load_result_is_the_baseline(tmp: Path) -> list[str]:
    """leakgate deletes every load result before each trial (a stale one must not be read as
    this trial's): one that is the baseline would be deleted with it."""
    _external_config(tmp)
    base = _baseline(tmp)
    return ["--baseline", str(base), "--load-results", str(base)]


def _load_result_is_the_config(tmp: Path) -> list[str]:
    return ["--load-results", str(_external_config(tmp))]


def _record_output_is_the_config(tmp: Path) -> list[str]:
    return ["-o", str(_config(tmp))]


def _record_output_is_the_json(tmp: Path) -> list[str]:
    return ["-o", str(tmp / "b.json"), "--json", str(tmp / "b.json")]


def _baseline_in_a_trial_directory(tmp: Path) -> list[str]:
    out = tmp / "out"
    (out / "trial-1").mkdir(parents=True)
    (out / MARKER).write_text("")
    base = _baseline(out / "trial-1")
    return ["--out", str(out), "--baseline", str(base)]


CLASHES = {
    "out-run-json-is-the-baseline": Clash(
        _out_run_json_is_the_baseline, r"--baseline \S*out/run\.json and run\.json in --out \S*out"
    ),
    "junit-is-the-baseline": Clash(
        _junit_is_the_baseline, r"--baseline \S*base\.json and --junit \S*base\.json"
    ),
    "json-is-a-symlink-to-the-baseline": Clash(
        _json_is_a_symlink_to_the_baseline, r"--baseline \S*base\.json and --json \S*link\.json"
    ),
    "junit-is-a-hard-link-to-the-baseline": Clash(
        _junit_is_a_hard_link_to_the_baseline, r"--baseline \S*base\.json and --junit \S*hard\.xml"
    ),
    "baseline-through-a-symlinked-out": Clash(
        _baseline_through_a_symlinked_directory,
        r"--baseline \S*real/run\.json and run\.json in --out \S*alias",
    ),
    "json-is-the-config": Clash(
        _json_is_the_config, r"--config \S*leakgate\.yml and --json \S*leakgate\.yml"
    ),
    "openmetrics-is-the-junit": Clash(
        _openmetrics_is_the_junit, r"--junit \S*r\.txt and --openmetrics \S*r\.txt"
    ),
    "junit-is-the-summary": Clash(
        _junit_is_the_summary, r"summary\.md in --out \S*out and --junit \S*out/summary\.md"
    ),
    "openmetrics-is-a-load-result": Clash(
        _openmetrics_is_a_load_result,
        r"--load-results \S*results\.json and --openmetrics \S*results\.json",
    ),
    "load-result-is-the-baseline": Clash(
        _load_result_is_the_baseline,
        r"--baseline \S*base\.json and --load-results \S*base\.json are the same file: "
        r"leakgate deletes a load result before each trial, which would delete the baseline",
    ),
    "load-result-is-the-config": Clash(
        _load_result_is_the_config,
        r"--config \S*leakgate\.yml and --load-results \S*leakgate\.yml are the same file",
    ),
    "record-output-is-the-config": Clash(
        _record_output_is_the_config,
        r"--config \S*leakgate\.yml and -o \S*leakgate\.yml",
        command="baseline record",
    ),
    "record-output-is-the-json": Clash(
        _record_output_is_the_json,
        r"--json \S*b\.json and -o \S*b\.json",
        command="baseline record",
    ),
    "baseline-in-a-trial-directory": Clash(
        _baseline_in_a_trial_directory,
        r"--baseline \S*trial-1/base\.json is inside \S*out/trial-1, which the run clears",
    ),
}


@pytest.mark.parametrize("case", sorted(CLASHES))
def test_a_report_on_an_input_or_another_report_is_refused(
    case: str, tmp_path: Path, url: str
) -> None:
    clash = CLASHES[case]
    user = tmp_path / "user"
    user.mkdir()
    args = clash.setup(user)
    if not (user / "leakgate.yml").exists():
        _config(user)
    args = ["--config", str(user / "leakgate.yml"), *args, "--target", url, "--trials", "1"]
    before = snapshot(user)
    run = run_gate(args, None, timeout=60, command=clash.command, cwd=tmp_path)
    refused(run, clash.message)
    assert "are the same file" in run.stderr or "which the run clears" in run.stderr
    assert snapshot(user) == before  # the baseline, config and load results untouched
    assert not (tmp_path / ".leakgate").exists()


def _saved_run(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    run = directory / "run.json"
    run.write_text(record_json())
    return run


def _report(args: list[str], cwd: Path) -> GateRun:
    return run_gate(["report", *args], None, timeout=60, command="report", cwd=cwd)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            lambda run: [str(run), "--openmetrics", str(run)],
            r"RUN\.json \S*run\.json and --openmetrics",
        ),
        (
            lambda run: [str(run), "--baseline", str(run.parent / "base.json"), "--openmetrics",
                         str(run.parent / "base.json")],
            r"--baseline \S*base\.json and --openmetrics \S*base\.json",
        ),
        (
            lambda run: [str(run.rename(run.parent / "summary.md"))],
            r"RUN\.json \S*summary\.md and summary\.md in the directory of RUN\.json",
        ),
    ],
    ids=["openmetrics-is-the-run", "openmetrics-is-the-baseline", "run-named-like-a-report"],
)  # fmt: skip
def test_report_never_writes_over_the_run_or_the_baseline(
    tmp_path: Path, arguments: Callable[[Path], list[str]], message: str
) -> None:
    run_json = _saved_run(tmp_path / "saved")
    _baseline(tmp_path / "saved")
    args = arguments(run_json)  # may move run.json
    before = snapshot(tmp_path / "saved")
    run = _report(args, tmp_path)
    refused(run, message)
    assert snapshot(tmp_path / "saved") == before


def test_report_rerenders_beside_its_run_json(tmp_path: Path) -> None:
    """The normal case: `report` does not write run.json, so its own directory is fine."""
    run_json = _saved_run(tmp_path / "saved")  # an earlier leakgate's directory: no marker
    text = run_json.read_bytes()
    run = _report([str(run_json)], tmp_path)
    assert run.returncode in (0, 1, 5), run.output
    assert run_json.read_bytes() == text
    assert all((tmp_path / "saved" / name).exists() for name in JUDGED)
    assert (tmp_path / "saved" / MARKER).exists()  # only leakgate's files: adopted


def test_report_into_a_users_folder_adds_its_files_and_leaves_it_unmarked(tmp_path: Path) -> None:
    run_json = _saved_run(tmp_path / "saved")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes\n")
    run = _report([str(run_json), "--out", str(folder)], tmp_path)
    assert run.returncode in (0, 1, 5), run.output
    assert (folder / "summary.md").exists() and (folder / "notes.txt").read_text() == "my notes\n"
    assert not (folder / MARKER).exists()  # a later `check --out mine` is still refused


# -- item 2: --out clears only a directory leakgate marked as its own -----------------------


def _users_folder(folder: Path) -> None:
    (folder / "trial-1").mkdir(parents=True)
    (folder / "trial-1" / "data.csv").write_text("a,b\n1,2\n")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "summary.md").write_text("# my summary\n")


def test_out_refuses_a_folder_leakgate_did_not_write(tmp_path: Path, url: str) -> None:
    folder = tmp_path / "mine"
    _users_folder(folder)
    before = snapshot(folder)
    config = _config(tmp_path)
    run = run_gate(["--config", str(config), "--target", url], folder, timeout=60)
    refused(run, r"--out \S*mine: not a leakgate report directory .*notes\.txt")
    assert re.search(r"give --out a new or empty directory", run.stderr), run.stderr
    assert snapshot(folder) == before


def _only_leakgates_names(folder: Path) -> None:
    """A user's results: every name is one leakgate uses, none is what leakgate writes there."""
    (folder / "trial-1").mkdir(parents=True)
    (folder / "trial-1" / "data.csv").write_text("a,b\n1,2\n")
    (folder / "summary.md").write_text("# my summary\n")


def _leakgates_names_without_a_run_json(folder: Path) -> None:
    (folder / "trial-1").mkdir(parents=True)
    (folder / "trial-1" / "service.log").write_text("my log\n")
    (folder / "summary.md").write_text("# my summary\n")


def _a_run_json_that_is_not_a_run_record(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text('{"runs": [1, 2, 3]}\n')
    (folder / "summary.md").write_text("# my summary\n")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_only_leakgates_names, r"it holds trial-1/data\.csv"),
        (_leakgates_names_without_a_run_json, r"it holds summary\.md, trial-1 without a run\.json"),
        (_a_run_json_that_is_not_a_run_record, r"it holds a run\.json that is not a leakgate"),
    ],
    ids=["trial-data-and-summary", "no-run-json", "run-json-not-a-record"],
)
def test_out_refuses_a_users_folder_that_only_uses_leakgates_names(
    tmp_path: Path, url: str, make: Callable[[Path], None], message: str
) -> None:
    """Issue 14 item 2: leakgate's names alone do not make an unmarked folder leakgate's; its
    trial-N/ must hold only what a trial writes, and its run.json must be a run record."""
    folder = tmp_path / "results"
    make(folder)
    before = snapshot(folder)
    config = _config(tmp_path)
    run = run_gate(["--config", str(config), "--target", url], folder, timeout=60)
    refused(run, r"--out \S*results: not a leakgate report directory \(" + message)
    assert snapshot(folder) == before  # byte for byte: nothing cleared, no marker added


def test_report_out_refuses_to_replace_a_users_file(tmp_path: Path) -> None:
    run_json = _saved_run(tmp_path / "saved")
    folder = tmp_path / "mine"
    _users_folder(folder)
    before = snapshot(folder)
    run = _report([str(run_json), "--out", str(folder)], tmp_path)
    refused(run, r"--out \S*mine: not a leakgate report directory .*summary\.md")
    assert snapshot(folder) == before


def test_out_adopts_an_earlier_leakgates_report_directory(tmp_path: Path, url: str) -> None:
    """A .leakgate/ written before the marker existed holds only leakgate's own names: it is
    taken over (marked), and what the earlier run left is cleared as before."""
    out = tmp_path / ".leakgate"
    for name in ("verdict.json", "summary.md", "scenario.json"):
        (out / "trial-2").mkdir(parents=True, exist_ok=True)
        (out / name).write_text('{"status": "stale"}')
    (out / "run.json").write_text(record_json())  # a run record: recognised as leakgate's
    (out / "trial-2" / "service.log").write_text("old\n")
    (out / "trial-2" / "heap-drain.pb.gz").write_bytes(b"old")
    config = _config(tmp_path)
    run = run_gate(["--config", str(config), "--target", url], None, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.output
    assert (out / MARKER).is_file()
    assert not (out / "trial-2").exists()
    assert "stale" not in (out / "verdict.json").read_text()


# -- item 8: an output that cannot be written is refused before anything starts -------------


def _blocker(tmp: Path) -> Path:
    blocker = tmp / "afile"
    blocker.write_text("a file where a directory should be\n")
    return blocker


@pytest.mark.parametrize(
    ("flag", "command"),
    [("--junit", "check"), ("--json", "check"), ("--openmetrics", "check"),
     ("-o", "baseline record")],
)  # fmt: skip
def test_an_output_under_a_regular_file_is_refused_naming_the_flag(
    tmp_path: Path, url: str, flag: str, command: str
) -> None:
    blocker = _blocker(tmp_path)
    config = _config(tmp_path)
    target = blocker / "sub" / "report.out"
    args = ["--config", str(config), "--target", url, flag, str(target)]
    run = run_gate(args, tmp_path / "out", timeout=60, command=command)
    refused(run, rf"{flag} \S*afile/sub/report\.out: cannot write there")
    assert blocker.read_text() == "a file where a directory should be\n"
    assert not any((tmp_path / "out" / name).exists() for name in JUDGED)


def test_a_refused_output_leaves_no_new_directory(tmp_path: Path, url: str) -> None:
    """The write probes create the directories they test; when one refuses, those created
    before it (the report directory, --junit's) are removed again: a refused run leaves
    nothing behind."""
    blocker = _blocker(tmp_path)
    config = _config(tmp_path)
    junit = tmp_path / "j" / "sub" / "j.xml"  # probed (and created) before --json refuses
    args = ["--config", str(config), "--target", url, "--junit", str(junit),
            "--json", str(blocker / "sub" / "run.json")]  # fmt: skip
    run = run_gate(args, tmp_path / "new" / "out", timeout=60)
    refused(run, r"--json \S*afile/sub/run\.json: cannot write there")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "leakgate.yml"]


def test_a_report_name_taken_by_a_directory_is_refused_naming_the_fix(
    tmp_path: Path, url: str
) -> None:
    out = tmp_path / "out"
    (out / "summary.md").mkdir(parents=True)
    (out / MARKER).write_text("")
    config = _config(tmp_path)
    run = run_gate(["--config", str(config), "--target", url], out, timeout=60)
    refused(
        run,
        r"\S*out/summary\.md is a directory; leakgate writes its summary\.md there: "
        r"remove it or give --out another directory",
    )
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "summary.md"]


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody can write into, root included (tests run as root): chattr +i."""
    directory = tmp_path / "locked"
    directory.mkdir()
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {done.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=False)


@pytest.mark.parametrize("flag", ["--junit", "--json"])
def test_an_output_in_a_read_only_directory_is_refused(
    tmp_path: Path, url: str, immutable_dir: Path, flag: str
) -> None:
    config = _config(tmp_path)
    args = ["--config", str(config), "--target", url, flag, str(immutable_dir / "r.out")]
    run = run_gate(args, tmp_path / "out", timeout=60)
    refused(run, rf"{flag} \S*locked/r\.out: cannot write there")
    assert not any((tmp_path / "out" / name).exists() for name in JUDGED)


@pytest.mark.parametrize("command", ["check", "report"])
def test_openmetrics_pointing_at_a_directory_is_refused(
    tmp_path: Path, url: str, command: str
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    if command == "report":
        run = _report(
            [str(_saved_run(tmp_path / "saved")), "--openmetrics", str(directory)], tmp_path
        )
    else:
        config = _config(tmp_path)
        args = ["--config", str(config), "--target", url, "--openmetrics", str(directory)]
        run = run_gate(args, tmp_path / "out", timeout=60)
    refused(run, r"--openmetrics \S*metrics: is a directory")
    assert list(directory.iterdir()) == []
    assert not any((tmp_path / "out" / name).exists() for name in JUDGED)


# -- item 10: usage errors are refused up front, and none writes a report ------------------


def test_no_command_is_a_usage_error() -> None:
    leakgate = [sys.executable, "-m", "leakgate"]
    bare = subprocess.run(leakgate, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 4, bare.stdout + bare.stderr
    assert "usage: leakgate" in bare.stderr and bare.stdout == ""
    helped = subprocess.run([*leakgate, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "usage: leakgate" in helped.stdout


def test_a_dir_without_go_mod_writes_no_report(tmp_path: Path) -> None:
    package = tmp_path / "nomod"
    package.mkdir()
    (package / "main.go").write_text("package main\n\nfunc main() {}\n")
    run = run_gate([str(package)], tmp_path / "out", timeout=60, cwd=tmp_path)
    refused(run, r"nomod: no go\.mod found here or above")
    assert not (tmp_path / "out").exists()


def test_a_usage_error_found_during_the_build_writes_no_report(go_bin: str, tmp_path: Path) -> None:
    """Some input only the build looks at (here: a file with the agent's name): still exit 4,
    and then with no reports, since nothing was judged."""
    package = go_module(tmp_path / "svc", "package main\n\nfunc main() {}\n")
    (package / AGENT_FILE_NAME).write_text("package main\n")
    run = run_gate([str(package)], tmp_path / "out", timeout=120, cwd=tmp_path)
    refused(run, rf"{AGENT_FILE_NAME} already exists")
    assert not any((tmp_path / "out" / name).exists() for name in JUDGED)


@pytest.mark.go
@pytest.mark.slow
def test_a_baseline_refused_after_the_run_is_not_a_usage_error(
    go_bin: str, tmp_path: Path, marker: str
) -> None:
    """The service died in every trial, so the record cannot be a baseline: that is learned
    only from the run, whose reports are written, so it is exit 5, never 4 ("nothing started")."""
    config = write_config(tmp_path / "leakgate.yml", warmup="1s", duration="8s")
    baseline = tmp_path / "base.json"
    args = [str(SAMPLE), "--config", str(config), "--env", marker, "--env", "CRASH_AFTER=2000"]
    run = run_gate(
        [*args, "--trials", "1", "-o", str(baseline)], tmp_path / "out", command="baseline record"
    )
    assert run.returncode == 5, run.output
    assert "not saved: the run has no trial usable as a baseline" in run.stderr
    assert all((tmp_path / "out" / name).exists() for name in JUDGED)
    assert not baseline.exists()
