"""Runs wrk (https://github.com/wg/wrk, 4.x) with leakgate's Lua script and reads its result.

wrk is a closed-loop driver only: -c N connections, each sending its next request as soon as the
previous response arrived; there is no open-loop (fixed rate) mode. It plays the same scenario as
the bundled generator: the scenario.json that `leakgate.load.builtin.write_scenario` writes is
read back, checked with the generator's rules and written beside it as a Lua table
(scenario.wrk.lua) that wrk_report.lua loads; templates ({seq}, {rand:A-B}, {uuid}, {{) are
parsed here so the Lua side only concatenates parts. See wrk_report.lua for the Lua/JSON contract.

How a wrk result maps onto a LoadResult (and where it differs from the bundled generator):

* requests: the responses wrk completed (any status). Requests lost to a socket error are not in
  it; they are counted in errors: connect (connection could not be opened), read (socket read
  failure or an unparsable response), write (send failure), timeout (a response that arrived
  later than --timeout; it is also in requests, so ok excludes it). wrk silently reconnects when
  the server closes a connection, so a request lost that way is counted nowhere. error_rate is
  sum(errors) / requests: errors per completed response.
* errors["status"]: responses with an unexpected status. Without any expect_status in the
  scenario that is wrk's own count (status > 399); with one, the script checks every response
  (exact when all entries share one expect_status, else approximate: see wrk_report.lua).
* ok = requests - status - timeout.
* status_codes: only when the script checked statuses (response() defined), else empty.
* latency: rebuilt from 1000 percentile points of wrk's latency record (p = 0.1 .. 100 by 0.1):
  the responses timed are requests - timeout, every 0.1% slice of them lands in the log bucket
  (growth 1.02) of its percentile's latency. Percentiles read back are within 1% of wrk's at
  those points (given 2,000 timed responses or more); between points the resolution is 0.1% of
  the samples. wrk's record, unlike the
  bundled generator's, includes every status (errors too), has microsecond resolution and is
  corrected for coordinated omission (wrk adds synthetic samples below every slow response), so
  tail percentiles read higher than the generator's for the same service. min/max are wrk's, the
  sum is mean * count (the mean also includes the synthetic samples).
* no per-second stats (seconds is empty) and no live progress: wrk reports only at the end.
* the duration and --timeout are whole seconds for wrk (rounded up, at least 1s); connections
  are split evenly over the threads, so wrk opens N - N % T of them (recorded in connections).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from leakgate.atomic import write_atomic
from leakgate.config import RequestSpec
from leakgate.errors import LoadError
from leakgate.load import LoadPlan
from leakgate.model import HISTOGRAM_GROWTH, Histogram, LoadResult, bucket_index
from leakgate.procs import log_tail, signal_and_wait, spawn, stop_group
from leakgate.templates import Part, parse_template

WRK_SCRIPT = Path(__file__).with_name("wrk_report.lua")
MARKER = "LEAKGATE_WRK_JSON"
INSTALL_HINT = (
    "wrk is not installed; install it (apt-get install wrk, brew install wrk) "
    "or use load.tool: builtin"
)
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_SCENARIO_BYTES = 16 * 1024 * 1024
MAX_PERCENTILES = 10_000
STDERR_TAIL_BYTES = 16 * 1024
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def find_wrk() -> str:
    """The path of the wrk executable, or LoadError with the install hint."""
    path = shutil.which("wrk")
    if path is None:
        raise LoadError(INSTALL_HINT)
    return path


# -- the scenario as a Lua table ---------------------------------------------------------------


def lua_string(text: str) -> str:
    """`text` as a Lua quoted string literal: printable ASCII as is, every other byte (quotes,
    backslashes, newlines, NUL, UTF-8) as a three-digit decimal escape, so no content can end
    the string or change its bytes."""
    out = ['"']
    for b in text.encode("utf-8"):
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C):
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def lua_template(parts: Sequence[Part]) -> str:
    """A template as the Lua script reads it: a plain string when static, else a list of parts."""
    if all(isinstance(p, str) for p in parts):
        return lua_string("".join(p for p in parts if isinstance(p, str)))
    items: list[str] = []
    for p in parts:
        if isinstance(p, str):
            items.append(lua_string(p))
        elif len(p) == 3:
            items.append(f'{{"rand", {p[1]}, {p[2]}}}')
        else:
            items.append(f'{{"{p[0]}"}}')
    return "{" + ", ".join(items) + "}"


def _is_token(s: str) -> bool:
    return bool(s) and all(c in _TOKEN_CHARS for c in s)


def _canonical(key: str) -> str:
    return "-".join(w[:1].upper() + w[1:].lower() for w in key.split("-"))


def lua_scenario(requests: Sequence[RequestSpec], *, prefix: str = "") -> str:
    """The Lua source of the scenario table (see wrk_report.lua); ValueError names a bad entry."""
    if not requests:
        raise ValueError("the scenario has no request")
    lines = ["-- written by leakgate for wrk_report.lua; do not edit", "return { version = 1,"]
    lines.append("requests = {")
    for i, r in enumerate(requests):
        where = f"scenario requests[{i}] ({r.method} {r.path})"
        try:
            lines.append(_lua_entry(r, prefix))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    lines.append("} }")
    return "\n".join(lines) + "\n"


def _lua_entry(r: RequestSpec, prefix: str) -> str:
    method = r.method or "GET"
    if not _is_token(method):
        raise ValueError(f"invalid method {method!r}")
    weight = float(r.weight)
    if not (math.isfinite(weight) and weight > 0):
        raise ValueError(f"weight must be > 0, got {r.weight!r}")
    expect = int(r.expect_status)
    if expect != 0 and not 100 <= expect <= 999:
        raise ValueError(f"expect_status must be 0 or 100..999, got {expect}")
    if not r.path.startswith("/"):
        raise ValueError(f"path {r.path!r} must start with /")
    try:
        path = parse_template(prefix + r.path)
    except ValueError as e:
        raise ValueError(f"path: {e}") from None
    for part in path:
        if isinstance(part, str):
            for ch in part:
                if ch <= " " or ch >= "\x7f" or ch == "#":
                    raise ValueError(f"path {r.path!r}: byte {ch!r} must be percent-encoded")
    headers: dict[str, str] = {}
    for key, value in r.headers.items():
        if not _is_token(key):
            raise ValueError(f"invalid header name {key!r}")
        name = _canonical(key)
        if name in ("Content-Length", "Transfer-Encoding"):
            raise ValueError(f"header {name} is set from the body; remove it")
        headers[name] = value
    header_items: list[str] = []
    for name in sorted(headers):
        try:
            value_parts = parse_template(headers[name])
        except ValueError as e:
            raise ValueError(f"header {name}: {e}") from None
        for part in value_parts:
            if isinstance(part, str) and any(
                (ch < " " and ch != "\t") or ch == "\x7f" for ch in part
            ):
                raise ValueError(f"header {name}: control byte in value")
        header_items.append(f"{{{lua_string(name)}, {lua_template(value_parts)}}}")
    fields = [
        f"method = {lua_string(method)}",
        f"weight = {weight!r}",
        f"expect_status = {expect}",
        f"source = {lua_string(f'{method} {r.path}')}",
        f"path = {lua_template(path)}",
        "headers = {" + ", ".join(header_items) + "}",
    ]
    # Like the bundled generator: Content-Length for a body, and for an empty POST/PUT/PATCH.
    if r.body or method in ("POST", "PUT", "PATCH"):
        try:
            body = parse_template(r.body)
        except ValueError as e:
            raise ValueError(f"body: {e}") from None
        fields.append(f"body = {lua_template(body)}")
    return "  { " + ", ".join(fields) + " },"


def write_lua_scenario(requests: Sequence[RequestSpec], path: Path, *, prefix: str = "") -> None:
    """Write the scenario as a Lua table file, atomically (several runs may share it)."""
    write_atomic(path, lua_scenario(requests, prefix=prefix))


def read_scenario(path: Path) -> list[RequestSpec]:
    """The requests of a scenario.json written by `builtin.write_scenario`; LoadError if bad."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as e:
        raise LoadError(f"cannot read the load scenario {path}: {e}") from None
    if len(raw) > MAX_SCENARIO_BYTES:
        raise LoadError(f"the load scenario {path} is over {MAX_SCENARIO_BYTES} bytes")
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as e:
        raise LoadError(f"the load scenario {path} is not JSON: {e}") from None
    items = data.get("requests") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise LoadError(f'the load scenario {path} has no "requests" list')
    specs: list[RequestSpec] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise LoadError(f"the load scenario {path}: requests[{i}] is not an object")
        headers = item.get("headers") or {}
        ok = (
            isinstance(item.get("path"), str)
            and isinstance(item.get("method", "GET"), str)
            and isinstance(item.get("body", ""), str)
            and isinstance(headers, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
            and _is_number(item.get("weight", 1.0))
            and isinstance(item.get("expect_status", 0), int)
            and not isinstance(item.get("expect_status", 0), bool)
        )
        if not ok:
            raise LoadError(f"the load scenario {path}: requests[{i}] is malformed")
        specs.append(
            RequestSpec(
                path=item["path"],
                method=item.get("method") or "GET",
                body=item.get("body") or "",
                headers=dict(headers),
                weight=float(item.get("weight", 1.0)),
                expect_status=int(item.get("expect_status", 0)),
            )
        )
    return specs


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_target(target: str) -> str:
    """The path prefix of a loopback http target; LoadError for anything else."""
    try:
        parts = urlsplit(target)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError as e:
        raise LoadError(f"wrk target {target!r}: {e}") from None
    if parts.scheme != "http" or not host or parts.username or parts.query or parts.fragment:
        raise LoadError(
            f"wrk target {target!r}: want http://HOST[:PORT][/prefix] without user, query "
            "or fragment"
        )
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if not loopback:
        raise LoadError(f"wrk target {target!r}: leakgate only loads services on loopback")
    return parts.path.rstrip("/")


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds - 1e-9))


