"""leakgate.yml -> frozen dataclasses, with errors that name file:line:col and the key path.

The YAML is composed into nodes (no object construction beyond safe scalars) so every value keeps
its position, then walked against the schema below. Nothing is started before this succeeds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from leakgate.errors import ConfigError, UsageError
from leakgate.metrics import DEFAULT_THRESHOLDS, METRICS, ThresholdKind
from leakgate.metrics import Threshold as Threshold  # re-exported: a config holds them
from leakgate.templates import parse_template
from leakgate.units import number_text, parse_duration, parse_percent, parse_size
from leakgate.yamlnodes import NodeReader, compose, describe, printable

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


@dataclass(frozen=True, slots=True)
class Config:
    source: str | None = None  # the file it came from, None for pure defaults
    service: ServiceConfig = field(default_factory=ServiceConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    trials: int | None = None  # None: 1 for a check on its own, 5 a side against a baseline
    confirm: int = 0  # more trials a side when a gated comparison is inconclusive
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
    root = compose(text, filename)
    if root is None:
        return Config(source=filename)
    return _Walker(filename, text).config(root)


class _Walker(NodeReader):
    """The schema: leakgate.yml's sections, read into the dataclasses above."""

    def template(self, node: yaml.Node, keypath: str, *, nul: bool = False) -> str:
        text = self.string(node, keypath, nul=nul)
        try:
            parse_template(text)
        except ValueError as e:
            raise self.error(node, keypath, str(e)) from None
        return text

    # -- sections ----------------------------------------------------------------------

    def config(self, root: yaml.Node) -> Config:
        top = self.mapping(
            root,
            "",
            (
                "service",
                "load",
                "probes",
                "trials",
                "confirm",
                "fail_on_inconclusive",
                "thresholds",
                "report",
            ),
        )
        cfg = Config(source=self.filename)
        if "service" in top:
            cfg = dataclasses.replace(cfg, service=self.service(top["service"][1]))
        if "load" in top:
            cfg = dataclasses.replace(cfg, load=self.load(top["load"][1]))
        if "probes" in top:
            cfg = dataclasses.replace(cfg, probes=self.probes(top["probes"][1]))
            if cfg.probes.source == "agent" and not cfg.service.inject_agent:
                raise self.error(
                    top["probes"][1],
                    "probes.source",
                    "is agent, but service.inject_agent is false: use pprof or prometheus",
                )
        if "trials" in top:
            cfg = dataclasses.replace(cfg, trials=self.integer(top["trials"][1], "trials", 1, 100))
        if "confirm" in top:
            confirm = self.integer(top["confirm"][1], "confirm", 0, 50)
            cfg = dataclasses.replace(cfg, confirm=confirm)
        if "fail_on_inconclusive" in top:
            strict = self.boolean(top["fail_on_inconclusive"][1], "fail_on_inconclusive")
            cfg = dataclasses.replace(cfg, fail_on_inconclusive=strict)
        if "thresholds" in top:
            cfg = dataclasses.replace(cfg, thresholds=self.thresholds(top["thresholds"][1]))
        if "report" in top:
            report = self.mapping(top["report"][1], "report", ("dir", "keep_env_values"))
            if "dir" in report:
                cfg = dataclasses.replace(
                    cfg, report_dir=self.string(report["dir"][1], "report.dir")
                )
            if "keep_env_values" in report:
                keep = self.boolean(report["keep_env_values"][1], "report.keep_env_values")
                cfg = dataclasses.replace(cfg, keep_env_values=keep)
        return cfg

    def service(self, node: yaml.Node) -> ServiceConfig:
        keys = (
            "dir",
            "build_flags",
            "args",
            "env",
            "ready_path",
            "ready_timeout",
            "stop_timeout",
            "inject_agent",
            "binary",
            "command",
        )
        m = self.mapping(node, "service", keys)
        values: dict[str, Any] = {}
        for key, (_, value) in m.items():
            kp = f"service.{key}"
            if key in ("dir",):
                values[key] = self.string(value, kp)
            elif key == "ready_path":
                path = self.string(value, kp)
                if not path.startswith("/"):
                    raise self.error(value, kp, f"must start with '/', got {path!r}")
                if (problem := path_problem(path)) is not None:
                    raise self.error(value, kp, problem)
                values[key] = path
            elif key in ("build_flags", "args"):
                values[key] = self.strings(value, kp)
            elif key == "env":
                env = {}
                for name, (name_node, v) in self.mapping(value, kp, None).items():
                    where = f"{kp}.{printable(name)}"
                    if (problem := env_problem(name, "")) is not None:
                        raise self.error(name_node, where, problem)
                    env[name] = self.string(v, where)
                values[key] = env
            elif key in ("ready_timeout", "stop_timeout"):
                values[key] = self.duration(value, kp, high=3600.0)
            elif key == "inject_agent":
                values[key] = self.boolean(value, kp)
            elif key == "binary":
                values[key] = self.string(value, kp)
            elif key == "command":
                values[key] = self.strings(value, kp)
                if not values[key]:
                    raise self.error(value, kp, "needs at least the program to run")
        if "binary" in m and "command" in m:
            raise self.error(m["command"][1], "service.command", "give binary or command, not both")
        if ("binary" in m or "command" in m) and values.get("inject_agent") is True:
            raise self.error(
                m["inject_agent"][1],
                "service.inject_agent",
                "cannot be true for a prebuilt binary: leakgate injects its agent when it builds",
            )
        if "binary" in m or "command" in m:
            values["inject_agent"] = False
        return ServiceConfig(**values)

    def load(self, node: yaml.Node) -> LoadConfig:
        keys = (
            "tool",
            "warmup",
            "duration",
            "connections",
            "rate",
            "rate_share",
            "timeout",
            "cpu_split",
            "paths",
            "requests",
            "command",
            "results",
        )
        m = self.mapping(node, "load", keys)
        values: dict[str, Any] = {}
        requests: list[RequestSpec] = []
        for key, (_, value) in m.items():
            kp = f"load.{key}"
            if key == "tool":
                tool = self.string(value, kp)
                if tool not in LOAD_TOOLS:
                    raise self.error(value, kp, f"must be builtin, wrk or external, got {tool!r}")
                values[key] = tool
            elif key in ("command", "results"):
                values[key] = self.strings(value, kp)
            elif key in ("warmup", "duration", "timeout"):
                values[key] = self.load_duration(value, key)
            elif key == "connections":
                values[key] = self.integer(value, kp, 1, 10_000)
            elif key == "rate":
                values[key] = self.rate(value, kp)
            elif key == "rate_share":
                share = self.unit(value, kp, parse_percent, 1.0)
                if share <= 0:
                    raise self.error(value, kp, f"must be above 0%, got {value.value}")
                values[key] = share
            elif key == "cpu_split":
                values[key] = self.boolean(value, kp)
            elif key == "paths":
                for i, item in enumerate(self.sequence(value, kp)):
                    requests.append(RequestSpec(path=self.request_path(item, f"{kp}[{i}]")))
            elif key == "requests":
                for i, item in enumerate(self.sequence(value, kp)):
                    requests.append(self.request(item, f"{kp}[{i}]"))
        if "paths" in m and "requests" in m:
            pass  # both forms together: paths are plain GETs of weight 1 beside the scenario
        if requests:
            values["requests"] = tuple(requests)
        if values.get("tool") == "wrk":
            if "rate" in m and values.get("rate") not in ("max", "auto"):
                raise self.error(
                    m["rate"][1], "load.rate",
                    "wrk runs a closed loop only: use rate: max (or load.tool: builtin)",
                )  # fmt: skip
            values["rate"] = "max"
        if values.get("tool") == "external" and not values.get("command"):
            raise self.error(
                m["tool"][1], "load.command", "load.tool external needs the command to run"
            )
        return LoadConfig(**values)

    def load_duration(self, node: yaml.Node, key: str) -> float:
        keypath = f"load.{key}"
        seconds = self.unit(node, keypath, parse_duration, float("inf"))
        written = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
        problem = load_duration_problem(key, seconds, written)
        if problem is not None:
            raise self.error(node, keypath, problem)
        return seconds

    def rate(self, node: yaml.Node, keypath: str) -> Rate:
        value = self.scalar(node, keypath)
        if value in ("auto", "max"):
            return str(value)  # type: ignore[return-value]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(
                node, keypath, f"expected auto, max or requests per second, got {describe(value)}"
            )
        # By range, not math.isfinite first: that raises OverflowError on an integer over
        # ~1.8e308. NaN fails both comparisons, infinity the upper one.
        if value > MAX_RATE:
            raise self.error(
                node, keypath,
                f"must be at most {MAX_RATE:,} requests per second, got {number_text(value)}",
            )  # fmt: skip
        if not (0 < value <= MAX_RATE and math.isfinite(value)):
            raise self.error(
                node, keypath, f"must be above 0 requests per second, got {number_text(value)}"
            )
        return float(value)

    def request_path(self, node: yaml.Node, keypath: str) -> str:
        path = self.template(node, keypath)
        if not path.startswith("/"):
            raise self.error(node, keypath, f"a path must start with '/', got {path!r}")
        problem = path_problem(path)
        if problem is not None:
            raise self.error(node, keypath, problem)
        return path

    def request(self, node: yaml.Node, keypath: str) -> RequestSpec:
        m = self.mapping(
            node, keypath, ("method", "path", "body", "headers", "weight", "expect_status")
        )
        if "path" not in m:
            raise self.error(node, keypath, "a request needs a path")
        values: dict[str, Any] = {"path": self.request_path(m["path"][1], f"{keypath}.path")}
        if "method" in m:
            method = self.string(m["method"][1], f"{keypath}.method").upper()
            if not method.isalpha():
                raise self.error(
                    m["method"][1], f"{keypath}.method", f"not an HTTP method: {method}"
                )
            values["method"] = method
        if "body" in m:
            # A body is bytes on the wire: NUL is data there, unlike in a path or an argv.
            values["body"] = self.template(m["body"][1], f"{keypath}.body", nul=True)
        if "headers" in m:
            hp = f"{keypath}.headers"
            headers = {}
            for k, (k_node, v) in self.mapping(m["headers"][1], hp, None).items():
                where = f"{hp}.{printable(k)}"
                text = self.template(v, where)
                problem = header_problem(k, text)
                if problem is not None:
                    raise self.error(k_node if "name" in problem else v, where, problem)
                headers[k] = text
            values["headers"] = headers
        if "weight" in m:
            weight = self.number(m["weight"][1], f"{keypath}.weight", 0.0, 1e6)
            if weight <= 0:
                raise self.error(m["weight"][1], f"{keypath}.weight", "must be above 0")
            values["weight"] = weight
        if "expect_status" in m:
            values["expect_status"] = self.integer(
                m["expect_status"][1], f"{keypath}.expect_status", 100, 599
            )
        return RequestSpec(**values)

    def probes(self, node: yaml.Node) -> ProbeConfig:
        m = self.mapping(node, "probes", ("interval", "quiet_timeout", "source", "metrics_path"))
        values: dict[str, Any] = {}
        if "source" in m:
            source = self.string(m["source"][1], "probes.source")
            if source not in PROBE_SOURCES:
                raise self.error(
                    m["source"][1],
                    "probes.source",
                    f"must be one of {', '.join(PROBE_SOURCES)}, got {source!r}",
                )
            values["source"] = source
        if "metrics_path" in m:
            path = self.string(m["metrics_path"][1], "probes.metrics_path")
            if not path.startswith("/"):
                raise self.error(m["metrics_path"][1], "probes.metrics_path", "must start with /")
            if (problem := path_problem(path)) is not None:
                raise self.error(m["metrics_path"][1], "probes.metrics_path", problem)
            values["metrics_path"] = path
        if "interval" in m:
            interval = self.duration(m["interval"][1], "probes.interval", high=60.0)
            if interval < 0.05:
                raise self.error(m["interval"][1], "probes.interval", "must be at least 50ms")
            values["interval"] = interval
        if "quiet_timeout" in m:
            values["quiet_timeout"] = self.duration(
                m["quiet_timeout"][1], "probes.quiet_timeout", 60.0
            )
        return ProbeConfig(**values)

    def thresholds(self, node: yaml.Node) -> dict[str, Threshold]:
        merged = dict(DEFAULT_THRESHOLDS)
        for metric, (_, value) in self.mapping(node, "thresholds", tuple(METRICS)).items():
            kp = f"thresholds.{metric}"
            m = self.mapping(value, kp, METRICS[metric].threshold_keys)
            current = merged.get(metric, Threshold())
            updates: dict[str, Any] = {}
            for key, (_, v) in m.items():
                if isinstance(v, yaml.ScalarNode) and v.tag == "tag:yaml.org,2002:null":
                    updates[key] = None  # explicit null switches a default off
                elif key == "max_increase":
                    updates[key] = self.unit(v, f"{kp}.{key}", parse_percent, 100.0)
                elif key == "noise_floor":
                    updates[key] = self.unit(v, f"{kp}.{key}", parse_size, float(2**40))
                elif key == "min_requests":
                    updates[key] = self.integer(v, f"{kp}.{key}", 1, 10**12)
                else:
                    updates[key] = self.metric_value(v, f"{kp}.{key}", METRICS[metric].kind)
            merged[metric] = dataclasses.replace(current, **updates)
        return merged

    def metric_value(self, node: yaml.Node, keypath: str, kind: ThresholdKind) -> float:
        if kind == "duration":
            return self.duration(node, keypath)
        if kind == "size":
            return self.unit(node, keypath, parse_size, float(2**60))
        if kind == "fraction":
            return self.unit(node, keypath, parse_percent, 1.0)
        return self.number(node, keypath, 0.0, 1e12)


def apply_overrides(
    cfg: Config,
    *,
    duration: float | None = None,
    warmup: float | None = None,
    trials: int | None = None,
    env: Mapping[str, str] | None = None,
    report_dir: str | None = None,
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
    return dataclasses.replace(
        cfg,
        load=load,
        service=service,
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
