"""Fault cases for what leakgate reads and what it writes (issue 14, items 5 and 13).

- A service that serves a profile bomb (a small gzip that decodes to millions of samples) costs
  the run a note, not gigabytes: the profile is refused by its counts before it is decoded.
- Environment values given to the service (`--env`, `service.env`) are secrets as often as not:
  no report, record or baseline leakgate writes holds them unless `--keep-env-values` says so.

Both run the real `leakgate` command against the stand-in service in attach mode.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from leakgate import cli, pprof
from leakgate.config import Config, ServiceConfig
from leakgate.model import RunRecord, to_plain

from .conftest import REPO
from .factories import trial
from .fakes import fake_config, fake_service
from .fuzz_targets import profile_bomb
from .gate import GateRun, assert_fault, gate_command, run_gate

MiB = 1024 * 1024


def _run_measured(args: list[str], out: Path) -> tuple[GateRun, int]:
    """Run leakgate; also return its own peak RSS in bytes (VmHWM, read until it exits: the
    high-water mark only grows, and wait4's ru_maxrss would count this test's own size, which
    Linux carries over exec)."""
    proc = subprocess.Popen(
        gate_command(*args, "--out", str(out)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    peak = 0

    def watch() -> None:
        nonlocal peak
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            with contextlib.suppress(OSError, StopIteration):
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
                peak = max(peak, int(line.split()[1]) * 1024)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=240)
    watcher.join()
    return GateRun(proc.returncode, stdout, stderr, out), peak


# -- item 5: a profile bomb from the service ---------------------------------------------------

BOMB_SAMPLES = pprof.LIMITS.samples + 200_000  # over the sample cap, under the byte cap


def test_profile_bomb_from_the_service_is_a_note_not_gigabytes(tmp_path: Path) -> None:
    bomb = profile_bomb(BOMB_SAMPLES)
    assert len(bomb) < 100_000  # ~10 MiB of samples in a few KB on the wire
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config())
    routes = {"/debug/pprof/heap": lambda: (200, "application/octet-stream", bomb)}
    with fake_service(routes) as url:
        run, peak = _run_measured(["--config", str(config), "--target", url], tmp_path / "out")
    assert_fault(
        run,
        0,
        r"heap profile not taken: heap profile: more than 1,048,576 samples",
        judged=True,
    )
    assert not list((run.out / "trial-1").glob("heap-*.pb.gz"))  # refused, so not saved
    # The service did answer ?gc=1 with a profile: the GC was forced, only the profile is unread.
    assert (
        "no pprof endpoint to force a GC" not in run.output + (run.out / "summary.md").read_text()
    )
    # Decoded, this bomb took ~400 MiB and 6 s per read (four reads a trial); refused by its
    # count, leakgate stays near its own size (Python, scipy, the report libraries).
    assert peak < 250 * MiB, f"leakgate peaked at {peak / MiB:.0f} MiB"


# -- item 13: environment values are redacted in everything written -------------------------

SECRET = "hunter2"
CONFIG_SECRET = "s3cr3t-from-config"


def _written(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): p.read_bytes().decode("utf-8", "replace")
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _env_config(tmp_path: Path) -> Path:
    config = tmp_path / "leakgate.yml"
    text = fake_config()
    text = text.replace("  ready_path: /healthz\n", "  ready_path: /healthz\n"
                        f"  env: {{API_TOKEN: {CONFIG_SECRET}}}\n")  # fmt: skip
    config.write_text(text)
    return config


def test_env_values_are_redacted_in_every_report_and_the_baseline(tmp_path: Path) -> None:
    config = _env_config(tmp_path)
    baseline = tmp_path / "baseline.json"
    with fake_service() as url:
        args = ["--config", str(config), "--target", url, "--env", f"SECRET={SECRET}"]
        run = run_gate(args, tmp_path / "out")
        record = run_gate(
            [*args, "--trials", "1", "-o", str(baseline)],
            tmp_path / "base-out",
            command="baseline record",
        )
    assert run.returncode == 0, run.output
    assert record.returncode == 0, record.output
    rerendered = run_gate(["report", str(run.out / "run.json")], None, command="report")
    assert rerendered.returncode == 0, rerendered.output  # a redacted record still loads
    files = {
        **{f"out/{k}": v for k, v in _written(run.out).items()},
        **{f"base-out/{k}": v for k, v in _written(record.out).items()},
        "baseline.json": baseline.read_text(),
        "console": run.output + record.output + rerendered.output,
    }
    for name in ("run.json", "report.html", "summary.md", "junit.xml", "verdict.json"):
        assert f"out/{name}" in files
    leaked = [name for name, text in files.items() if SECRET in text or CONFIG_SECRET in text]
    assert leaked == [], f"environment values written to {leaked}"
    env = json.loads(files["out/run.json"])["config"]["service"]["env"]
    assert env == {"API_TOKEN": "<redacted>", "SECRET": "<redacted>"}  # names kept
    assert json.loads(files["baseline.json"])["config"]["service"]["env"]["SECRET"] == "<redacted>"


def test_keep_env_values_keeps_them(tmp_path: Path) -> None:
    config = _env_config(tmp_path)
    with fake_service() as url:
        args = ["--config", str(config), "--target", url, "--env", f"SECRET={SECRET}"]
        run = run_gate([*args, "--keep-env-values"], tmp_path / "out")
    assert run.returncode == 0, run.output
    env = json.loads((run.out / "run.json").read_text())["config"]["service"]["env"]
    assert env == {"API_TOKEN": CONFIG_SECRET, "SECRET": SECRET}
    assert SECRET in (run.out / "report.html").read_text()


def _older_run_json(directory: Path, keep: bool) -> Path:
    """A run.json with the values in clear: written before leakgate redacted them (`keep`
    False), or by a run with --keep-env-values."""
    cfg = Config(service=ServiceConfig(env={"API_TOKEN": CONFIG_SECRET}), keep_env_values=keep)
    record = RunRecord(config=to_plain(cfg), trials=(trial(index=0),))
    directory.mkdir(parents=True)
    path = directory / "run.json"
    path.write_text(record.to_json())
    return path


@pytest.mark.parametrize("keep", [False, True], ids=["before-redaction", "keep-env-values"])
def test_report_redacts_the_env_values_an_older_run_json_holds(tmp_path: Path, keep: bool) -> None:
    run_json = _older_run_json(tmp_path / "saved", keep)
    out = tmp_path / "out"
    run = run_gate(["report", str(run_json), "--out", str(out)], None, command="report")
    assert run.returncode in (0, 1, 5), run.output
    files = {**_written(out), "console": run.output}
    assert "report.html" in files
    leaked = [name for name, text in files.items() if CONFIG_SECRET in text]
    assert leaked == [], f"environment values written to {leaked}"
    assert "API_TOKEN" in files["report.html"]  # the name is kept
    assert CONFIG_SECRET in run_json.read_text()  # the record it reads is left as it was

    kept = tmp_path / "kept"
    asked = run_gate(
        ["report", str(run_json), "--out", str(kept), "--keep-env-values"], None, command="report"
    )
    assert asked.returncode in (0, 1, 5), asked.output
    assert CONFIG_SECRET in (kept / "report.html").read_text()  # asked for: shown


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (SECRET, r"--env: expected NAME=VALUE, got an argument without '='"),
        (f"={SECRET}", r"--env =\.\.\.: expected NAME=VALUE, the name before '=' is empty"),
        (f"TOKEN=x{SECRET}\0", r"--env 'TOKEN': the value contains a NUL byte"),
    ],
    ids=["no-equals", "no-name", "nul-in-value"],
)
def test_env_flag_errors_name_the_variable_not_its_value(
    pair: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In-process: no exec can pass a NUL inside an argument; a wrapper calling main() can."""
    config = tmp_path / "leakgate.yml"
    config.write_text(fake_config())
    out = tmp_path / "out"
    code = cli.main(["check", "--config", str(config), "--env", pair, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 4, captured.err
    assert re.search(message, captured.err), captured.err
    assert SECRET not in captured.out + captured.err
    assert not out.exists()
