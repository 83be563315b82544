"""leakgate.yml's schema: the YAML node tree walked section by section into config's dataclasses.

Every value keeps its node, so an error names file:line:col and the key path
(`load.requests[2].path`). config.parse_config is the way in.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml

from leakgate.config import (
    LOAD_TOOLS,
    MAX_RATE,
    PROBE_SOURCES,
    CompareConfig,
    Config,
    LoadConfig,
    ProbeConfig,
    Rate,
    RequestSpec,
    ServiceConfig,
    env_problem,
    header_problem,
    load_duration_problem,
    path_problem,
)
from leakgate.metrics import DEFAULT_THRESHOLDS, METRICS, Threshold, ThresholdKind
from leakgate.templates import parse_template
from leakgate.units import number_text, parse_duration, parse_percent, parse_size
from leakgate.yamlnodes import NodeReader, describe, printable


class Schema(NodeReader):
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
                "compare",
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
        if "compare" in top:
            cfg = dataclasses.replace(cfg, compare=self.compare(top["compare"][1]))
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

    def compare(self, node: yaml.Node) -> CompareConfig:
        m = self.mapping(
            node, "compare", ("design", "block", "min_pairs", "max_pairs", "look_every")
        )
        out = CompareConfig()
        if "design" in m:
            design = self.string(m["design"][1], "compare.design")
            if design not in ("paired", "trials"):
                raise self.error(
                    m["design"][1], "compare.design", f"must be paired or trials, got {design!r}"
                )
            out = dataclasses.replace(out, design=design)  # type: ignore[arg-type]
        if "block" in m:
            block = self.duration(m["block"][1], "compare.block", high=600.0)
            if block < 0.5:
                raise self.error(m["block"][1], "compare.block", "must be at least 0.5s")
            out = dataclasses.replace(out, block=block)
        if "min_pairs" in m:
            low = self.integer(m["min_pairs"][1], "compare.min_pairs", 2, 100)
            out = dataclasses.replace(out, min_pairs=low)
        if "max_pairs" in m:
            high = self.integer(m["max_pairs"][1], "compare.max_pairs", 2, 100)
            out = dataclasses.replace(out, max_pairs=high)
        if "look_every" in m:
            every = self.integer(m["look_every"][1], "compare.look_every", 1, 100)
            out = dataclasses.replace(out, look_every=every)
        if out.min_pairs > out.max_pairs:
            where = m.get("max_pairs", m.get("min_pairs"))
            assert where is not None
            raise self.error(
                where[1],
                "compare.max_pairs",
                f"is {out.max_pairs}, under compare.min_pairs {out.min_pairs}",
            )
        return out

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
        m = self.mapping(
            node,
            "probes",
            ("interval", "quiet_timeout", "source", "metrics_path", "heap_dump", "heap_dump_max"),
        )
        values: dict[str, Any] = {}
        if "heap_dump" in m:
            values["heap_dump"] = self.boolean(m["heap_dump"][1], "probes.heap_dump")
        if "heap_dump_max" in m:
            # a dump over heapdump.MAX_BYTES would be taken and never read
            limit = self.unit(m["heap_dump_max"][1], "probes.heap_dump_max", parse_size, 2.0**29)
            if limit < 1024 * 1024:
                raise self.error(m["heap_dump_max"][1], "probes.heap_dump_max", "must be >= 1MiB")
            values["heap_dump_max"] = int(limit)
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