# -- the process -------------------------------------------------------------------------------


class WrkProcess:
    """One wrk run: a LoadDriver, closed loop only."""

    def __init__(
        self,
        plan: LoadPlan,
        *,
        binary: Path | str | None = None,
        scenario: Path,
        connections: int,
    ) -> None:
        if plan.rate > 0:
            raise ValueError("wrk runs a closed loop only: rate must be 0 (use load.tool: builtin)")
        if connections < 1:
            raise ValueError(f"connections must be at least 1, got {connections}")
        self.binary = str(binary) if binary is not None else find_wrk()
        target = plan.target
        prefix = _check_target(target)
        self.lua_scenario = scenario.with_name(scenario.stem + ".wrk.lua")
        try:
            write_lua_scenario(read_scenario(scenario), self.lua_scenario, prefix=prefix)
        except ValueError as e:
            raise LoadError(str(e)) from None
        except OSError as e:
            raise LoadError(f"cannot write {self.lua_scenario}: {e}") from None
        self.out_path = plan.out_path
        self.stderr_path = self.out_path.with_name(self.out_path.stem + ".wrk-stderr.txt")
        self.duration = float(_whole_seconds(plan.duration))
        self.timeout = float(_whole_seconds(plan.timeout))
        self.connections = connections
        cpus = plan.cpus
        self.threads = max(1, min(connections, len(cpus) if cpus else _cpu_count()))
        self.cpus = cpus
        seed = int.from_bytes(os.urandom(4), "big") % (2**31 - 1) + 1
        self.argv = [
            self.binary,
            "-t",
            str(self.threads),
            "-c",
            str(connections),
            "-d",
            f"{self.duration:.0f}s",
            "--timeout",
            f"{self.timeout:.0f}s",
            "--latency",
            "-s",
            str(WRK_SCRIPT),
            target,
            "--",
            str(self.lua_scenario),
            str(self.threads),
            str(connections),
            str(seed),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress: dict[str, Any] = {}  # wrk prints nothing while it runs
        self.started: float | None = None

    def start(self) -> None:
        self.out_path.unlink(missing_ok=True)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        # The script takes its inputs as arguments; the same in the environment, for reruns by hand.
        env = {
            "PATH": "/usr/bin:/bin",
            "LEAKGATE_WRK_SCENARIO": str(self.lua_scenario),
            "LEAKGATE_WRK_THREADS": str(self.threads),
            "LEAKGATE_WRK_CONNECTIONS": str(self.connections),
        }
        try:
            # Files, not pipes: nothing has to drain them while wrk runs.
            with open(self.out_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = spawn(
                    self.argv, env=env, cwd=None, stdout=out, stderr=err, cpus=self.cpus
                )
        except OSError as e:
            raise LoadError(f"cannot start wrk ({self.binary}): {e}") from None
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    @property
    def deadline(self) -> float:
        """Seconds after start by which wrk must have finished (it stops at the duration)."""
        return self.duration + 20.0

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 2.0)

    def interrupt(self, timeout: float = 3.0) -> LoadResult | None:
        """End the run now: on SIGINT wrk stops its threads and prints its summary (and the
        script's result line) for the time it ran. None if it could not."""
        proc = self.proc
        if proc is None:
            return None
        signal_and_wait(proc, signal.SIGINT, timeout)
        try:
            return self.result()
        except LoadError:
            return None

    def stderr_tail(self, lines: int = 5) -> str:
        text = log_tail(self.stderr_path, STDERR_TAIL_BYTES)
        kept = [line.strip()[:300] for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])

    def result(self) -> LoadResult:
        rc = self.poll()
        if rc is None:
            raise LoadError("wrk has not finished")
        tail = self.stderr_tail()
        if rc != 0:
            how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            said = "; ".join(tail.splitlines()[-3:]) or "no message"
            raise LoadError(f"wrk {how}: {said}", details=tail)
        try:
            with open(self.out_path, "rb") as f:
                raw = f.read(MAX_OUTPUT_BYTES + 1)
        except OSError as e:
            raise LoadError(f"wrk wrote no output: {e}") from None
        try:
            return parse_wrk_output(raw.decode("utf-8", "replace"))
        except LoadError as e:
            raise LoadError(e.message, details=e.details or tail) from None


