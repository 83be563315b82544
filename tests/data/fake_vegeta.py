"""A stand-in for `vegeta attack | vegeta encode --to json` in tests: GETs TARGET/PATH from a
few threads for DURATION seconds and writes one vegeta JSON result line per request to OUT.

    python fake_vegeta.py TARGET PATH DURATION OUT
"""

from __future__ import annotations

import datetime
import json
import sys
import threading
import time
import urllib.error
import urllib.request


def main() -> int:
    target, path, duration, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    lines: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + duration
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def worker(n: int) -> None:
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            stamp = datetime.datetime.now(datetime.timezone.utc)
            start = time.perf_counter_ns()
            code, error = 0, ""
            try:
                with opener.open(f"{target}{path.replace('{seq}', f'{n}-{seq}')}", timeout=5) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except OSError as e:
                error = str(e)
            line = json.dumps(
                {
                    "attack": "test",
                    "seq": seq,
                    "code": code,
                    "timestamp": stamp.isoformat().replace("+00:00", "Z"),
                    "latency": time.perf_counter_ns() - start,
                    "bytes_out": 0,
                    "bytes_in": 0,
                    "error": error,
                    "body": None,
                }
            )
            with lock:
                lines.append(line)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
