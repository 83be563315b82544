"""The environment a run is recorded with, so a baseline from another machine is flagged, and
the config as the record and every report show it: the service's environment values redacted."""

from __future__ import annotations

import dataclasses
import os
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leakgate import __version__
from leakgate.build import GoToolchain, module_path
from leakgate.config import Config
from leakgate.model import Environment

# What run.json, the baseline and the reports show for each value of service.env and --env:
# CI passes secrets that way (`--env API_KEY=${{ secrets.KEY }}`) and publishes the reports as
# artifacts. The names stay, so a reader still sees what was set.
REDACTED = "<redacted>"


def recorded_config(cfg: Config) -> Config:
    """`cfg` as it is stored and reported: the service's environment values redacted, unless
    the run asked to keep them (`--keep-env-values`, `report.keep_env_values: true`)."""
    if cfg.keep_env_values or not cfg.service.env:
        return cfg
    env = dict.fromkeys(cfg.service.env, REDACTED)
    return dataclasses.replace(cfg, service=dataclasses.replace(cfg.service, env=env))


def redacted_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run's config (as run.json holds it) with the service's environment values
    redacted: `leakgate report` re-renders a run.json written before leakgate redacted them, or
    with --keep-env-values, without them unless it is given --keep-env-values itself."""
    plain = dict(config)
    service = plain.get("service")
    if isinstance(service, Mapping) and isinstance(service.get("env"), Mapping):
        plain["service"] = {**service, "env": dict.fromkeys(service["env"], REDACTED)}
    return plain


def describe_environment(go: GoToolchain, package_dir: Path) -> Environment:
    """What a baseline must match to be comparable: toolchain, CPU, leakgate, revision."""
    rev, dirty = _git_revision(package_dir)
    return Environment(
        go_module=module_path(package_dir),
        leakgate_version=__version__,
        python_version=platform.python_version(),
        go_version=go.version,
        goos=go.goos,
        goarch=go.goarch,
        num_cpu=os.cpu_count(),
        cpu_model=_cpu_model(),
        hostname=socket.gethostname(),
        git_revision=rev,
        git_dirty=dirty,
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_revision(path: Path) -> tuple[str, bool]:
    try:
        rev = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        if rev.returncode != 0:
            return "", False
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
        return rev.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return "", False
