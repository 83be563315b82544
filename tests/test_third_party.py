"""A real third-party Go HTTP server, go-httpbin, from the Go module proxy: built from the
module cache with the agent injected (the cache left untouched), loaded, and a clean run
passes. Needs the Go module proxy, which CI reaches."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO
from .gate import run_gate

pytestmark = [pytest.mark.go, pytest.mark.slow]

MODULE = "github.com/mccutchen/go-httpbin/v2"
VERSION = "v2.26.0"
CONFIG = REPO / "examples" / "go-httpbin" / "leakgate.yml"


@pytest.fixture(scope="module")
def httpbin(go_bin: str) -> Path:
    proc = subprocess.run(
        [go_bin, "mod", "download", "-json", f"{MODULE}@{VERSION}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Path(json.loads(proc.stdout)["Dir"])


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def test_go_httpbin_from_the_module_cache_passes_clean(
    httpbin: Path, tmp_path: Path, marker: str
) -> None:
    before = _tree(httpbin)
    run = run_gate(
        [
            str(httpbin / "cmd" / "go-httpbin"),
            "--config",
            str(CONFIG),
            "--warmup",
            "2s",
            "--duration",
            "6s",
            "--env",
            marker,
        ],
        tmp_path / "out",
    )
    assert run.returncode == 0, run.output
    assert _tree(httpbin) == before  # the module cache is untouched
    record = json.loads((run.out / "run.json").read_text())
    trial = record["trials"][0]
    assert trial["checkpoints"]["drain"]["source"] == "agent"
    assert trial["load"]["requests"] > 1000
    assert not any(trial["load"]["errors"].values())
    assert record["environment"]["go_module"] == MODULE
