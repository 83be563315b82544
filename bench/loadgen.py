#!/usr/bin/env python3
"""Figures for the bundled load generator: its CPU cost against wrk's, the cost of leakgate's
probes to a CPU-bound service, its open-loop rate accuracy and its latency overhead.

Each process runs on its own CPUs: the service on the first half (GOMAXPROCS to match), the
load tool on the other half (on a 2-core machine, one each). Every figure is printed with the
command lines that produced it.

1. Generator efficiency, CPU per request: the generator's ÷ wrk's (target <= 2.0). Both run
   closed loop with the same connections against a tiny stdlib Go server that the bench writes
   and builds (one handler writing "ok"), so the load tool, not the service, is where the work
   is. Not the sample: its 10 ms stock lookup caps every tool at the same rate (bundled ÷ wrk
   throughput read 0.998 whatever the generator cost); with STOCK_LATENCY=0s it is CPU-bound in
   its own handlers; and its /healthz goes through the sample's mux and JSON encoding, which
   change with the sample. A tool's CPU is its own user + system time from the rusage of the
   child when it is reaped (os.wait4, microsecond resolution) divided by the requests it
   reports. The yardstick is wrk without a script (one URL, as wrk is usually run), so the
   figure does not hang on leakgate's Lua script, which runs Lua for every request and
   response; wrk with that script (load.tool: wrk) is printed as "wrk+script" for information.
   wrk has no open loop, so the two cannot be given one offered rate; CPU per request depends
   little on the rate each reached, so the comparison holds when one of them is held back by
   the server (each round prints every process's CPU use, to show which). Throughputs are for
   information, as is the generator's CPU per request in open loop at --rate, which is how
   leakgate runs the measure window.
2. Probe cost: closed-loop throughput of the agent-injected sample with STOCK_LATENCY=0s with
   leakgate's sampler running at the default interval (the runtime source chosen as a run
   chooses it, measure.runtime_source) ÷ without (the same process, no sampler), in
   alternating rounds, without then with (ABAB); the median of the round pairs and their range
   (target >= 0.98). The ratio means something only where the service's CPU is the bottleneck,
   so every round prints the service's CPU seconds ÷ wall seconds (/proc/PID/stat), and the
   figure is reached only when every round is >= 0.9. Also printed: the service CPU one probe
   sample costs, read back to back on the idle service, and what that predicts.
3. Kept from before, labelled: open-loop rate accuracy on the sample as shipped (the scenario,
   connections and rate share of its leakgate.yml; the rate offered is that share of a
   closed-loop capacity probe, as rate: auto does; target: every round within 1%), and the
   generator's latency overhead against the tiny server with one connection, closed loop
   (p50 <= 100 µs; wrk's, without a script, printed beside it). Dropped: bundled ÷ wrk
   throughput against the sample, which measured the sample's sleep.

Each run appends one JSON line (figures, rounds, command lines, load average, and the code
version as bench/accuracy.py computes it) to --log, by default bench/results/loadgen.jsonl; a
--quick run logs only where --log says. Exit 0 when every figure is reached, 1 when one is
not, leakgate's exit code on an error.

    python bench/loadgen.py [--rounds 5] [--seconds 5] [--connections 16] [--rate 5000]
                            [--log FILE | --no-log] [--quick]
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from accuracy import code_version  # noqa: E402

from leakgate.build import GoToolchain, build_loadgen, build_service, find_go  # noqa: E402
from leakgate.config import ProbeConfig, RequestSpec, load_config  # noqa: E402
from leakgate.errors import LeakgateError, LoadError  # noqa: E402
from leakgate.load import LoadPlan  # noqa: E402
from leakgate.load.builtin import LoadProcess, write_scenario  # noqa: E402
from leakgate.load.wrk import WrkProcess, find_wrk  # noqa: E402
from leakgate.measure import runtime_source  # noqa: E402
from leakgate.probes import (  # noqa: E402
    AGENT_TOKEN_ENV,
    AgentSource,
    RuntimeSource,
    Sampler,
    new_agent_token,
)
from leakgate.procs import kill_all, spawn, stop_group  # noqa: E402
from leakgate.runner import split_cpus  # noqa: E402
from leakgate.service import Service  # noqa: E402

SAMPLE = REPO / "sample-go-service"
LOG = REPO / "bench" / "results" / "loadgen.jsonl"
SATURATED = 0.9  # service CPU seconds per wall second for a probe-cost round to count
TRIVIAL = """\
package main

