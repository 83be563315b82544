"""Load from an external tool (`load.tool: external`): leakgate runs `load.command` for the
measure window, probes the service meanwhile, then reads the tool's result files.

This is the path for load from several machines: the command may fan out (ssh to load hosts,
a Kubernetes job) and gather each host's results; every file given is merged into one
LoadResult. Formats, detected per file:

* vegeta results as JSON lines (`vegeta attack ... | vegeta encode --to json`): one object per
  request with `timestamp` (RFC 3339), `latency` (ns), `code` and `error`. Read as a stream,
  so files of millions of requests fit in memory: latencies go straight into log buckets.
* leakgate's own generator result and wrk with leakgate's Lua script (the JSON line it prints),
  as leakgate itself writes them.

Errors are classified like the bundled generator's: code 0 is a connect, timeout or other
error (from vegeta's `error` text); a status of 400 or more is a status error. Latency is taken
from the successful requests only, as the bundled generator does: errors are never folded in.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from leakgate.errors import LoadError
from leakgate.load import LoadPlan
from leakgate.load.builtin import parse_result
from leakgate.load.wrk import MARKER, parse_wrk_output
from leakgate.model import HISTOGRAM_GROWTH, Histogram, LoadResult, SecondStat, bucket_index
from leakgate.procs import log_tail, spawn, stop_group

MAX_LINE_BYTES = 1024 * 1024  # one vegeta result; a response body would rarely be this large
MAX_RESULT_BYTES = 4 * 1024**3
STOP_GRACE = 5.0
LOG_TAIL_BYTES = 4000  # of the command's output, in a failure's details


class ExternalProcess:
    """`load.command` as the measure phase: a LoadDriver.

    The command's argv may use {target}, {duration} (seconds), {rate} (req/s, 0 for as fast
    as it goes) and {results} (the first results path); it runs in its own process group and
    is killed with it if it outlives its deadline or leakgate stops.
    """

    def __init__(self, plan: LoadPlan, *, command: Sequence[str], results: Sequence[Path]) -> None:
        values = {
            "target": plan.target,
            "duration": f"{plan.duration:g}",
            "rate": f"{plan.rate:.0f}",
            "results": str(results[0]) if results else "",
        }
        self.argv = [_fill(arg, values) for arg in command]
        self.rate = plan.rate
        self.results = list(results)
        self.duration = plan.duration
        self.timeout = plan.timeout
        self.log_path = plan.out_path.with_suffix(".log")  # the command's output
        self.cpus = plan.cpus
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress: dict[str, Any] = {}

    def start(self) -> None:
        for path in self.results:
            try:  # a previous run's results must not be read as these
                path.unlink(missing_ok=True)
            except OSError as e:
                raise LoadError(
                    f"{path}: cannot remove the previous results: {e.strerror}"
                ) from None
        try:
            with open(self.log_path, "wb") as log:
                self.proc = spawn(
                    self.argv,
                    env=dict(os.environ),
                    cwd=None,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cpus=self.cpus,
                )
        except OSError as e:
            raise LoadError(f"cannot start load.command {self.argv[0]!r}: {e}") from None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def deadline(self) -> float:
        return self.duration + self.timeout + 60.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, STOP_GRACE)

    def interrupt(self) -> LoadResult | None:
        """None: a tool's results are read only once it has finished (stop() ends it)."""
        return None

    def result(self) -> LoadResult:
        rc = self.poll()
        if rc != 0:
            tail = log_tail(self.log_path, LOG_TAIL_BYTES).strip()
            raise LoadError(
                f"load.command exited with code {rc}: {tail.splitlines()[-1] if tail else ''}",
                details=tail,
            )
        result = read_results(self.results)
        # The rate leakgate offered: a trial whose external load fell short of it is not valid
        # for latency, as with the bundled generator.
        return dataclasses.replace(result, target_rate=self.rate) if self.rate > 0 else result


def _fill(arg: str, values: Mapping[str, str]) -> str:
    for name, value in values.items():
        arg = arg.replace("{" + name + "}", value)
    return arg


