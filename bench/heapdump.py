#!/usr/bin/env python3
"""Heap dump figures (issue 18): the stop-the-world pause of the agent's dump, its size, and
what reading and walking it costs leakgate, for live heaps of 10 MiB and 100 MiB.

A Go program (standard library only, the agent injected with `go build -overlay` as leakgate
does) keeps a live heap of the asked size: half in 64-byte nodes held by a map (pointer-dense,
the costly shape for the walk), half in 4 KiB byte slices hanging off them. For each size the
bench asks the agent for a dump (`POST /leakgate/heapdump`), then reads and attributes it in a
fresh Python process and prints that process's time and peak RSS. The reference in the same
run is a forced GC of the same heap (`/leakgate/checkpoint`, two cycles): the dump's pause is
printed beside it and as a ratio.

--hostile measures the reader's memory bound instead (issue 18: "bounded memory on hostile
input"): inputs written to cost the most memory per byte of file that the reader's bounds
(heapdump.LIMITS, one pointer per word, objects of 8 bytes or more) still let through — the
smallest objects, pointer-dense objects, stack frames full of pointers, every capped count
filled to its limit, all of them in one file — each read and attributed in a fresh process,
with its peak RSS (VmHWM) and the ratio to the file's size. The reference in the same run is a
real dump of a --hostile-mib live heap.

    python bench/heapdump.py [--sizes 10,100] [--rounds 3]
    python bench/heapdump.py --hostile [--hostile-mib 64]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leakgate.build import agent_source  # noqa: E402
from tests.factories import varint  # noqa: E402

PROGRAM = """\
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

type node struct {
	next    *node
	payload []byte
	id      int
	pad     [3]int
}

var live = map[int]*node{}

func main() {
	mib, _ := strconv.Atoi(os.Getenv("HEAP_MIB"))
	budget := mib << 20
	var prev *node
	for i := 0; budget > 0; i++ {
		n := &node{next: prev, id: i}
		if i%64 == 0 {
			n.payload = make([]byte, 4096)
			budget -= 4096
		}
		live[i] = n
		prev = n
		budget -= 64 + 48 // the node and its map slot
	}
	fmt.Println("ready", len(live))
	time.Sleep(time.Hour)
}
"""

# The peak is the process's VmHWM: ru_maxrss would carry over the parent's high-water mark.
ANALYSE = """\
import json, sys, time
from pathlib import Path
from leakgate import heapdump, retention
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
base = hwm()
start = time.perf_counter()
try:
    dump = heapdump.load(Path(sys.argv[1]))
except heapdump.HeapDumpError as e:
    print(json.dumps({"refused": str(e)[-200:], "peak_rss_mib": hwm(), "base_mib": base}))
    sys.exit(0)
read = time.perf_counter() - start
held = retention.attribute(dump, retention.load_symbols(None), lambda f: f.startswith("main."))
walked = time.perf_counter() - start - read
print(json.dumps({
    "objects": dump.objects, "pointers": len(dump.pointers), "read_s": read, "walk_s": walked,
    "peak_rss_mib": hwm(), "base_mib": base,
    "attributed_mib": sum(h.bytes for h in held.values()) / 2**20,
}))
"""


def build(work: Path) -> Path:
    (work / "go.mod").write_text("module heapbench\n\ngo 1.21\n")
    (work / "main.go").write_text(PROGRAM)
    overlay = {"Replace": {str(work / "zz_leakgate_agent.go"): str(agent_source())}}
    (work / "overlay.json").write_text(json.dumps(overlay))
    binary = work / "heapbench"
    subprocess.run(
        ["go", "build", "-overlay", str(work / "overlay.json"), "-o", str(binary), "."],
        cwd=work,
        check=True,
    )
    return binary


def post(url: str, token: str, timeout: float = 300.0) -> dict[str, object]:
    req = urllib.request.Request(url, method="POST", headers={"X-Leakgate-Token": token})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def analyse(path: Path) -> dict[str, float]:
    """Read and attribute the dump in a fresh process: its figures, or why it was refused."""
    analysis = subprocess.run(
        [sys.executable, "-c", ANALYSE, str(path)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, float] = json.loads(analysis.stdout)
    return figures


def real_dump(work: Path, mib: int) -> Path:
    """A dump of the bench program's `mib` MiB live heap, kept as real.heapdump."""
    keep = work / "real.heapdump"
    one(build(work), work, mib, 1, keep=keep)
    return keep


