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

    python bench/heapdump.py [--sizes 10,100] [--rounds 3]
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from leakgate.build import agent_source  # noqa: E402

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

ANALYSE = """\
import json, resource, sys, time
from pathlib import Path
from leakgate import heapdump, retention
start = time.perf_counter()
dump = heapdump.load(Path(sys.argv[1]))
read = time.perf_counter() - start
held = retention.attribute(dump, retention.load_symbols(None), lambda f: f.startswith("main."))
walked = time.perf_counter() - start - read
print(json.dumps({
    "objects": dump.objects, "pointers": len(dump.pointers), "read_s": read, "walk_s": walked,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
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


def one(binary: Path, work: Path, mib: int, rounds: int) -> dict[str, float]:
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
        analysis = subprocess.run(
            [sys.executable, "-c", ANALYSE, str(work / f"bench-{mib}.heapdump")],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(analysis.stdout)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100", help="live heaps to dump, in MiB")
    parser.add_argument("--rounds", type=int, default=3, help="dumps per size (median)")
    args = parser.parse_args()
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
