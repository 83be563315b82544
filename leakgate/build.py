"""go build, with the debug agent injected by -overlay, into a cache keyed by source and Go version.

The service's tree is never modified: the agent reaches the main package through an overlay
file, and the binary goes to leakgate's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from leakgate.atomic import install_file
from leakgate.errors import BuildError, EnvironmentProblem, UsageError
from leakgate.procs import build_dir_prefix, held_dir, spawn, stop_group

AGENT_FILE_NAME = "zz_leakgate_agent.go"
SKIP_DIRS = {".git", ".hg", ".svn", ".leakgate", "node_modules", "__pycache__", ".venv"}
MAX_HASHED_FILE = 8 * 1024 * 1024
BUILD_TIMEOUT = 600.0
# go's progress lines, never the reason a build failed
_PROGRESS = ("go: downloading ", "go: finding ", "go: extracting ")
_FOUND_PACKAGES = re.compile(r"found packages (\w+) \((\S+)\) and (\w+) \((\S+)\)")
_HEADER_BYTES = 64 * 1024
# `//go:build ignore` (or `// +build ignore`) as its own term, not `!ignore` or `ignored`
_IGNORE_CONSTRAINT = re.compile(r"//(go:build|\s*\+build)\b[^\n]*(?<![!\w])ignore\b")


@dataclass(frozen=True, slots=True)
class GoToolchain:
    path: str
    version: str
    goos: str
    goarch: str
    goroot: str = ""
    goexperiment: str = ""  # as `go env` reports it: the environment or `go env -w`
    gomodcache: str = ""


def find_go() -> GoToolchain:
    go = shutil.which("go")
    if go is None:
        raise EnvironmentProblem(
            "the Go toolchain was not found on PATH; install Go 1.21+ (https://go.dev/dl/)"
        )
    try:
        out = subprocess.run(
            [
                go,
                "env",
                "-json",
                "GOVERSION",
                "GOOS",
                "GOARCH",
                "GOROOT",
                "GOEXPERIMENT",
                "GOMODCACHE",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        info = json.loads(out.stdout)
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        raise EnvironmentProblem(f"`go env` failed: {e}") from None
    return GoToolchain(
        go,
        info["GOVERSION"],
        info["GOOS"],
        info["GOARCH"],
        info.get("GOROOT", ""),
        info.get("GOEXPERIMENT", ""),
        info.get("GOMODCACHE", ""),
    )


LEAK_EXPERIMENT = "goroutineleakprofile"


def goexperiment(go: GoToolchain) -> str | None:
    """GOEXPERIMENT for a build with the agent: the user's, plus Go's goroutineleak profile
    (the runtime finds goroutines blocked on what nothing can reach any more) when this
    toolchain offers it as an experiment and the user has not said otherwise. None: unchanged.

    The experiment only adds the profile; the leak-finding GC runs when the profile is read.
    """
    current = go.goexperiment
    offered = Path(go.goroot, "src", "internal", "goexperiment", f"exp_{LEAK_EXPERIMENT}_on.go")
    if not go.goroot or not offered.is_file() or LEAK_EXPERIMENT in current:
        return None
    return f"{current},{LEAK_EXPERIMENT}" if current else LEAK_EXPERIMENT


def cache_dir() -> Path:
    root = os.environ.get("LEAKGATE_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "leakgate"


def agent_source() -> Path:
    return Path(str(resources.files("leakgate") / "agent" / "leakgate_agent.go"))


def loadgen_source_dir() -> Path:
    return Path(str(resources.files("leakgate") / "load" / "loadgen"))


def module_root(package_dir: Path) -> Path:
    """The directory holding the go.mod that governs package_dir."""
    current = package_dir.resolve()
    for candidate in (current, *current.parents):
        if (candidate / "go.mod").is_file():
            return candidate
    raise UsageError(f"{package_dir}: no go.mod found here or above; is this a Go module?")


def check_main_package(package_dir: Path) -> None:
    """Cheap, before anything starts: a UsageError when package_dir holds no Go files or its
    files declare a package other than main (a library). Reads the package clauses only;
    files excluded with `//go:build ignore` and tests do not count."""
    declared: dict[str, str] = {}
    try:
        paths = sorted(package_dir.glob("*.go"))
    except OSError:
        return
    for path in paths:
        if path.name.endswith("_test.go") or path.name.startswith((".", "_")):
            continue
        if path.name == AGENT_FILE_NAME:
            continue
        try:
            with open(path, "rb") as f:
                head = f.read(_HEADER_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        name, ignored = package_clause(head)
        if name and not ignored:
            declared.setdefault(name, path.name)
    if not declared:
        if not paths:
            raise UsageError(f"{package_dir}: no Go files here (give the main package's directory)")
        return  # only constrained or unreadable files: go build says what it makes of them
    if "main" not in declared:
        name = next(iter(declared))
        raise UsageError(
            f"{package_dir}: not a main package (package {name}); leakgate builds and runs a "
            "program: give the directory of its main package"
        )


def package_clause(source: str) -> tuple[str, bool]:
    """(the package name, whether a `//go:build ignore` constraint excludes the file) from the
    comments and package clause at the top of a Go file; ("", False) when there is none."""
    i, n, ignored = 0, len(source), False
    while i < n:
        if source[i].isspace():
            i += 1
        elif source.startswith("//", i):
            end = source.find("\n", i)
            end = n if end < 0 else end
            if _IGNORE_CONSTRAINT.match(source, i, end):
                ignored = True
            i = end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            if end < 0:
                return "", ignored
            i = end + 2
        else:
            m = re.match(r"package\s+([A-Za-z_]\w*)", source[i:])
            return (m.group(1) if m else ""), ignored
    return "", ignored


def not_main_package(output: str) -> str | None:
    """The package name when go build's output says the directory is not a main package
    (the agent's file is package main; "found packages lib (x.go) and main (zz_...)")."""
    m = _FOUND_PACKAGES.search(output)
    if m is None:
        return None
    if m.group(2) == AGENT_FILE_NAME and m.group(1) == "main":
        return m.group(3)
    if m.group(4) == AGENT_FILE_NAME and m.group(3) == "main":
        return m.group(1)
    return None


def binary_go_version(go: GoToolchain, binary: Path) -> str:
    """The Go version a binary was built with (`go version FILE`), "" when it cannot tell."""
    try:
        out = subprocess.run(
            [go.path, "version", str(binary)], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    words = out.strip().rsplit(": ", 1)[-1].split()
    return words[0] if words and words[0].startswith("go") else ""


def module_path(package_dir: Path) -> str:
    """The `module` line of the go.mod governing package_dir ("" when there is none)."""
    try:
        text = (module_root(package_dir) / "go.mod").read_text(errors="replace")
    except (UsageError, OSError):
        return ""
    for line in text.splitlines():
        words = line.split("//", 1)[0].split()
        if len(words) == 2 and words[0] == "module":
            return words[1].strip('"`')
    return ""


def tree_hash(root: Path, extra: list[str]) -> str:
    """Hash of every file under root (skipping VCS and tool directories) plus `extra` strings."""
    h = hashlib.sha256()
    for item in extra:
        h.update(item.encode() + b"\0")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except OSError:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0")
            if st.st_size > MAX_HASHED_FILE:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
                continue
            try:
                h.update(path.read_bytes())
            except OSError:
                continue
    return h.hexdigest()[:24]


def build_service(
    package_dir: Path, build_flags: tuple[str, ...], inject_agent: bool, go: GoToolchain
) -> Path:
    """Build the service's main package; returns the cached binary's path."""
    package_dir = package_dir.resolve()
    if not package_dir.is_dir():
        raise UsageError(f"{package_dir}: not a directory")
    if inject_agent and (package_dir / AGENT_FILE_NAME).exists():
        raise UsageError(
            f"{package_dir / AGENT_FILE_NAME} already exists; leakgate's agent needs that name"
        )
    overlay_flags = [f for f in build_flags if f.split("=", 1)[0].lstrip("-") == "overlay"]
    if inject_agent and (overlay_flags or "-overlay" in os.environ.get("GOFLAGS", "")):
        raise UsageError(
            "service.build_flags or GOFLAGS has -overlay, and go build takes only one; "
            "set service.inject_agent: false to build with your own overlay"
        )
    root = module_root(package_dir)
    agent = agent_source()
    extra = [go.version, go.goos, go.goarch, str(package_dir.relative_to(root)), *build_flags]
    extra.append(hashlib.sha256(agent.read_bytes()).hexdigest() if inject_agent else "no-agent")
    experiment = goexperiment(go) if inject_agent else None
    extra += [f"{k}={os.environ.get(k, '')}" for k in ("CGO_ENABLED", "GOFLAGS", "GOEXPERIMENT")]
    extra.append(f"experiment={experiment or go.goexperiment}")
    digest = tree_hash(root, extra)
    target = cache_dir() / "bin" / f"{package_dir.name}-{digest}"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix=build_dir_prefix()) as tmp, held_dir(tmp):
        build_dir = package_dir
        if inject_agent and _in_module_cache(root, go):
            # Go refuses overlays beneath GOMODCACHE: build a copy; the cache stays untouched.
            build_dir = writable_copy(root, Path(tmp) / "module") / package_dir.relative_to(root)
        cmd = [go.path, "build", "-o", str(Path(tmp) / "service")]
        if inject_agent:
            overlay = Path(tmp) / "overlay.json"
            overlay.write_text(
                json.dumps({"Replace": {str(build_dir / AGENT_FILE_NAME): str(agent)}})
            )
            cmd += ["-overlay", str(overlay)]
        cmd += [*build_flags, "."]
        env = {**os.environ, "GOEXPERIMENT": experiment} if experiment else None
        try:
            _go_build(cmd, build_dir, f"build of {package_dir}", env, Path(tmp))
        except BuildError as e:
            name = not_main_package(e.details)
            if name is None:
                raise
            raise UsageError(
                f"{package_dir}: not a main package (package {name})", details=e.details
            ) from None
        install_file(Path(tmp) / "service", target)
    return target


def _in_module_cache(root: Path, go: GoToolchain) -> bool:
    if not go.gomodcache:
        return False
    return root.resolve().is_relative_to(Path(go.gomodcache).resolve())


def writable_copy(root: Path, dest: Path) -> Path:
    """Copy a module (read-only in the module cache) to dest, writable so it can be removed."""
    shutil.copytree(
        root, dest, copy_function=shutil.copyfile, ignore=shutil.ignore_patterns(".git")
    )
    for dirpath, _, _ in os.walk(dest):
        os.chmod(dirpath, 0o755)
    return dest


def build_loadgen(go: GoToolchain) -> Path:
    """Build the bundled load generator on first use, cached by source hash and Go version."""
    src = loadgen_source_dir()
    digest = tree_hash(src, [go.version, go.goos, go.goarch])
    target = cache_dir() / "bin" / f"loadgen-{digest}"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix=build_dir_prefix()) as tmp, held_dir(tmp):
        # Build from a copy: the installed package directory may be read-only.
        work = Path(tmp) / "loadgen"
        shutil.copytree(src, work, ignore=shutil.ignore_patterns("*_test.go"))
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOWORK": "off", "GO111MODULE": "on"}
        _go_build(
            [go.path, "build", "-o", str(Path(tmp) / "loadgen.bin"), "."],
            work,
            "build of the bundled load generator",
            env,
            Path(tmp),
        )
        install_file(Path(tmp) / "loadgen.bin", target)
    return target


def _go_build(cmd: list[str], cwd: Path, what: str, env: dict[str, str] | None, tmp: Path) -> None:
    """Run go build under the process holder, its work files in `tmp` (GOTMPDIR): however
    leakgate ends, neither the compiler nor go's temporary files outlive the build directory."""
    full_env = {**(env if env is not None else os.environ), "GOTMPDIR": str(tmp)}
    try:
        proc = spawn(
            cmd,
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cpus=None,
        )
    except OSError as e:
        raise BuildError(f"{what}: cannot run go: {e}") from None
    try:
        out, err = proc.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what} took longer than {BUILD_TIMEOUT:.0f}s") from None
    finally:
        stop_group(proc, 1.0)  # the compiler too, when interrupted or timed out
    if proc.returncode != 0:
        output = (err + out).decode("utf-8", "replace").strip()
        first = build_headline(output) or f"go build exited with {proc.returncode}"
        raise BuildError(f"{what} failed: {first}", details=output)


def build_headline(output: str) -> str:
    """The line of go build's output that says why it failed: not a `# package` header, nor
    go's progress lines ("go: downloading ...")."""
    for line in output.splitlines():
        if line.strip() and not line.startswith(("#", *_PROGRESS)):
            return line
    return ""