import (
\t"net/http"
\t"os"
)

func main() {
\thttp.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
\t_ = http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil)
}
"""
# wrk's summary: "  123456 requests in 2.00s, 9.8MB read" and, with --latency, "     50%   75.00us"
WRK_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)\b", re.M)
WRK_P50 = re.compile(r"^\s*50(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\b", re.M)
WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


class PlainWrk:
    """wrk without a script, on one URL, as wrk is usually benchmarked: the yardstick, which
    leakgate's Lua script (load.tool: wrk, a Lua call per request and response) is not part of.
    Its summary is text; the request count and p50 are read from it."""

    def __init__(
        self, wrk: str, url: str, seconds: float, connections: int, cpus: Sequence[int] | None
    ) -> None:
        self.duration = max(1, math.ceil(seconds - 1e-9))  # wrk runs whole seconds
        threads = max(1, min(connections, len(cpus) if cpus else 1))
        self.argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{self.duration}s"]
        self.argv += ["--timeout", "10s", "--latency", url]
        self.deadline = self.duration + 20.0
        self.cpus = cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.text = ""

    def start(self) -> None:
        self.proc = spawn(
            self.argv,
            env={"PATH": "/usr/bin:/bin"},
            cwd=None,
            stdout=subprocess.PIPE,  # a few hundred bytes: the pipe never fills
            stderr=subprocess.STDOUT,
            cpus=self.cpus,
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 2.0)  # first: once wrk is gone the read below ends
            if self.proc.stdout is not None:
                self.text = self.proc.stdout.read(64 * 1024).decode("utf-8", "replace")
                self.proc.stdout.close()

    def result(self) -> tuple[int, float, float | None]:
        """(requests, seconds, p50 in seconds) from wrk's summary; LoadError if it has none."""
        rc = self.proc.returncode if self.proc else None
        counted = WRK_REQUESTS.search(self.text)
        if rc != 0 or counted is None or "Non-2xx" in self.text:
            raise LoadError(f"wrk (no script) exited with {rc}: {self.text[-300:]!r}")
        p50 = WRK_P50.search(self.text)
        return (
            int(counted[1]),
            float(counted[2]) * WRK_UNITS[counted[3]],
            float(p50[1]) * WRK_UNITS[p50[2]] if p50 else None,
        )


Driver = LoadProcess | WrkProcess | PlainWrk


@dataclass(frozen=True, slots=True)
class ToolRun:
    """One load tool run: what it reported and what it and the service spent on it."""

    tool: str  # generator, wrk (no script) or wrk+script (leakgate's Lua script)
    mode: str  # closed or open loop
    requests: int  # as the tool counts them
    rate: float  # requests per second of its own window
    p50_s: float | None  # its median latency
    cpu_s: float  # the tool's own user + system time (rusage at reaping)
    wall_s: float  # start to reaping
    service_cpu_s: float  # the service's CPU time over the same span (/proc/PID/stat)
    samples: int = 0  # runtime samples the sampler took, with probes

    @property
    def us_per_request(self) -> float:
        return self.cpu_s / max(1, self.requests) * 1e6

    @property
    def tool_busy(self) -> float:
        return self.cpu_s / self.wall_s

    @property
    def service_busy(self) -> float:
        return self.service_cpu_s / self.wall_s

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "mode": self.mode,
            "requests": self.requests,
            "rate": round(self.rate, 1),
            "cpu_us_per_request": round(self.us_per_request, 3),
            "tool_busy": round(self.tool_busy, 4),
            "service_busy": round(self.service_busy, 4),
            "samples": self.samples,
        }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_line(argv: Sequence[str], env: Mapping[str, str], cpus: Sequence[int] | None) -> str:
    shown = [f"{k}={v}" for k, v in sorted(env.items()) if k in ("GOMAXPROCS", "STOCK_LATENCY")]
    pin = ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []
    return "$ " + shlex.join([*shown, *pin, *argv])


