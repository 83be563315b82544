"""leakgate.yml -> frozen dataclasses, with errors that name file:line:col and the key path.

The YAML is composed into nodes (no object construction beyond safe scalars) so every value keeps
its position, then walked against the schema (configschema.py) into the dataclasses here.
Nothing is started before this succeeds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from leakgate.errors import ConfigError, UsageError
from leakgate.metrics import DEFAULT_THRESHOLDS, METRICS
from leakgate.metrics import Threshold as Threshold  # re-exported: a config holds them
from leakgate.units import parse_duration
from leakgate.yamlnodes import compose, printable

CONFIG_NAMES = ("leakgate.yml", "leakgate.yaml")
MAX_CONFIG_BYTES = 1024 * 1024

# Four trials a side is the fewest with which a one-sided Mann-Whitney U test can reach p < 0.05
# (1/70); five leaves room for one lost trial.
DEFAULT_BASELINE_TRIALS = 5


@dataclass(frozen=True, slots=True)
class RequestSpec:
    path: str
    method: str = "GET"
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    weight: float = 1.0
    expect_status: int = 0  # 0: any 2xx or 3xx


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    dir: str | None = None
    build_flags: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ready_path: str = "/"
    ready_timeout: float = 30.0
    stop_timeout: float = 5.0
    inject_agent: bool = True
    # A service leakgate does not build: a binary (a path), or a command (argv, the program
    # found on PATH). Either one means no agent: probes use the service's own endpoints.
    binary: str | None = None
    command: tuple[str, ...] = ()

    @property
    def prebuilt(self) -> bool:
        return self.binary is not None or bool(self.command)


Rate = float | Literal["auto", "max"]


@dataclass(frozen=True, slots=True)
class LoadConfig:
    tool: str = "builtin"
    warmup: float = 5.0
    duration: float = 20.0
    connections: int = 16
    rate: Rate = "auto"
    rate_share: float = 0.5  # with rate: auto, the share of measured capacity to offer
    timeout: float = 10.0
    cpu_split: bool = True
    requests: tuple[RequestSpec, ...] = (RequestSpec(path="/"),)
    # tool: external: the measure phase runs `command` (argv; {target}, {duration}, {rate},
    # {results} filled in) and reads `results` (vegeta JSON lines, or leakgate/wrk results).
    command: tuple[str, ...] = ()
    results: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    interval: float = 1.0
    quiet_timeout: float = 5.0
    # auto: the injected agent, else the service's pprof + expvar; or one of those by name, or
    # the service's Prometheus /metrics (client_golang names) at metrics_path.
    source: str = "auto"
    metrics_path: str = "/metrics"
    # The agent's heap dump at each checkpoint (who holds a leak); none when the live heap is
    # over heap_dump_max: a dump stops the world while it is written.
    heap_dump: bool = True
    heap_dump_max: int = 256 * 1024 * 1024


PROBE_SOURCES = ("auto", "agent", "pprof", "prometheus")
MAX_RATE = 10_000_000  # requests per second, load.rate's limit
LOAD_TOOLS = ("builtin", "wrk", "external")

# What the load tools can run: the generator takes durations in milliseconds and keeps one
# latency snapshot per whole second of the window, wrk runs whole seconds; a window under a
# second has no snapshot and too few probe samples to show a trend. 24 h is the longest
# anyone waits for a gate. Warm-up may be 0 (none).
MAX_LOAD_SECONDS = 24 * 3600.0
_LOAD_MINIMUMS = {"warmup": 1e-3, "duration": 1.0, "timeout": 1e-3}
_MINIMUM_TEXT = {
    "warmup": "0s or at least 1ms",
    "duration": "at least 1s",
    "timeout": "at least 1ms",
}


def load_duration_problem(key: str, seconds: float, written: str) -> str | None:
    """Why `seconds` (as `written`) cannot be load.`key` (warmup, duration, timeout), or None."""
    if seconds > MAX_LOAD_SECONDS:
        return f"must be at most 24h, got {written}"
    if key == "warmup" and seconds == 0:
        return None
    if seconds < _LOAD_MINIMUMS[key]:
        return f"must be {_MINIMUM_TEXT[key]}, got {written}"
    return None


def flag_duration(flag: str, key: str, text: str | None) -> float | None:
    """A duration flag (--duration, --warmup) checked like load.`key` in the config."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise UsageError(f"{flag}: {e}") from None
    problem = load_duration_problem(key, seconds, text)
    if problem is not None:
        raise UsageError(f"{flag}: {problem}")
    return seconds


def env_problem(name: str, value: str) -> str | None:
    """Why NAME=VALUE cannot be put in the service's environment, or None."""
    if not name:
        return "an environment variable name cannot be empty"
    if "\0" in name:
        return "the name contains a NUL byte"
    if "=" in name:
        return "an environment variable name cannot contain '='"
    if "\0" in value:
        return "the value contains a NUL byte"
    return None


# RFC 9110 token characters: what a header name (and the generator's method check) accepts.
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def path_problem(path: str) -> str | None:
    """Why the generator would refuse `path` on the request line (control bytes, spaces,
    non-ASCII, '#'), or None. Checked here so the refusal names the key, before any start."""
    for c in path:
        if c <= " " or c >= "\x7f" or c == "#":
            return f"a path cannot contain {printable(c, quote=True)} (percent-encode it)"
    return None


