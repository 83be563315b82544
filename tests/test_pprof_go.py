"""leakgate's pprof reader agrees with `go tool pprof` on real profiles from the sample service."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from leakgate import pprof

from .conftest import SAMPLE
from .factories import by_function, sample_totals
from .gate import run_gate, write_config

pytestmark = [pytest.mark.go, pytest.mark.slow]


@pytest.fixture(scope="module")
def profiles(go_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A leaky run's saved profiles (heap and goroutine, after warm-up and after drain)."""
    tmp = tmp_path_factory.mktemp("profiles")
    config = write_config(tmp / "leakgate.yml", warmup="1s", duration="4s")
    run = run_gate([str(SAMPLE), "--config", str(config), "--env", "LEAK=goroutine"], tmp / "out")
    assert run.returncode == 1, run.output
    return tmp / "out" / "trial-1"


def go_top(go_bin: str, path: Path, sample_index: str) -> tuple[int, dict[str, int]]:
    """(total, flat value per function) as `go tool pprof -top` prints them, in raw units."""
    out = subprocess.run(
        [go_bin, "tool", "pprof", "-top", "-unit=B", f"-sample_index={sample_index}", str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    total = re.search(r"of (\d+)B? total", out)
    assert total is not None, out
    flat = {}
    for line in out.splitlines():
        m = re.match(
            r"\s*(\d+)B?\s+[\d.]+%\s+[\d.]+%\s+\d+B?\s+[\d.]+%\s+(.+?)( \(inline\))?$", line
        )
        if m:
            flat[m.group(2)] = int(m.group(1))
    return int(total.group(1)), flat


@pytest.mark.parametrize(
    ("name", "sample_types"),
    [
        ("heap-drain.pb.gz", ("inuse_space", "inuse_objects", "alloc_space")),
        ("heap-warmup.pb.gz", ("inuse_space",)),
        ("goroutine-drain.pb.gz", ("goroutine",)),
    ],
)
def test_totals_and_top_functions_match_go_tool_pprof(
    go_bin: str, profiles: Path, name: str, sample_types: tuple[str, ...]
) -> None:
    profile = pprof.load(profiles / name)
    for sample_type in sample_types:
        total, go_flat = go_top(go_bin, profiles / name, sample_type)
        assert sample_totals(profile)[sample_type] == total
        ours = by_function(profile, sample_type)
        shown = {fn: v for fn, v in go_flat.items() if v > 0}
        assert shown, go_flat
        for function, value in shown.items():
            assert ours[function] == value, (sample_type, function)
        top_go = max(shown, key=lambda fn: shown[fn])
        assert ours.most_common(1)[0][1] == shown[top_go]


def test_goroutine_leak_is_the_top_stack(profiles: Path) -> None:
    before = pprof.load(profiles / "goroutine-warmup.pb.gz")
    after = pprof.load(profiles / "goroutine-drain.pb.gz")
    grown = pprof.diff(before, after, "goroutine")
    stack, count = grown.most_common(1)[0]
    assert count > 100
    own = [frame.function for frame in stack if pprof.is_own_code(frame.function)]
    assert own and own[0].startswith("main.leakBlockedGoroutine"), stack
