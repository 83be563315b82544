"""Build decisions without running go: which GOEXPERIMENT a build with the agent gets, whether
DIR is a main package, which line of a failed build says why, and how a binary is installed."""

from __future__ import annotations

import errno
import shutil
import stat
from pathlib import Path

import pytest

from leakgate.atomic import install_file
from leakgate.build import (
    LEAK_EXPERIMENT,
    GoToolchain,
    build_headline,
    check_main_package,
    goexperiment,
    module_path,
    not_main_package,
    package_clause,
)
from leakgate.errors import UsageError


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


def test_the_headline_of_a_failed_build_skips_gos_progress_lines() -> None:
    output = (
        "go: downloading example.com/nope v1.0.0\n"
        "go: finding module for package example.com/other\n"
        "# example.com/svc\n"
        "main.go:3:8: example.com/nope@v1.0.0: reading https://proxy/...: 404 Not Found\n"
    )
    assert build_headline(output).startswith("main.go:3:8: example.com/nope@v1.0.0: reading")
    assert build_headline("go: downloading x v1\n") == ""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("package lib\n", ("lib", False)),
        ("// Copyright\n\n/* block\npackage main */\npackage lib // x\n", ("lib", False)),
        ("//go:build ignore\n\npackage main\n", ("main", True)),
        ("//go:build linux && !ignored\n\npackage main\n", ("main", False)),
        ("//go:build !ignore\n\npackage main\n", ("main", False)),
        ("// +build ignore\n\npackage main\n", ("main", True)),
        ("// just a comment\n", ("", False)),
    ],
)
def test_package_clause(source: str, expected: tuple[str, bool]) -> None:
    assert package_clause(source) == expected


def test_a_library_directory_is_refused_before_any_build(tmp_path: Path) -> None:
    (tmp_path / "lib.go").write_text("package lib\n")
    (tmp_path / "lib_test.go").write_text("package main\n")  # tests do not count
    with pytest.raises(UsageError, match=r"not a main package \(package lib\)"):
        check_main_package(tmp_path)
    (tmp_path / "main.go").write_text("// +build tools\n\npackage main\n")
    check_main_package(tmp_path)  # a main file among them: go build decides


def test_go_builds_found_packages_error_names_the_library() -> None:
    out = "found packages lib (lib.go) and main (zz_leakgate_agent.go) in /src/lib"
    assert not_main_package(out) == "lib"
    assert not_main_package("found packages a (a.go) and b (b.go) in /src") is None


def test_a_built_binary_is_installed_whole_and_executable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = tmp_path / "build" / "service"
    built.parent.mkdir()
    built.write_bytes(b"\x7fELF" + bytes(range(256)) * 4096)  # 1 MiB: copied in chunks
    built.chmod(0o700)
    target = tmp_path / "cache" / "bin" / "service-0123"
    install_file(built, target)
    assert target.read_bytes() == built.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert built.is_file()  # the build directory's copy is its own to remove

    def no_space(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", no_space)
    built.write_bytes(b"a newer build")
    with pytest.raises(OSError, match="No space"):
        install_file(built, target)
    assert target.read_bytes()[:4] == b"\x7fELF"  # the cached binary is left as it was
    assert [p.name for p in target.parent.iterdir()] == [target.name]
