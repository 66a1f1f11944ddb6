"""What stalls a request for milliseconds: garbage-collection pauses and fsync outliers.

Runs a PDP in this process (so that ``gc.callbacks`` sees every collection) at a fixed rate,
once as created and once after ``gc.collect(); gc.freeze()`` (what ``pdp serve`` does after
start-up), and prints each generation's collections and pauses beside the run's p50/p99. Then
times ``fdatasync`` of small appends in a fresh directory on the same disk as the log: the floor
under the durable log's tail. Usage: ``python bench/tail.py [rate] [seconds]``.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from run import ghz, start_opa

from pdp import keys
from pdp.config import Settings
from pdp.grpc.app import create_server


def gc_run(work: Path, *, freeze: bool, rate: float, seconds: float) -> None:
    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def timed(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])

    opa = start_opa(work)
    keys.ensure(work / "keys")
    settings = Settings(
        listen="127.0.0.1:0", opa_url=opa.url, key_dir=work / "keys", log_dir=work / f"log-{freeze}", log_level="ERROR"
    )
    server, port = create_server(settings)
    server.start()
    try:
        gc.collect()
        if freeze:
            gc.freeze()
        ghz(f"127.0.0.1:{port}", work, seconds=1, concurrency=16, rate=rate, explain=0)  # warm-up
        gc.callbacks.append(timed)
        r = ghz(f"127.0.0.1:{port}", work, seconds=seconds, concurrency=16, rate=rate, explain=0)
        gc.callbacks.remove(timed)
    finally:
        server.stop(1)
        opa.stop()
        gc.unfreeze()
    print(
        f"{'gc.freeze()' if freeze else 'no freeze':<12} {r['count']} decisions at {rate:.0f}/s: "
        f"p50 {r['p50'] / 1e6:.2f} ms, p99 {r['p99'] / 1e6:.2f} ms"
    )
    for generation, xs in pauses.items():
        if xs:
            print(
                f"{'':<12} gen {generation}: {len(xs)} collections, mean {1e3 * statistics.fmean(xs):.2f} ms, "
                f"max {1e3 * max(xs):.2f} ms"
            )


def fsync_floor(directory: Path, n: int = 200) -> None:
    took = []
    fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            os.write(fd, b"x" * 600)
            began = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - began)
    finally:
        os.close(fd)
    took.sort()
    print(
        f"fdatasync of a 600-byte append ({n}x): p50 {1e3 * took[n // 2]:.2f} ms, "
        f"p99 {1e3 * took[int(n * 0.99)]:.2f} ms, max {1e3 * took[-1]:.2f} ms"
    )


def main() -> int:
    rate = float(sys.argv[1]) if len(sys.argv) > 1 else 150
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory(prefix="pdp-tail-") as tmp:
        for freeze in (False, True):
            gc_run(Path(tmp), freeze=freeze, rate=rate, seconds=seconds)
        fsync_floor(Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