def spread(values: Sequence[float], fmt: str) -> str:
    if len(values) < 2:
        return f"n={len(values)}, no spread"
    return f"n={len(values)}, range {min(values):{fmt}}–{max(values):{fmt}}"


class Bench:
    def __init__(self, opts: argparse.Namespace, go: GoToolchain, tmp: Path) -> None:
        self.opts = opts
        self.go = go
        self.tmp = tmp
        self.loadgen = build_loadgen(go)
        self.wrk = find_wrk()
        self.service_cpus, self.load_cpus = split_cpus(True)
        self.figures: dict[str, dict[str, Any]] = {}
        self.rounds: dict[str, list[dict[str, Any]]] = {}
        self.commands: dict[str, list[str]] = {}
        self._shown: set[tuple[str, tuple[str, ...]]] = set()

    # -- processes -------------------------------------------------------------------------

    def service(self, binary: Path, name: str, agent: bool, env: Mapping[str, str]) -> Service:
        svc = Service(
            binary,
            args=(),
            env={"PATH": "/usr/bin:/bin", AGENT_TOKEN_ENV: new_agent_token(), **env},
            cwd=self.tmp,
            log_path=self.tmp / f"{name}.log",
            cpus=self.service_cpus,
            gomaxprocs=len(self.service_cpus or []) or None,
            agent=agent,
            stop_timeout=5.0,
        )
        svc.start()
        return svc

    def driver(
        self,
        tool: str,
        svc: Service,
        scenario: Path,
        seconds: float,
        rate: float,
        connections: int,
    ) -> Driver:
        plan = LoadPlan(
            target=svc.base_url,
            duration=seconds,
            rate=rate,
            timeout=10.0,
            out_path=scenario.with_name(f"{tool}-{rate:g}-{connections}.out"),
            cpus=self.load_cpus,
        )
        if tool == "wrk":
            return PlainWrk(self.wrk, svc.base_url + "/", seconds, connections, self.load_cpus)
        if tool == "wrk+script":
            return WrkProcess(plan, binary=self.wrk, scenario=scenario, connections=connections)
        return LoadProcess(plan, binary=self.loadgen, scenario=scenario, connections=connections)

    def run(
        self, figure: str, proc: Driver, svc: Service, sampler: Sampler | None = None
    ) -> ToolRun:
        """Run one load tool to its end and read its rusage as it is reaped."""
        tool = {PlainWrk: "wrk", WrkProcess: "wrk+script"}.get(type(proc), "generator")
        env = {"GOMAXPROCS": str(len(self.load_cpus or []))} if tool == "generator" else {}
        # the script's last argument is a fresh seed: the same command otherwise, shown once
        key = tuple(proc.argv[:-1] if tool == "wrk+script" else proc.argv)
        self.note_command(figure, command_line(proc.argv, env, self.load_cpus), key)
        pid = svc.pid or 0
        service_before, t0 = cpu_seconds(pid), time.monotonic()
        proc.start()
        if sampler is not None:
            sampler.start()  # after the fork, as measure.drive does
        try:
            popen = proc.proc
            assert popen is not None
            while True:
                reaped, status, usage = os.wait4(popen.pid, os.WNOHANG)
                if reaped:
                    break
                if time.monotonic() - t0 > proc.deadline:
                    raise LoadError(f"{tool} did not finish within {proc.deadline:.0f}s")
                if svc.exited() is not None:
                    raise LoadError(f"the service ended during the run: {svc.log_tail()}")
                time.sleep(0.02)
            wall = time.monotonic() - t0
            service_cpu = cpu_seconds(pid) - service_before
            popen.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        finally:
            if sampler is not None:
                sampler.stop()
            proc.stop()
        if isinstance(proc, PlainWrk):
            requests, seconds, p50 = proc.result()
            mode, rate = "closed", requests / seconds
        else:
            result = proc.result()
            requests, rate, mode = result.requests, result.achieved_rate, result.mode
            p50 = result.latency.percentile(50)
        return ToolRun(
            tool=tool,
            mode=mode,
            requests=requests,
            rate=rate,
            p50_s=p50,
            cpu_s=usage.ru_utime + usage.ru_stime,
            wall_s=wall,
            service_cpu_s=service_cpu,
            samples=len(sampler.goroutines) if sampler is not None else 0,
        )

    def note_command(self, figure: str, line: str, key: tuple[str, ...] = ()) -> None:
        if (figure, key or (line,)) in self._shown:
            return
        self._shown.add((figure, key or (line,)))
        self.commands.setdefault(figure, []).append(line)
        print(f"  {line}", flush=True)

    def start_figure(self, figure: str, title: str, svc: Service) -> None:
        print(f"\n{title}", flush=True)
        self.note_command(figure, command_line([str(svc.binary)], svc.env, self.service_cpus))

    def record(
        self, name: str, value: float, target: str, reached: bool | None, **extra: Any
    ) -> None:
        self.figures[name] = {
            "value": round(value, 4),
            "target": target,
            "reached": reached,
            **extra,
        }

    # -- 1. generator efficiency; 3. kept: its latency overhead --------------------------------

    def efficiency(self) -> None:
        opts = self.opts
        src = self.tmp / "trivial"
        src.mkdir()
        (src / "go.mod").write_text("module bench.local/trivial\n\ngo 1.21\n")
        (src / "main.go").write_text(TRIVIAL)
        trivial = build_service(src, (), False, self.go)
        scenario = self.tmp / "trivial-scenario.json"
        write_scenario([RequestSpec(path="/")], scenario)
        with self.service(trivial, "trivial", False, {}) as svc:
            svc.wait_ready("/", 20.0)
            self.start_figure(
                "efficiency",
                f"1. Generator efficiency: CPU per request, closed loop, {opts.connections} "
                f"connections, {opts.seconds:g}s runs, against a tiny stdlib server:",
                svc,
            )
            warm = self.driver("generator", svc, scenario, opts.warmup, 0, opts.connections)
            self.run("efficiency", warm, svc)
            tools = ["generator", "wrk", "wrk+script"]
            rows = []
            for r in range(opts.rounds):
                order = tools[r % 3 :] + tools[: r % 3]  # no tool always first
                row = {
                    tool: self.run(
                        "efficiency",
                        self.driver(tool, svc, scenario, opts.seconds, 0, opts.connections),
                        svc,
                    )
                    for tool in order
                }
                row["open"] = self.run(
                    "efficiency",
                    self.driver(
                        "generator", svc, scenario, opts.seconds, opts.rate, opts.connections
                    ),
                    svc,
                )
                rows.append(row)
                ratio = row["generator"].us_per_request / row["wrk"].us_per_request
                print(f"  round {r + 1}: generator ÷ wrk {ratio:.2f}", flush=True)
                for name in (*tools, "open"):
                    run = row[name]
                    label = (
                        f"generator open loop at {opts.rate:,.0f} req/s" if name == "open" else name
                    )
                    print(
                        f"    {label:>34}: {run.us_per_request:6.2f} µs/req, {run.rate:8,.0f} "
                        f"req/s; CPU: its {run.tool_busy:4.0%}, service {run.service_busy:4.0%}"
                    )
        self.rounds["efficiency"] = [{k: v.to_json() for k, v in row.items()} for row in rows]

        def median(name: str, of: Callable[[ToolRun], float]) -> float:
            return statistics.median(of(row[name]) for row in rows)

        us = {name: median(name, lambda run: run.us_per_request) for name in (*tools, "open")}
        rates = {name: median(name, lambda run: run.rate) for name in (*tools, "open")}
        ratios = [row["generator"].us_per_request / row["wrk"].us_per_request for row in rows]
        ratio = us["generator"] / us["wrk"]
        reached = ratio <= 2.0
        print(
            f"generator CPU per request {us['generator']:.2f} µs, wrk (no script) "
            f"{us['wrk']:.2f} µs (medians): generator ÷ wrk {ratio:.2f} ({spread(ratios, '.2f')}) "
            f"(target <= 2.0): {'reached' if reached else 'NOT reached'}"
        )
        print(
            f"  for information: wrk with leakgate's Lua script {us['wrk+script']:.2f} µs/req; "
            f"closed-loop throughput generator {rates['generator']:,.0f} req/s, wrk "
            f"{rates['wrk']:,.0f}, wrk+script {rates['wrk+script']:,.0f}; generator in open loop "
            f"at {opts.rate:,.0f} req/s: {us['open']:.2f} µs/req, achieved "
            f"{rates['open'] / opts.rate:.4f} of the rate"
        )
        self.record(
            "cpu_per_request_ratio",
            ratio,
            "<= 2.0",
            reached,
            us_per_request={k: round(v, 3) for k, v in us.items()},
            rates={k: round(v) for k, v in rates.items()},
        )
        self.latency(trivial, scenario)

    def latency(self, trivial: Path, scenario: Path) -> None:
        opts = self.opts
        with self.service(trivial, "trivial-latency", False, {}) as svc:
            svc.wait_ready("/", 20.0)
            self.start_figure(
                "latency",
                "Kept: generator latency overhead, tiny server, 1 connection closed loop (each "
                "latency is one round trip through the tool, loopback and the handler):",
                svc,
            )
            rows = []
            for r in range(opts.rounds):
                row = {
                    name: (run.p50_s or 0.0) * 1e6
                    for name, run in (
                        ("generator", self.latency_run(svc, scenario, "generator", 0, 1)),
                        ("wrk", self.latency_run(svc, scenario, "wrk", 0, 1)),
                        # Open loop: both processes sleep between requests, so this adds the
                        # machine's wake-up latency to the round trip.
                        ("open", self.latency_run(svc, scenario, "generator", 1000.0, 16)),
                    )
                }
                rows.append(row)
                print(
                    f"  round {r + 1}: p50 generator {row['generator']:.0f} µs, "
                    f"wrk {row['wrk']:.0f} µs, generator open loop at 1,000 req/s "
                    f"(16 connections) {row['open']:.0f} µs"
                )
        self.rounds["latency_p50_us"] = [{k: round(v, 1) for k, v in row.items()} for row in rows]
        p50 = statistics.median(row["generator"] for row in rows)
        wrk_p50 = statistics.median(row["wrk"] for row in rows)
        reached = p50 <= 100
        print(
            f"generator p50 {p50:.0f} µs (wrk {wrk_p50:.0f} µs, ratio {p50 / wrk_p50:.2f}) "
            f"(target <= 100 µs): {'reached' if reached else 'NOT reached'}"
        )
        self.record("latency_p50_us", p50, "<= 100", reached, wrk_p50_us=round(wrk_p50, 1))

    def latency_run(
        self, svc: Service, scenario: Path, tool: str, rate: float, connections: int
    ) -> ToolRun:
        proc = self.driver(tool, svc, scenario, self.opts.seconds, rate, connections)
        return self.run("latency", proc, svc)

    # -- 2. probe cost on a CPU-bound service ----------------------------------------------

    def probe_cost(self, sample: Path) -> None:
        opts = self.opts
        cfg = load_config(SAMPLE / "leakgate.yml")
        probes = ProbeConfig()  # leakgate's defaults, as a run without a probes: section
        connections = cfg.load.connections
        scenario = self.tmp / "sample-scenario.json"
        write_scenario(cfg.load.requests, scenario)
        with self.service(sample, "sample-cpu", True, {"STOCK_LATENCY": "0s"}) as svc:
            svc.wait_ready(cfg.service.ready_path, 20.0)
            source = runtime_source(probes, True, svc, None)
            self.start_figure(
                "probe_cost",
                f"2. Probe cost: sample (agent build, STOCK_LATENCY=0s), closed loop, "
                f"{connections} connections (its leakgate.yml scenario), {opts.seconds:g}s "
                f"rounds without / with the {source.name} sampler every {probes.interval:g}s:",
                svc,
            )
            self.run(
                "probe_cost",
                self.driver("generator", svc, scenario, opts.warmup, 0, connections),
                svc,
            )
            runs: list[ToolRun] = []
            for i in range(2 * opts.rounds):
                sampler = Sampler(source, svc.pid or 0, probes.interval) if i % 2 else None
                run = self.run(
                    "probe_cost",
                    self.driver("generator", svc, scenario, opts.seconds, 0, connections),
                    svc,
                    sampler,
                )
                runs.append(run)
                errors = sampler.errors if sampler is not None else 0
                print(
                    f"  round {i // 2 + 1} {'with   ' if sampler else 'without'}: "
                    f"{run.rate:,.0f} req/s, service CPU {run.service_busy:.2f} s/s"
                    + (f", {run.samples} samples, {errors} errors" if sampler else ""),
                    flush=True,
                )
            per_sample = self.probe_sample_cpu(source, svc.pid or 0)
        self.rounds["probe_cost"] = [run.to_json() for run in runs]
        without, with_probes = runs[0::2], runs[1::2]
        ratios = [b.rate / a.rate for a, b in zip(without, with_probes, strict=True)]
        ratio = statistics.median(ratios)
        busiest = min(run.service_busy for run in runs)
        bound = busiest >= SATURATED
        reached = bound and ratio >= 0.98
        print(
            f"service CPU per probe sample, idle service, back to back: {per_sample * 1e6:.0f} µs, "
            f"i.e. {per_sample / probes.interval:.3%} of one core at one sample per "
            f"{probes.interval:g}s (what the ratio below should lose)"
        )
        print(
            f"throughput with probes ÷ without, median of {len(ratios)} pairs: {ratio:.3f} "
            f"({spread(ratios, '.3f')}) (target >= 0.98); service CPU per wall second, "
            f"lowest round: {busiest:.2f} (>= {SATURATED} needed): "
            + (
                ("reached" if reached else "NOT reached")
                if bound
                else "NOT MEASURED: the service was not CPU-bound, so the ratio says nothing "
                "about the probes' cost"
            )
        )
        self.record(
            "probe_throughput_ratio",
            ratio,
            ">= 0.98 with service CPU >= 0.9 s/s",
            reached,
            ratios=[round(x, 4) for x in ratios],
            service_busy_min=round(busiest, 4),
            cpu_bound=bound,
            probe_sample_cpu_us=round(per_sample * 1e6, 1),
            interval_s=probes.interval,
            source=source.name,
        )

    def probe_sample_cpu(self, source: RuntimeSource, pid: int) -> float:
        """Service CPU seconds per runtime sample, read back to back on the idle service: from
        the agent's getrusage where there is one (/proc counts 10 ms ticks)."""
        if isinstance(source, AgentSource):

            def used() -> float:
                return source.counters().cpu_seconds or 0.0
        else:

            def used() -> float:
                return cpu_seconds(pid)

        n: int = self.opts.probe_samples
        before = used()
        for _ in range(n):
            source.sample()
        return (used() - before) / n

    # -- 3. kept: open-loop rate accuracy on the sample as shipped ---------------------------

    def rate_accuracy(self, sample: Path) -> None:
        opts = self.opts
        cfg = load_config(SAMPLE / "leakgate.yml")
        connections = cfg.load.connections
        scenario = self.tmp / "sample-scenario.json"
        write_scenario(cfg.load.requests, scenario)
        with self.service(sample, "sample", True, {}) as svc:
            svc.wait_ready(cfg.service.ready_path, 20.0)
            self.start_figure(
                "rate_accuracy",
                f"Kept: open-loop rate accuracy, sample as shipped, {connections} connections, "
                f"rate: auto's {cfg.load.rate_share:.0%} of a closed-loop capacity probe:",
                svc,
            )
            capacity = self.run(
                "rate_accuracy",
                self.driver("generator", svc, scenario, opts.seconds, 0, connections),
                svc,
            ).rate
            target = max(1.0, capacity * cfg.load.rate_share)
            print(f"  capacity {capacity:,.0f} req/s closed loop; offering {target:,.0f} req/s")
            achieved = []
            for r in range(opts.rounds):
                run = self.run(
                    "rate_accuracy",
                    self.driver("generator", svc, scenario, opts.seconds, target, connections),
                    svc,
                )
                achieved.append(run.rate)
                print(
                    f"  round {r + 1}: achieved {achieved[-1]:,.0f} ({achieved[-1] / target:.4f})"
                )
        self.rounds["rate_accuracy"] = [
            {"target": round(target, 1), "achieved": round(a, 1)} for a in achieved
        ]
        worst = max(abs(a - target) / target for a in achieved)
        reached = worst <= 0.01
        print(
            f"open-loop achieved ÷ offered, worst round: error {worst:.3%} (target <= 1%): "
            f"{'reached' if reached else 'NOT reached'}"
        )
        self.record("open_loop_rate_error", worst, "<= 0.01", reached, capacity=round(capacity))


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    return (
        (proc.stdout or proc.stderr).splitlines()[0].strip()
        if (proc.stdout or proc.stderr)
        else "?"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=16, help="figure 1's (default 16)")
    parser.add_argument("--rate", type=float, default=5000.0, help="figure 1's open loop rate")
    parser.add_argument("--log", type=Path, help=f"append the run's JSON line here ({LOG})")
    parser.add_argument("--no-log", action="store_true", help="append no JSON line")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 2 rounds of 2 s, logged only to --log"
    )
    opts = parser.parse_args(argv)
    opts.warmup = 2.0
    opts.probe_samples = 200
    if opts.quick:
        opts.rounds, opts.seconds, opts.warmup, opts.probe_samples = 2, 2.0, 1.0, 50
    if opts.rounds < 1 or opts.seconds < 1 or opts.connections < 1 or opts.rate <= 0:
        parser.error("--rounds, --seconds (>= 1), --connections and --rate must be positive")
    if opts.log is None and not opts.quick and not opts.no_log:
        opts.log = LOG
    return opts


