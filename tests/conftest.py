from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample-go-service"


def _require_tools() -> bool:
    # CI sets LEAKGATE_REQUIRE_GO=1: a missing toolchain must fail the run, never skip it.
    return os.environ.get("LEAKGATE_REQUIRE_GO") == "1" or os.environ.get("CI") == "true"


@pytest.fixture(autouse=True)
def _guard_user_files(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep tests away from the user's real cache and working directory files."""
    cache = os.environ.get("LEAKGATE_TEST_CACHE")
    if cache is None:
        cache = str(tmp_path_factory.getbasetemp() / "leakgate-cache")
        os.environ["LEAKGATE_TEST_CACHE"] = cache
    monkeypatch.setenv("LEAKGATE_CACHE", cache)


@pytest.fixture(scope="session")
def go_bin() -> str:
    go = shutil.which("go")
    if go is None:
        if _require_tools():
            pytest.fail("the Go toolchain is required on CI but `go` is not on PATH")
        pytest.skip("Go toolchain not installed")
    return go


def _tool(name: str) -> str:
    """The path of a command the integration tests need: skipped on a developer box without
    it, a failure on CI (which installs it with apt-get)."""
    path = shutil.which(name)
    if path is None:
        if _require_tools():
            pytest.fail(f"{name} is required on CI but is not on PATH (apt-get install {name})")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="session")
def wrk() -> str:
    return _tool("wrk")


@pytest.fixture(scope="session")
def chromium() -> str:
    return _tool("chromium")


@pytest.fixture(scope="session")
def shellcheck() -> str:
    return _tool("shellcheck")


@pytest.fixture(scope="session")
def prlimit() -> str:
    return _tool("prlimit")  # util-linux


@pytest.fixture
def marker() -> Iterator[str]:
    """An environment entry to pass with --env: finds the test's service processes, and fails
    the test if any is still running after it."""
    from .gate import kill_leftovers, processes_with_env

    mark = f"LEAKGATE_TEST_RUN={uuid.uuid4().hex}"
    yield mark
    leftovers = processes_with_env(mark)
    kill_leftovers(mark)
    assert leftovers == [], f"processes left running: {leftovers}"