def header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be sent: a name that is not a token, a control byte in the value
    (CR or LF would end the header and inject another), a header the body decides."""
    if not name or any(c not in _TOKEN for c in name):
        return "not a valid header name"
    if name.lower() in ("content-length", "transfer-encoding"):
        return "is set from the body; remove it"
    for c in value:
        if (c < " " and c != "\t") or c == "\x7f":
            return f"a header value cannot contain {printable(c, quote=True)}"
    return None


Design = Literal["paired", "trials"]


@dataclass(frozen=True, slots=True)
class CompareConfig:
    """How `compare` measures the two builds (see sequential.py for the paired test).

    paired: one process a side, both warm, measured in alternating `block`-second blocks and
    decided after `min_pairs` pairs, then every `look_every`, up to `max_pairs`. trials: fresh
    processes a side (`trials` of them), one value per trial, a Mann-Whitney U test.
    """

    design: Design = "paired"
    block: float = 2.0
    min_pairs: int = 8
    max_pairs: int = 28
    look_every: int = 10


# Settings added after runs were first recorded, with the value every run before them had:
# a stored record without the key is judged as it ran, not by today's default.
_BEFORE_THE_KEY: Mapping[tuple[str, str], object] = {("compare", "look_every"): 2}


def recorded_plain(plain: Mapping[str, object]) -> dict[str, object]:
    """A run record's config (plain data) with keys it predates filled as the run had them."""
    out = dict(plain)
    for (section, key), value in _BEFORE_THE_KEY.items():
        part = out.get(section)
        if isinstance(part, Mapping) and key not in part:
            out[section] = {**part, key: value}
    return out


@dataclass(frozen=True, slots=True)
class Config:
    source: str | None = None  # the file it came from, None for pure defaults
    service: ServiceConfig = field(default_factory=ServiceConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    trials: int | None = None  # None: 1 for a check on its own, 5 a side against a baseline
    confirm: int = 0  # more trials a side when a gated comparison is inconclusive
    compare: CompareConfig = field(default_factory=CompareConfig)
    fail_on_inconclusive: bool = False  # a gated `~` left after confirming fails the gate
    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    report_dir: str = ".leakgate"
    # service.env / --env values are "<redacted>" in run.json, the baseline and every report
    # unless this is true (--keep-env-values, report.keep_env_values): they are often secrets.
    keep_env_values: bool = False

    def trial_count(self, against_baseline: bool) -> int:
        if self.trials is not None:
            return self.trials
        return DEFAULT_BASELINE_TRIALS if against_baseline else 1

    def threshold(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, Threshold())


def find_config(explicit: str | None, package_dir: str | None) -> Path | None:
    """The config file to use: --config, else DIR/leakgate.yml, else ./leakgate.yml."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return path
    candidates = [Path(package_dir) if package_dir else None, Path(".")]
    for base in candidates:
        if base is None:
            continue
        for name in CONFIG_NAMES:
            if (base / name).is_file():
                return base / name
    return None


def load_config(path: Path | None) -> Config:
    if path is None:
        return Config()
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is {len(raw)} bytes, over the 1 MiB limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return parse_config(text, str(path))


def parse_config(text: str, filename: str = "leakgate.yml") -> Config:
    # Imported here: the schema builds the dataclasses above.
    from leakgate.configschema import Schema

    root = compose(text, filename)
    if root is None:
        return Config(source=filename)
    return Schema(filename, text).config(root)


def apply_overrides(
    cfg: Config,
    *,
    duration: float | None = None,
    warmup: float | None = None,
    trials: int | None = None,
    env: Mapping[str, str] | None = None,
    report_dir: str | None = None,
    design: Design | None = None,
) -> Config:
    """Command-line flags win over the file."""
    load = cfg.load
    if duration is not None:
        load = dataclasses.replace(load, duration=duration)
    if warmup is not None:
        load = dataclasses.replace(load, warmup=warmup)
    service = cfg.service
    if env:
        service = dataclasses.replace(service, env={**service.env, **env})
    compare = cfg.compare
    if design is not None:
        compare = dataclasses.replace(compare, design=design)
    return dataclasses.replace(
        cfg,
        load=load,
        service=service,
        compare=compare,
        trials=trials if trials is not None else cfg.trials,
        report_dir=report_dir if report_dir is not None else cfg.report_dir,
    )


# `check --quick`: one short trial that answers "does it leak?" in under a minute (a pre-push
# hook). Latency limits need longer, steadier trials, so quick mode keeps only the leak checks
# (and error_rate: leak figures from a service answering errors mean nothing).
QUICK_WARMUP = 2.0
QUICK_DURATION = 8.0


def quick(cfg: Config) -> Config:
    """The config for `check --quick`: one trial, short phases, leak checks only."""
    load = dataclasses.replace(
        cfg.load,
        warmup=min(cfg.load.warmup, QUICK_WARMUP),
        duration=min(cfg.load.duration, QUICK_DURATION),
    )
    thresholds = {
        name: Threshold(max=t.max, noise_floor=t.noise_floor, min_requests=t.min_requests)
        for name, t in cfg.thresholds.items()
        if name in METRICS and METRICS[name].quick and t.max is not None
    }
    return dataclasses.replace(cfg, load=load, trials=1, confirm=0, thresholds=thresholds)


def environ_without_leakgate() -> dict[str, str]:
    """The environment for child processes, minus leakgate's own control variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEAKGATE_AGENT")}