def read_results(paths: Sequence[Path]) -> LoadResult:
    """Every results file merged into one LoadResult; LoadError naming the file at fault."""
    if not paths:
        raise LoadError("load.tool external needs its result files: --load-results FILE")
    vegeta = _VegetaTally()
    others: list[LoadResult] = []
    for path in paths:
        try:
            size = path.stat().st_size
        except OSError as e:
            raise LoadError(f"{path}: no load results there ({e.strerror})") from None
        if not path.is_file():
            raise LoadError(f"{path}: not a file of load results")
        if size > MAX_RESULT_BYTES:
            raise LoadError(f"{path}: {size} bytes, over the limit for load results")
        with path.open("rb") as f:
            head = f.read(4096)
        if head.lstrip()[:1] != b"{" and MARKER.encode() not in head:
            raise LoadError(f"{path}: not vegeta JSON results or a leakgate/wrk result")
        if MARKER.encode() in head:
            others.append(_parse(path, parse_wrk_output))
        elif b'"latency"' in head.split(b"\n", 1)[0] and b'"code"' in head.split(b"\n", 1)[0]:
            vegeta.read(path)
        else:
            others.append(_parse(path, parse_result))
    parts = ([vegeta.result()] if vegeta.requests else []) + others
    if not parts:
        raise LoadError(f"{', '.join(map(str, paths))}: no requests in the load results")
    return merge(parts)


def _parse(path: Path, parser: Any) -> LoadResult:
    try:
        result: LoadResult = parser(path.read_text(errors="replace"))
    except LoadError as e:
        raise LoadError(f"{path}: {e.message}", details=e.details) from None
    return result


class _VegetaTally:
    """vegeta results read line by line into counts and log buckets."""

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.errors: Counter[str] = Counter()
        self.codes: Counter[str] = Counter()
        self.buckets: Counter[int] = Counter()
        self.per_second: dict[int, Counter[int]] = defaultdict(Counter)
        self.errors_per_second: Counter[int] = Counter()
        self.min_ns = math.inf
        self.max_ns = 0.0
        self.sum_ns = 0.0
        self.start = math.inf
        self.end = -math.inf
        self.first_error = ""

    def read(self, path: Path) -> None:
        with path.open("rb") as f:
            for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(raw) > MAX_LINE_BYTES:
                    raise LoadError(f"{path}:{number}: a result line over {MAX_LINE_BYTES} bytes")
                if not raw.strip():
                    continue
                try:
                    self._add(json.loads(raw))
                except (ValueError, TypeError, KeyError) as e:
                    raise LoadError(f"{path}:{number}: not a vegeta result: {e}") from None

    def _add(self, r: Any) -> None:
        if not isinstance(r, dict):
            raise TypeError("a JSON object was expected")
        code = r["code"]
        latency = float(r["latency"])
        stamp = _timestamp(r["timestamp"])
        error = r.get("error") or ""
        if not isinstance(code, int) or not math.isfinite(latency) or latency < 0:
            raise ValueError("code must be an integer and latency a duration in ns")
        if not isinstance(error, str):
            raise ValueError("error must be a string")
        self.requests += 1
        self.start = min(self.start, stamp)
        self.end = max(self.end, stamp + latency / 1e9)
        failed = False
        if code == 0:
            self.errors[_kind(error)] += 1
            failed = True
            self.first_error = self.first_error or str(error)[:200]
        elif code >= 400:
            self.codes[str(code)] += 1
            self.errors["status"] += 1
            failed = True
        else:
            self.codes[str(code)] += 1
            self.ok += 1
            self.buckets[bucket_index(latency)] += 1
            self.min_ns = min(self.min_ns, latency)
            self.max_ns = max(self.max_ns, latency)
            self.sum_ns += latency
        second = math.floor(stamp)  # wall-clock second; shifted to the run's start in result()
        if failed:
            self.errors_per_second[second] += 1
        else:
            self.per_second[second][bucket_index(latency)] += 1

    def result(self) -> LoadResult:
        duration = max(self.end - self.start, 1e-9)
        origin = math.floor(self.start)
        seconds = []
        for second in sorted({*self.per_second, *self.errors_per_second}):
            counts = self.per_second.get(second, Counter())
            hist = Histogram(
                growth=HISTOGRAM_GROWTH,
                buckets=tuple(sorted(counts.items())),
                count=sum(counts.values()),
            )
            seconds.append(
                SecondStat(
                    t=second - origin,
                    requests=hist.count + self.errors_per_second[second],
                    errors=self.errors_per_second[second],
                    p50=hist.percentile(50),
                    p95=hist.percentile(95),
                    p99=hist.percentile(99),
                )
            )
        timed = sum(self.buckets.values())
        return LoadResult(
            tool="vegeta",
            mode="open",
            connections=0,
            target_rate=0.0,
            duration_s=duration,
            requests=self.requests,
            ok=self.ok,
            errors=dict(self.errors),
            status_codes=dict(self.codes),
            achieved_rate=self.requests / duration,
            planned=self.requests,
            latency=Histogram(
                growth=HISTOGRAM_GROWTH,
                buckets=tuple(sorted(self.buckets.items())),
                count=timed,
                min_ns=round(self.min_ns) if timed else 0,
                max_ns=round(self.max_ns),
                sum_ns=round(self.sum_ns),
            ),
            seconds=tuple(seconds),
            first_error=self.first_error,
        )


