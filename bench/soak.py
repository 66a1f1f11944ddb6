"""Soak: the PDP at half its peak for a long while (`make soak`; not in CI).

Finds the PDP's peak (closed loop, a few seconds), then drives Decide open-loop at half of it
for SOAK_SECONDS (600 by default) in slices of SOAK_SLICE_SECONDS, sampling the PDP's and its
OPA's resident memory after each slice. Goals (issue 21): no errors; RSS growth from the end of
the first slice (warm) to the end at most 5%. Prints one line per slice and the verdict; exits 1
when a goal is missed. Same bundle, mix and generator as `make bench`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from run import ghz, start_opa, start_pdp

GROWTH_GOAL = 0.05


def rss_now_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")))
    ap.add_argument("--slice", type=float, default=float(os.environ.get("SOAK_SLICE_SECONDS", "60")))
    ap.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdp-soak-") as tmp:
        work = Path(tmp)
        opa = start_opa(work)
        proc, addr = start_pdp(opa, work, log_dir=work / "log")
        try:
            assert opa.process is not None
            pids = {"pdp": proc.pid, "opa": opa.process.pid}
            ghz(addr, work, seconds=2, concurrency=args.concurrency, rate=0, explain=0)  # warm-up
            peak = ghz(addr, work, seconds=5, concurrency=args.concurrency, rate=0, explain=0)["rps"]
            rate = peak / 2
            print(f"peak {peak:.0f}/s; soaking at {rate:.0f}/s for {args.seconds:.0f} s")
            errors, count, first, elapsed = 0, 0, None, 0.0
            start = time.monotonic()
            while elapsed < args.seconds:
                secs = min(args.slice, args.seconds - elapsed)
                r = ghz(addr, work, seconds=secs, concurrency=max(args.concurrency, 8), rate=rate, explain=0)
                errors += r["errors"]
                count += r["count"]
                rss = {n: rss_now_mb(p) for n, p in pids.items()}
                first = first or rss
                elapsed = time.monotonic() - start
                print(
                    f"{elapsed:6.0f} s  {r['rps']:6.0f}/s  p50 {r['p50'] / 1e6:6.2f} ms  p99 {r['p99'] / 1e6:6.2f} ms"
                    f"  errors {r['errors']}  RSS PDP {rss['pdp']:.1f} MB, OPA {rss['opa']:.1f} MB",
                    flush=True,
                )
        finally:
            proc.terminate()
            proc.wait(20)
            opa.stop()
    assert first is not None
    growth = {n: (rss[n] - first[n]) / first[n] for n in rss}
    ok = errors == 0 and all(g <= GROWTH_GOAL for g in growth.values())
    print(
        f"{count} decisions, {errors} errors (goal 0); RSS growth after the first slice: PDP {growth['pdp']:+.1%}, "
        f"OPA {growth['opa']:+.1%} (goal <= {GROWTH_GOAL:.0%}): {'met' if ok else 'NOT met'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
