"""The Go parts (sample service, load generator, agent, bench programs) pass gofmt, go vet and
go test."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.go

GO_MODULES = [
    REPO / "sample-go-service",
    REPO / "leakgate" / "load" / "loadgen",
    REPO / "leakgate" / "agent" / "agenttest",
]
BENCH_MODULES = [REPO / "bench" / "bigprofile"]  # no tests of their own: vet and gofmt


def _go(go_bin: str, module: Path, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [go_bin, *args],
        cwd=module,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"go {' '.join(args)} in {module}:\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("module", GO_MODULES, ids=lambda p: p.name)
def test_go_vet_and_test(go_bin: str, module: Path) -> None:
    _go(go_bin, module, "vet", "./...")
    out = _go(go_bin, module, "test", "-count=1", "./...")
    assert "ok" in out


@pytest.mark.parametrize("module", BENCH_MODULES, ids=lambda p: p.name)
def test_bench_programs_vet(go_bin: str, module: Path) -> None:
    _go(go_bin, module, "vet", "./...")


def test_gofmt_clean(go_bin: str) -> None:
    gofmt = Path(go_bin).with_name("gofmt")
    files = [str(p) for m in (*GO_MODULES, *BENCH_MODULES) for p in m.rglob("*.go")]
    files.append(str(REPO / "leakgate" / "agent" / "leakgate_agent.go"))
    proc = subprocess.run([str(gofmt), "-l", *files], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "", f"not gofmt-clean:\n{proc.stdout}"
