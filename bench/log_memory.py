"""The decision log's resident memory per entry, and what a proof costs, as the log grows.

In a fresh process: a Recorder on an empty log (as `pdp serve` opens it), then N signed decision
entries appended in batches of 10 and indexed by decision id as Recorder.record_decisions does;
after each 100k, the RSS growth since the start (bytes an entry) and the time of an inclusion and
a consistency proof at that size. Compare two trees with
``PYTHONPATH=<tree> .venv/bin/python bench/log_memory.py --entries 200000``.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORIGIN = "bench.example/log-memory"
_CALLER = {"authenticated": True, "uri_sans": ["spiffe://bench.example/pep"]}


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _maker(ring: Any, ids: list[str]) -> Callable[[int], bytes]:
    from pdp import records

    def make(i: int) -> bytes:
        ids.append(str(uuid.uuid4()))
        claims = {
            "decision_id": ids[-1],
            "pdp": {"type": "decision", "log_index": str(i), "caller": _CALLER},
        }
        return records.sign(claims, ring, typ=records.TYP_DECISION).encode()

    return make


def _index(rec: Any, ids: list[str], indexes: list[int]) -> None:
    """What Recorder.record_decisions does after the append: the decision-id index, in this tree's form."""
    owner = _CALLER["uri_sans"][0]
    if hasattr(rec, "_ids"):  # the index on disk
        rec._ids.add([(d, i, owner) for d, i in zip(ids, indexes, strict=True)])
    else:  # the two dicts of earlier versions
        for d, i in zip(ids, indexes, strict=True):
            rec._index[d] = i
            rec._owner[d] = owner


def measure(directory: Path, entries: int) -> list[dict[str, float]]:
    """In this (fresh) process: a recorder on an empty log, then ``entries`` decisions appended in
    batches of 10 as record_decisions does; RSS and proof times after each 100k (or at the end)."""
    from pdp import keys
    from pdp.recorder import open_recorder

    ring = keys.rotate(directory / "keys")
    rec = open_recorder(
        ring=ring,
        log_dir=directory / "log",
        origin=ORIGIN,
        ttl_s=60,
        mask=(),
        erase=(),
        checkpoint_every=10_000,
        checkpoint_interval_s=3600,
        segment_max_bytes=64 << 20,
    )
    step = min(100_000, entries)
    rows = []
    for _ in range(10):  # warm: allocator pools, SQLite pages, the first segment
        ids: list[str] = []
        _index(rec, ids, rec.log.append_all([_maker(ring, ids)] * 10))
    gc.collect()
    start = rss_bytes()
    for done in range(10, entries + 1, 10):
        ids = []
        _index(rec, ids, rec.log.append_all([_maker(ring, ids)] * 10))
        if done % step == 0:
            gc.collect()
            n = rec.log.size()
            rows.append({"entries": n, "rss_growth": rss_bytes() - start, **_proof_times(rec.log, n)})
    rec.close()
    return rows


def _proof_times(log: Any, n: int) -> dict[str, float]:
    began = time.perf_counter()
    for i in range(20):
        log.inclusion_proof(i * (n // 20), n)
    inclusion = (time.perf_counter() - began) / 20
    began = time.perf_counter()
    for i in range(1, 21):
        log.consistency_proof(i * (n // 21), n)
    return {"inclusion_ms": inclusion * 1e3, "consistency_ms": (time.perf_counter() - began) / 20 * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=200_000)
    ap.add_argument("--dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # the fresh child
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.dir, args.entries)))
        return 0
    with tempfile.TemporaryDirectory(prefix="pdp-log-memory-") as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--measure", "--entries", str(args.entries), "--dir", tmp],
            check=True,
            capture_output=True,
            text=True,
        )
    for r in json.loads(out.stdout.strip().splitlines()[-1]):
        print(
            f"{r['entries']:8d} entries: RSS +{r['rss_growth'] / 1e6:6.1f} MB = {r['rss_growth'] / r['entries']:4.0f} B"
            f" an entry; inclusion proof {r['inclusion_ms']:7.2f} ms, consistency proof {r['consistency_ms']:7.2f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