# -- the result --------------------------------------------------------------------------------


def parse_wrk_output(text: str) -> LoadResult:
    """wrk's stdout with leakgate's script -> LoadResult; LoadError if malformed or if the run
    served nothing usable (no response, or only error statuses)."""
    data = _result_object(text)
    requests = _count(data, "requests", "")
    duration_us = _count(data, "duration_us", "")
    connections = _count(data, "connections", "", default=0)
    wrk_errors = _object(data, "errors", "")
    counts = {kind: _count(wrk_errors, kind, "errors.") for kind in ERROR_KINDS}
    check = _object(data, "status_check", "", required=False)
    mode = check.get("mode", "none")
    if mode not in ("none", "uniform", "inflight"):
        raise LoadError(f"wrk result: status_check.mode {mode!r} is unknown")
    status_errors = counts["status"]
    if mode != "none":
        status_errors = _count(check, "unexpected", "status_check.")
    codes_raw = _object(data, "status_codes", "", required=False)
    status_codes = {str(k): _count(codes_raw, k, "status_codes.") for k in codes_raw}

    socket = counts["connect"] + counts["read"] + counts["write"] + counts["timeout"]
    if requests == 0:
        raise _served_nothing(counts, socket, duration_us)
    if duration_us <= 0:
        raise LoadError("wrk result: duration_us must be above 0")
    if counts["timeout"] >= requests:
        raise LoadError(
            f"every response arrived after the timeout ({counts['timeout']:,} of {requests:,})"
        )
    # Every response an error status is a result, not a load failure: the gate's error_rate
    # check fails it, as it would with the bundled generator.
    ok = max(0, requests - status_errors - counts["timeout"])

    latency = _object(data, "latency", "")
    timed = max(0, requests - counts["timeout"])
    histogram = histogram_from_percentiles(
        _percentiles(latency),
        timed,
        min_us=_number(latency, "min_us"),
        max_us=_number(latency, "max_us"),
        mean_us=_number(latency, "mean_us"),
    )
    errors = dict(counts)
    errors["status"] = status_errors
    notes = []
    if socket:
        notes.append(
            f"wrk socket errors (totals only): connect {counts['connect']}, read "
            f"{counts['read']}, write {counts['write']}, timeout {counts['timeout']}"
        )
    if status_errors:
        notes.append(f"{status_errors:,} responses with an unexpected status")
    duration_s = duration_us / 1e6
    return LoadResult(
        tool="wrk",
        mode="closed",
        connections=connections,
        target_rate=0.0,
        duration_s=duration_s,
        requests=requests,
        ok=ok,
        errors=errors,
        status_codes=status_codes,
        achieved_rate=requests / duration_s,
        planned=requests,
        latency=histogram,
        seconds=(),
        first_error="; ".join(notes)[:500],
    )