def one(
    binary: Path, work: Path, mib: int, rounds: int, keep: Path | None = None
) -> dict[str, float]:
    token = secrets.token_hex(16)
    addr_file = work / f"agent-{mib}.addr"
    addr_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "HEAP_MIB": str(mib),
        "LEAKGATE_AGENT_ADDR": "127.0.0.1:0",
        "LEAKGATE_AGENT_ADDR_FILE": str(addr_file),
        "LEAKGATE_AGENT_TOKEN": token,
        "LEAKGATE_AGENT_DUMP_DIR": str(work),
    }
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "ready N"
        for _ in range(100):
            if addr_file.exists() and addr_file.read_text().strip():
                break
            time.sleep(0.05)
        base = f"http://{addr_file.read_text().strip()}"
        gcs, pauses, sizes, heaps = [], [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            post(f"{base}/leakgate/checkpoint", token)
            gcs.append(time.perf_counter() - start)
            answer = post(f"{base}/leakgate/heapdump?name=bench-{mib}&max={4 << 30}", token)
            pauses.append(float(answer["pause_seconds"]))  # type: ignore[arg-type]
            sizes.append(float(answer["bytes"]))  # type: ignore[arg-type]
            heaps.append(float(answer["heap_alloc"]))  # type: ignore[arg-type]
        figures = analyse(work / f"bench-{mib}.heapdump")
        if keep is not None:
            (work / f"bench-{mib}.heapdump").rename(keep)
    finally:
        proc.kill()
        proc.wait()
        (work / f"bench-{mib}.heapdump").unlink(missing_ok=True)
    return {
        "heap_mib": statistics.median(heaps) / 2**20,
        "dump_mib": statistics.median(sizes) / 2**20,
        "pause_s": statistics.median(pauses),
        "gc_s": statistics.median(gcs),
        **figures,
    }


# -- --hostile: the reader's memory bound ---------------------------------------------------

HEAP = 0xC000000000


def ds(raw: bytes) -> bytes:
    return varint(len(raw)) + raw


HEADER = (
    b"go1.7 heap dump\n"
    + varint(6)
    + varint(0)
    + varint(8)
    + varint(HEAP)
    + varint(HEAP + (1 << 40))
)
HEADER += ds(b"amd64") + ds(b"go1.26.0") + varint(2)


def _objects(budget: int, size: int, pointers: int) -> bytes:
    """Objects of `size` bytes, each with `pointers` pointer fields to the next objects."""
    fields = b"".join(varint(1) + varint(8 * k) for k in range(pointers)) + varint(0)
    out = bytearray()
    i = 0
    while len(out) < budget:
        body = bytearray(size)
        for k in range(pointers):
            body[8 * k : 8 * k + 8] = (HEAP + size * (i + k + 1)).to_bytes(8, "little")
        out += varint(1) + varint(HEAP + size * i) + ds(bytes(body)) + fields
        i += 1
    return bytes(out)


def _frames(budget: int) -> bytes:
    """Goroutines of one frame each, the frame 4 KiB of pointers (each a root)."""
    words = 512
    body = b"".join((HEAP + 64 * k).to_bytes(8, "little") for k in range(words))
    fields = b"".join(varint(1) + varint(8 * k) for k in range(words)) + varint(0)
    out = bytearray()
    goid = 1
    while len(out) < budget:
        out += (
            varint(4)
            + varint(HEAP + goid)
            + varint(0)
            + varint(goid)
            + varint(0)
            + varint(4)
            + varint(0) * 3
            + ds(b"")
        )
        out += varint(0) * 4
        out += varint(5) + varint(0) * 3 + ds(body) + varint(0) * 3 + ds(b"main.f") + fields
        goid += 1
    return bytes(out)


def _capped() -> bytes:
    """Every capped count filled to its limit with its cheapest record."""
    from leakgate.heapdump import LIMITS

    out = bytearray()
    strings = LIMITS["distinct strings"] - 16
    frames = LIMITS["distinct profile frames"]
    out += b"".join(varint(2) + ds(b"%x" % n) + varint(HEAP) for n in range(strings))  # other roots
    more = LIMITS["finalizer, defer, panic and other roots"] - strings
    out += (varint(7) + varint(HEAP) * 5) * more  # finalizers
    # profile buckets of 64 frames each: distinct (function, file, line) up to the limit
    per = 64
    for b in range(frames // per):
        out += varint(16) + varint(b + 1) + varint(8) + varint(per)
        out += b"".join(ds(b"") + ds(b"") + varint(b * per + k) for k in range(per)) + varint(1) * 2
    out += b"".join(
        varint(17) + varint(HEAP + 8 * n) + varint(1) for n in range(LIMITS["allocation samples"])
    )
    goroutines = LIMITS["goroutines"]
    out += b"".join(
        varint(4)
        + varint(n)
        + varint(0)
        + varint(n)
        + varint(0)
        + varint(4)
        + varint(0) * 3
        + ds(b"")
        + varint(0) * 4
        for n in range(goroutines)
    )
    return bytes(out)


def _all(budget: int) -> bytes:
    """The capped counts at their limits, and `budget` bytes of the three unbounded shapes."""
    third = budget // 3
    return _capped() + _objects(third, 8, 0) + _objects(third, 64, 8) + _frames(third)


def hostile(mib: int) -> int:
    budget = mib << 20
    shapes: dict[str, tuple[str, Callable[[], bytes]]] = {
        "objects": ("8-byte objects, no pointers", lambda: _objects(budget, 8, 0)),
        "pointers": ("64-byte objects, 8 pointers each", lambda: _objects(budget, 64, 8)),
        "frames": ("stack frames of 512 pointers", lambda: _frames(budget)),
        "capped": ("every capped count at its limit", _capped),
        "all": ("the capped counts and the three shapes above", lambda: _all(budget)),
        "duplicates": (
            "one 8-byte object with 1 M copies of its pointer field",
            lambda: (
                varint(1)
                + varint(HEAP)
                + ds(bytes(8))
                + (varint(1) + varint(0)) * (1 << 20)
                + varint(0)
            ),
        ),
    }
    print("heapdump.load + retention.attribute, one fresh process per input (peak RSS: VmHWM)")
    print(f"{'input':10} {'file':>9} {'peak RSS':>9} {'+read':>8} {'RSS/file':>9} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="leakgate-hostile-") as tmp:
        work = Path(tmp)
        reference = real_dump(work, mib)
        inputs = [("real", f"a real dump of a {mib} MiB live heap", reference)]
        for key, (what, build) in shapes.items():
            path = work / f"{key}.heapdump"
            path.write_bytes(HEADER + build() + varint(0))
            inputs.append((key, what, path))
        worst = 0.0
        for key, what, path in inputs:
            f = analyse(path)
            size = path.stat().st_size / 2**20
            added = f["peak_rss_mib"] - f["base_mib"]
            took = f.get("read_s", 0.0) + f.get("walk_s", 0.0)
            outcome = f"refused: {f['refused']}" if "refused" in f else f"{f['objects']:,} objects"
            print(
                f"{key:10} {size:7.1f}Mi {f['peak_rss_mib']:7.0f}Mi {added:+7.0f}Mi "
                f"{added / size:8.1f}x {took:8.2f}  {what}: {outcome[:90]}"
            )
            if key != "real":
                worst = max(worst, added / size)
        print(f"largest added memory per byte of file, hostile inputs: {worst:.1f}x")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100", help="live heaps to dump, in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="dumps per size (median)")
    parser.add_argument("--hostile", action="store_true", help="the reader's memory bound")
    parser.add_argument("--hostile-mib", type=int, default=64, help="with --hostile: file size")
    args = parser.parse_args()
    if args.hostile:
        return hostile(args.hostile_mib)
    with tempfile.TemporaryDirectory(prefix="leakgate-heapbench-") as tmp:
        work = Path(tmp)
        binary = build(work)
        print(
            f"{'live heap':>10} {'dump':>9} {'STW pause':>10} {'2 GCs':>8} {'ratio':>6} "
            f"{'objects':>10} {'read':>7} {'walk':>7} {'peak RSS':>9}"
        )
        for mib in (int(s) for s in args.sizes.split(",")):
            f = one(binary, work, mib, args.rounds)
            print(
                f"{f['heap_mib']:8.1f}Mi {f['dump_mib']:7.1f}Mi {f['pause_s'] * 1000:8.0f}ms "
                f"{f['gc_s'] * 1000:6.0f}ms {f['pause_s'] / f['gc_s']:6.1f} {f['objects']:>10,} "
                f"{f['read_s']:6.2f}s {f['walk_s']:6.2f}s {f['peak_rss_mib']:7.0f}Mi"
            )
            print(f"           attributed to a root: {f['attributed_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
