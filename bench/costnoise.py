#!/usr/bin/env python3
"""Where the spread of CPU per request comes from: within one process, or between processes.

Starts the sample service (agent injected, pinned to the first CPU, GOMAXPROCS=1 as a run
does), drives it open loop at a fixed rate from the other CPU with the bundled generator in
back-to-back windows, and reads the agent's counters (getrusage user and system CPU,
/gc/heap/allocs) around each window. Repeats with fresh processes. Prints, per metric, the
coefficient of variation of consecutive windows within a process and of the process means
between processes, for each window length: what a compare needs (how few processes, how short
a window) to see +10%.

    python bench/costnoise.py [--processes 4] [--windows 4] [--seconds 5,20] [--rate 1450]
                              [--env CPU=20] [--log bench/results/costnoise.jsonl]

A process burning one core beside it (`stress-ng --cpu 1`) is the busy case: run the script
under it and say so with --busy-label.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leakgate import analysis  # noqa: E402
from leakgate.build import build_loadgen, build_service, find_go  # noqa: E402
from leakgate.config import load_config  # noqa: E402
from leakgate.load.builtin import write_scenario  # noqa: E402
from leakgate.probes import AGENT_TOKEN_ENV, AgentSource, fetch_json, new_agent_token  # noqa: E402
from leakgate.service import Service  # noqa: E402

SAMPLE = REPO / "sample-go-service"
SERVICE_CPU, LOAD_CPU = 0, 1


def counters(source: AgentSource) -> dict[str, float]:
    data = fetch_json(f"{source.base_url}/leakgate/metrics", headers=source.headers)
    return {
        "user": float(data["process_user_seconds"]),
        "system": float(data["process_system_seconds"]),
        "bytes": float(data["alloc_bytes"]),
        "objects": float(data["alloc_objects"]),
    }


def window(loadgen: Path, scenario: Path, target: str, seconds: float, rate: float) -> int:
    """One open-loop window; the requests it completed."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [
            "taskset", "-c", str(LOAD_CPU), str(loadgen), "-target", target,
            "-scenario", str(scenario), "-connections", "64", "-duration", f"{seconds}s",
            "-rate", str(rate), "-out", out.name,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, timeout=seconds + 60, capture_output=True)
        return int(json.loads(Path(out.name).read_text())["requests"])


def one_process(
    binary: Path, loadgen: Path, scenario: Path, env: dict[str, str], opts: argparse.Namespace,
    seconds: float, tmp: Path, index: int,
) -> list[dict[str, float]]:  # fmt: skip
    env = {**env, AGENT_TOKEN_ENV: new_agent_token()}
    log = tmp / f"service-{index}.log"
    service = Service(binary, args=(), env=env, cwd=SAMPLE, log_path=log, cpus=[SERVICE_CPU],
                      gomaxprocs=1, agent=True, stop_timeout=5.0, notes=[])  # fmt: skip
    rows = []
    with service:
        service.start()
        service.wait_ready("/healthz", 20.0)
        address = service.agent_address()
        assert address is not None
        source = AgentSource(address, env[AGENT_TOKEN_ENV])
        window(loadgen, scenario, service.base_url, 3.0, opts.rate)  # warm-up
        for _ in range(opts.windows):
            before = counters(source)
            requests = window(loadgen, scenario, service.base_url, seconds, opts.rate)
            after = counters(source)
            delta = {k: after[k] - before[k] for k in before}
            rows.append(
                {
                    "cpu_us": (delta["user"] + delta["system"]) / requests * 1e6,
                    "user_us": delta["user"] / requests * 1e6,
                    "system_us": delta["system"] / requests * 1e6,
                    "bytes": delta["bytes"] / requests,
                    "objects": delta["objects"] / requests,
                    "requests": requests,
                }
            )
    return rows


def cv(values: list[float]) -> float:
    return analysis.spread(values) or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--seconds", default="5,20")
    parser.add_argument("--rate", type=float, default=1450.0)
    parser.add_argument("--env", action="append", default=[], help="K=V for the service")
    parser.add_argument("--busy-label", default="", help="e.g. 'stress-ng --cpu 1'")
    parser.add_argument("--log", type=Path)
    opts = parser.parse_args()
    go = find_go()
    binary = build_service(SAMPLE, [], True, go)
    loadgen = build_loadgen(go)
    env = dict(kv.split("=", 1) for kv in opts.env)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        scenario = tmp / "scenario.json"
        write_scenario(load_config(SAMPLE / "leakgate.yml").load.requests, scenario)
        for seconds in (float(s) for s in opts.seconds.split(",")):
            processes = [
                one_process(binary, loadgen, scenario, env, opts, seconds, tmp, i)
                for i in range(opts.processes)
            ]
            print(f"{seconds:g} s windows at {opts.rate:g} req/s, {opts.env or 'no switch'}"
                  f"{', busy: ' + opts.busy_label if opts.busy_label else ''}:")  # fmt: skip
            summary = {}
            for key in ("cpu_us", "user_us", "system_us", "bytes", "objects"):
                within = statistics.median(cv([w[key] for w in p]) for p in processes)
                means = [statistics.mean(w[key] for w in p) for p in processes]
                between = cv(means)
                summary[key] = {"mean": statistics.mean(means), "within": within,
                                "between": between}  # fmt: skip
                print(f"  {key:10} mean {statistics.mean(means):10.2f}  CV within a process "
                      f"{within:6.2%}  between processes {between:6.2%}")  # fmt: skip
            if opts.log:
                entry = {"seconds": seconds, "rate": opts.rate, "env": opts.env,
                         "busy": opts.busy_label, "summary": summary, "windows": processes,
                         "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
                with opts.log.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