def _result_object(text: str) -> dict[str, Any]:
    """The JSON object of the last MARKER line wrk printed (leakgate's script writes it)."""
    if len(text) > MAX_OUTPUT_BYTES:
        raise LoadError(f"wrk output is over {MAX_OUTPUT_BYTES} bytes")
    line = None
    for candidate in text.splitlines():
        if candidate.startswith(MARKER):
            line = candidate
    if line is None:
        raise LoadError(
            f"wrk printed no {MARKER} line: leakgate's wrk script did not report "
            "(is wrk 4.x with LuaJIT installed?)"
        )
    try:
        data = json.loads(line[len(MARKER) :], parse_constant=_reject_constant)
    except ValueError as e:
        raise LoadError(f"wrk result ({MARKER}) is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise LoadError(f"wrk result ({MARKER}) is not a JSON object")
    if data.get("version") != 1:
        raise LoadError(f"wrk result has an unknown version: {data.get('version')!r}")
    return data


def _served_nothing(counts: dict[str, int], socket: int, duration_us: int) -> LoadError:
    """Why a run without a single response is a load failure, in the words that fit it."""
    if counts["connect"]:
        return LoadError(
            f"wrk could not connect to the service: {counts['connect']} connect errors "
            "and no response"
        )
    if socket:
        return LoadError(
            "every wrk request failed with a socket error (read "
            f"{counts['read']}, write {counts['write']}, timeout {counts['timeout']}); "
            "no response"
        )
    return LoadError(
        f"wrk got no response in {duration_us / 1e6:.1f}s (is the load path right? "
        "does the service answer?)"
    )


def histogram_from_percentiles(
    points: Sequence[tuple[float, float]],
    count: int,
    *,
    min_us: float,
    max_us: float,
    mean_us: float,
) -> Histogram:
    """A Histogram of `count` samples from sorted (percentile, latency in us) points ending at
    p = 100: the samples between one point and the next land in the bucket of the upper point's
    latency. Point p stands for sample rank floor(count * p / 100) + 1, as in wrk's
    latency:percentile, so with 2,000 samples or more every point reads back (Histogram.percentile)
    within 1% of its latency; with fewer, a point may read back its neighbour's."""
    if count <= 0:
        return Histogram(growth=HISTOGRAM_GROWTH)
    if not points:
        raise LoadError(f"wrk result has no latency percentiles for {count:,} timed responses")
    buckets: dict[int, int] = {}
    done = 0
    for p, us in points:
        frac = Fraction(repr(p))  # the decimal written, not its binary approximation
        upto = min(count, count * frac.numerator // (frac.denominator * 100) + 1)
        if upto > done:
            index = bucket_index(us * 1000.0)
            buckets[index] = buckets.get(index, 0) + upto - done
            done = upto
    if done < count:  # only when the last point is not p = 100 (rejected by _percentiles)
        index = bucket_index(max_us * 1000.0)
        buckets[index] = buckets.get(index, 0) + count - done
    return Histogram(
        growth=HISTOGRAM_GROWTH,
        buckets=tuple(sorted(buckets.items())),
        count=count,
        min_ns=round(min_us * 1000.0),
        max_ns=round(max_us * 1000.0),
        sum_ns=round(mean_us * 1000.0 * count),
    )


def _percentiles(latency: Mapping[str, Any]) -> list[tuple[float, float]]:
    raw = latency.get("percentiles")
    if not isinstance(raw, list) or len(raw) > MAX_PERCENTILES:
        raise LoadError("wrk result: latency.percentiles is not a list of [p, us] pairs")
    points: list[tuple[float, float]] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(map(_is_number, item))):
            raise LoadError("wrk result: latency.percentiles is not a list of [p, us] pairs")
        p, us = float(item[0]), float(item[1])
        if not (0 < p <= 100 and math.isfinite(us) and us >= 0):
            raise LoadError(
                f"wrk result: latency percentile [{item[0]}, {item[1]}] is out of range"
            )
        if points and (p <= points[-1][0] or us < points[-1][1]):
            raise LoadError("wrk result: latency percentiles are not sorted")
        points.append((p, us))
    if points and points[-1][0] != 100:
        raise LoadError("wrk result: latency percentiles do not end at 100")
    return points


def _object(data: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> Any:
    value = data.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise LoadError(f"wrk result: {where}{key} is missing or not an object")
    return value


def _count(data: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    value = data.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise LoadError(f"wrk result: {where}{key} is missing or not a count ({value!r})")
    return value


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if value is None:
        return 0.0  # the script writes null for a non-finite value
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise LoadError(f"wrk result: latency.{key} is not a non-negative number ({value!r})")
    return float(value)
