"""The command line and leakgate.yml, made into the Config and the paths one run uses.

Everything here runs before anything is built or started: bad input is a UsageError (exit 4)
that names the flag, key or file at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from leakgate import outputs
from leakgate.config import (
    Config,
    apply_overrides,
    env_problem,
    find_config,
    flag_duration,
    load_config,
)
from leakgate.errors import UsageError
from leakgate.yamlnodes import printable


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    """--env NAME=VALUE: the name ends at the first '=' (A=B=C is A, "B=C")."""
    env = {}
    for pair in pairs:  # a message names the variable, never its value (often a secret)
        name, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(
                "--env: expected NAME=VALUE, got an argument without '=' (not shown: it may be "
                "a secret)"
            )
        if not name:
            raise UsageError("--env =...: expected NAME=VALUE, the name before '=' is empty")
        problem = env_problem(name, value)
        if problem is not None:
            raise UsageError(f"--env {printable(name, quote=True)}: {problem}")
        env[name] = value
    return env


def load(args: argparse.Namespace) -> tuple[Config, Path]:
    """The run's Config (the file, then the flags over it) and the Go package to build."""
    config_path = find_config(args.config, args.dir)
    cfg = load_config(config_path)
    if args.trials is not None and not 1 <= args.trials <= 100:
        raise UsageError(f"--trials must be between 1 and 100, got {args.trials}")
    # Checked like load.duration, the 24 h cap included.
    duration = flag_duration("--duration", "duration", args.duration)
    warmup = flag_duration("--warmup", "warmup", args.warmup)
    if args.load_results:
        if cfg.load.tool != "external":
            raise UsageError("--load-results goes with load.tool: external and a load.command")
        cfg = dataclasses.replace(
            cfg, load=dataclasses.replace(cfg.load, results=tuple(args.load_results))
        )
    if cfg.load.tool == "external" and not cfg.load.results:
        raise UsageError("load.tool external reads its results: give --load-results FILE")
    cfg = apply_overrides(
        cfg,
        duration=duration,
        warmup=warmup,
        trials=args.trials,
        env=parse_env(args.env),
        report_dir=args.out,
        design=getattr(args, "design", None),
    )
    if args.keep_env_values:
        cfg = dataclasses.replace(cfg, keep_env_values=True)
    if not getattr(args, "target", None):  # attached, nothing is run here
        cfg = resolve_prebuilt(cfg, config_path)
    if getattr(args, "target", None) or cfg.service.prebuilt:
        package = Path(".")  # attach mode and prebuilt binaries build nothing
    elif args.dir:
        package = Path(args.dir)
    elif config_path is not None and cfg.service.dir:
        package = config_path.parent / cfg.service.dir
    else:
        package = Path(".")
    if not package.is_dir():
        raise UsageError(f"{package}: no such directory (the Go main package to build)")
    return cfg, package.resolve()


def resolve_prebuilt(cfg: Config, config_path: Path | None) -> Config:
    """service.binary / service.command made absolute (relative paths are the config file's
    directory's; a bare command name is looked up on PATH) and checked to be runnable."""
    service = cfg.service
    if not service.prebuilt:
        return cfg
    base = config_path.parent if config_path is not None else Path(".")
    key = "service.binary" if service.binary is not None else "service.command"
    name = service.binary if service.binary is not None else service.command[0]
    if "/" not in name and service.binary is None:
        found = shutil.which(name)
        if found is None:
            raise UsageError(f"{key}: {name!r} is not on PATH")
        program = Path(found)
    else:
        program = (base / name).resolve()
    if not (program.is_file() and os.access(program, os.X_OK)):
        raise UsageError(f"{key}: {program} is not an executable file")
    if service.binary is not None:
        service = dataclasses.replace(service, binary=str(program))
    else:
        service = dataclasses.replace(service, command=(str(program), *service.command[1:]))
    return dataclasses.replace(cfg, service=service)


def run_outputs(args: argparse.Namespace, cfg: Config, report_dir: Path) -> outputs.Outputs:
    """What a run reads and writes, as the user named them."""
    config = Path(cfg.source) if cfg.source is not None else None  # the file load() read
    service = cfg.service
    program = service.binary or (service.command[0] if service.command else None)
    results = "--load-results" if args.load_results else "load.results"
    read = outputs.inputs(
        ("--config" if args.config else "config", config, "the config file"),
        ("--baseline", getattr(args, "baseline", None), "the baseline"),
        ("service.binary" if service.binary else "service.command", program, "the program"),
    )
    # Deleted before each trial (a stale result must not pass for this trial's), so they are
    # checked like reports: none may be an input or a report.
    deleted = outputs.inputs(*((results, path, "a load result") for path in cfg.load.results))
    given = {"--junit": args.junit, "--json": args.json, "--openmetrics": args.openmetrics}
    given["-o"] = getattr(args, "output", None)
    where = outputs.Place("--out" if args.out else "report.dir", report_dir)
    return outputs.run_outputs(where, given, read, deleted)