def measure(opts: argparse.Namespace, argv: Sequence[str]) -> int:
    version = code_version()
    go = find_go()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="leakgate-bench-loadgen-") as tmp_name:
        bench = Bench(opts, go, Path(tmp_name))
        if not bench.service_cpus or not bench.load_cpus:
            print("needs 2 CPUs or more, to give the service and the load tool their own")
            return 2
        tools = f"{go.version}, {wrk_version(bench.wrk)}"
        print(f"$ {shlex.join(['python', 'bench/loadgen.py', *argv])}")
        print(
            f"code version {version}; {tools}; service on CPUs {bench.service_cpus}, load tool "
            f"on {bench.load_cpus}; {opts.rounds} rounds of {opts.seconds:g}s; load average "
            f"{load_before:.2f}"
        )
        bench.efficiency()
        sample = build_service(SAMPLE, (), True, go)
        bench.probe_cost(sample)
        bench.rate_accuracy(sample)
    reached = all(f["reached"] for f in bench.figures.values())
    print(f"\nall figures reached: {reached}")
    if opts.log is not None:
        entry = {
            "schema_version": 1,
            "version": version,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": shlex.join(["python", "bench/loadgen.py", *argv]),
            "quick": opts.quick,
            "settings": {
                "rounds": opts.rounds,
                "seconds": opts.seconds,
                "connections": opts.connections,
                "rate": opts.rate,
            },
            "tools": tools,
            "cpus": {"service": bench.service_cpus, "load": bench.load_cpus},
            "loadavg_before": round(load_before, 2),
            "loadavg_after": round(os.getloadavg()[0], 2),
            "figures": bench.figures,
            "rounds": bench.rounds,
            "commands": bench.commands,
            "reached": reached,
        }
        opts.log.parent.mkdir(parents=True, exist_ok=True)
        with opts.log.open("a") as log:
            log.write(json.dumps(entry) + "\n")
        print(f"logged to {opts.log}")
    return 0 if reached else 1


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: each tool and service is stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    atexit.register(kill_all)  # whatever a crash left running (children also die with us)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return measure(opts, args)
    except LeakgateError as e:
        print(f"{e.kind}: {e.message}", file=sys.stderr)
        if e.details:
            print(e.details, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
