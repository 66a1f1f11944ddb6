"""What `pdp mcp-proxy` adds to a tools/call: the same read, direct and through the proxy.

The SDK's MCP client calls `read_text_file` on the real npm filesystem server, first directly, then
through the proxy (one Decide, record verification and one ReportOutcome per call) in front of a
`pdp serve` and an OPA with the project's bundle. Serial calls, one session each; p50/p99 per call
and the difference. Results: a table on stdout and JSON in bench/results/mcp.json.

    PDP_OPA_BIN=.bin/opa .venv/bin/python bench/mcp_bench.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from run import start_pdp  # bench/run.py

from pdp.sidecar import OpaSidecar, free_port

ROOT = Path(__file__).resolve().parent.parent
FS_SERVER = ROOT / ".mcp-servers" / "node_modules" / ".bin" / "mcp-server-filesystem"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(params: StdioServerParameters, path: Path, calls: int, warmup: int) -> list[float]:
    async def run() -> list[float]:
        took = []
        async with Client(params, read_timeout_seconds=30) as client:
            for i in range(warmup + calls):
                t = time.perf_counter()
                result = await client.call_tool("read_text_file", {"path": str(path)})
                if i >= warmup:
                    took.append(time.perf_counter() - t)
                assert not result.is_error, result
        return took

    return anyio.run(run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()
    if not FS_SERVER.exists():
        raise SystemExit("no filesystem server: run `make mcp-servers`")
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp_name:
        tmp = Path(tmp_name)
        files = tmp / "files"
        files.mkdir()
        target = files / "notes.txt"
        target.write_text("quarterly numbers\n" * 64)
        bundle = tmp / "bundle"
        shutil.copytree(ROOT / "rego", bundle)
        pack = bundle / "pdp" / "packs" / "mcp" / "data.json"
        data = json.loads(pack.read_text())
        data["config"]["servers"]["filesystem"]["roots"] = [str(files)]
        pack.write_text(json.dumps(data))
        opa = OpaSidecar(
            opa_bin=os.environ.get("PDP_OPA_BIN", str(ROOT / ".bin" / "opa")),
            bundle=bundle,
            addr=f"127.0.0.1:{free_port()}",
        )
        opa.start()
        pdp, addr = start_pdp(opa, tmp, log_dir=tmp / "log")  # bench/run.py's: waits until it serves
        try:
            direct = StdioServerParameters(command=str(FS_SERVER), args=[str(files)])
            proxied = StdioServerParameters(
                command=sys.executable,
                args=[
                    *("-m", "pdp", "mcp-proxy", "--agent", "coding-agent", "--agent-version", "1.0.0"),
                    *("--pdp", addr, "--mapping", str(ROOT / "examples/mcp/filesystem.json")),
                    *("--", str(FS_SERVER), str(files)),
                ],
            )
            d = measure(direct, target, args.calls, args.warmup)
            p = measure(proxied, target, args.calls, args.warmup)
        finally:
            pdp.terminate()
            pdp.wait(30)
            opa.stop()
    ms = 1000.0
    rows = {
        "direct": {
            "p50_ms": percentile(d, 0.5) * ms,
            "p99_ms": percentile(d, 0.99) * ms,
            "mean_ms": statistics.mean(d) * ms,
        },
        "proxied": {
            "p50_ms": percentile(p, 0.5) * ms,
            "p99_ms": percentile(p, 0.99) * ms,
            "mean_ms": statistics.mean(p) * ms,
        },
    }
    rows["added"] = {k: rows["proxied"][k] - rows["direct"][k] for k in rows["direct"]}
    print(f"MCP tools/call read_text_file, {args.calls} serial calls (after {args.warmup} warm-up)")
    print(f"{'':10} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, r in rows.items():
        print(f"{name:10} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['mean_ms']:9.2f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "mcp.json").write_text(json.dumps({"calls": args.calls, **rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
