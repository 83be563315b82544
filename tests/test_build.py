"""Build settings that are pure decisions: which GOEXPERIMENT a build with the agent gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakgate.build import LEAK_EXPERIMENT, GoToolchain, goexperiment, module_path


def toolchain(tmp_path: Path, offers: bool, user: str) -> GoToolchain:
    exp = tmp_path / "src" / "internal" / "goexperiment"
    exp.mkdir(parents=True)
    if offers:
        (exp / f"exp_{LEAK_EXPERIMENT}_on.go").write_text("package goexperiment\n")
    return GoToolchain("go", "go1.26.0", "linux", "amd64", str(tmp_path), user)


@pytest.mark.parametrize(
    ("offers", "user", "expected"),
    [
        (True, "", LEAK_EXPERIMENT),
        (True, "arenas", f"arenas,{LEAK_EXPERIMENT}"),
        (True, f"no{LEAK_EXPERIMENT}", None),  # the user switched it off: leave it off
        (True, LEAK_EXPERIMENT, None),  # already on
        (False, "", None),  # an older toolchain (or one where it is no longer an experiment)
    ],
)
def test_goroutineleak_experiment_only_where_offered_and_wanted(
    tmp_path: Path, offers: bool, user: str, expected: str | None
) -> None:
    """`user` is GOEXPERIMENT as `go env` reports it (environment or `go env -w`)."""
    assert goexperiment(toolchain(tmp_path, offers, user)) == expected


def test_module_path_reads_go_mod(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text("// comment\nmodule orders // the service\n\ngo 1.22\n")
    (tmp_path / "cmd" / "server").mkdir(parents=True)
    assert module_path(tmp_path / "cmd" / "server") == "orders"
    assert module_path(tmp_path.parent) == ""