_RFC3339 = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", re.IGNORECASE
)


def _timestamp(value: Any) -> float:
    """RFC 3339 as Go writes it (any number of fraction digits, Z or an offset) -> Unix seconds."""
    if not isinstance(value, str):
        raise ValueError("timestamp must be an RFC 3339 string")
    m = _RFC3339.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"timestamp {value!r} is not RFC 3339")
    base, fraction, zone = m.groups()
    zone = "+00:00" if zone.upper() == "Z" else zone
    try:
        whole = datetime.datetime.fromisoformat(base + zone).timestamp()
    except ValueError:
        raise ValueError(f"timestamp {value!r} is not a valid date and time") from None
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _kind(error: str) -> str:
    text = error.lower()
    if "timeout" in text or "deadline exceeded" in text:
        return "timeout"
    if "connection refused" in text or "dial" in text or "no such host" in text:
        return "connect"
    return "other"


def merge(parts: Iterable[LoadResult]) -> LoadResult:
    """Results of several load hosts as one: counts added, histograms merged bucket by bucket,
    the duration the longest of them (the hosts ran at the same time)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    buckets: Counter[int] = Counter()
    for p in parts:
        if p.latency.growth != HISTOGRAM_GROWTH:
            raise LoadError("load results with different histogram resolutions cannot be merged")
        buckets.update(dict(p.latency.buckets))
    errors: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    for p in parts:
        errors.update(p.errors)
        codes.update(p.status_codes)
    duration = max(p.duration_s for p in parts)
    requests = sum(p.requests for p in parts)
    counted = [p.latency for p in parts if p.latency.count]
    return LoadResult(
        tool="+".join(sorted({p.tool for p in parts})),
        mode=parts[0].mode,
        connections=sum(p.connections for p in parts),
        target_rate=sum(p.target_rate for p in parts),
        duration_s=duration,
        requests=requests,
        ok=sum(p.ok for p in parts),
        errors=dict(errors),
        status_codes=dict(codes),
        achieved_rate=requests / duration if duration else 0.0,
        planned=sum(p.planned for p in parts),
        latency=Histogram(
            growth=HISTOGRAM_GROWTH,
            buckets=tuple(sorted(buckets.items())),
            count=sum(h.count for h in counted),
            min_ns=min((h.min_ns for h in counted), default=0),
            max_ns=max((h.max_ns for h in counted), default=0),
            sum_ns=sum(h.sum_ns for h in counted),
        ),
        first_error=next((p.first_error for p in parts if p.first_error), ""),
    )
