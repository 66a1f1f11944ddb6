"""Policy lifecycle costs on this machine (part of `make bench`).

* **replay**: a 100k-entry decision log written by a real PDP (DecideBatch over gRPC, in front of
  OPA serving `rego/`), then `pdp replay`'s two phases on it: verifying the log (every signature,
  index, checkpoint) and re-evaluating every decision against a candidate (the same bundle, so
  nothing changes) on a real OPA in batches. Prints decisions/s of each.
* **shadow**: `Decide` throughput, closed loop at a fixed concurrency over gRPC: policy-driven
  masking off and on (one more OPA query per decision), then the shadow candidate on (every
  decision, `PDP_SHADOW_SAMPLE=1`, its own OPA on the same two cores).

`--entries` and `--seconds` make it shorter. Results: stdout and bench/results/lifecycle.json.
Figures on a shared 2-core machine are noisy: read ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp import keys
from pdp.config import Settings
from pdp.policy import replay
from pdp.server import create_server
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
OPA = str(ROOT / ".bin" / "opa")
RESULTS = ROOT / "bench" / "results"
MIX = sorted(p.name for p in (ROOT / "examples").glob("*.json"))


def requests(n: int) -> list[pb.DecideRequest]:
    """``n`` requests cycling through every example, each with its own request id."""
    base = [json_format.Parse((ROOT / "examples" / m).read_text(), pb.DecideRequest()) for m in MIX]
    out = []
    for i in range(n):
        r = pb.DecideRequest()
        r.CopyFrom(base[i % len(base)])
        r.request_id = f"bench-{uuid.uuid4().hex}"
        out.append(r)
    return out


def start_pdp(home: Path, opa_url: str, **overrides: Any) -> tuple[Any, grpc.Channel]:
    settings = dataclasses.replace(
        Settings(
            listen="127.0.0.1:0", opa_url=opa_url, opa_timeout_s=30.0, key_dir=home / "keys", log_dir=home / "log"
        ),
        **overrides,
    )
    keys.ensure(home / "keys")
    server, port = create_server(settings)
    server.start()
    return server, grpc.insecure_channel(f"127.0.0.1:{port}")


def write_log(home: Path, opa_url: str, entries: int) -> float:
    """Fills a PDP's log with ``entries`` decisions (DecideBatch of 64, two client threads); returns seconds."""
    server, channel = start_pdp(home, opa_url, max_batch=64)
    stub = pb_grpc.DecisionServiceStub(channel)
    todo = requests(entries)
    chunks = [todo[i : i + 64] for i in range(0, len(todo), 64)]
    start = time.perf_counter()

    def work(part: list[list[pb.DecideRequest]]) -> None:
        for chunk in part:
            stub.DecideBatch(pb.DecideBatchRequest(requests=chunk), timeout=60)

    threads = [threading.Thread(target=work, args=(chunks[k::2],)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    channel.close()
    server.stop(5)
    return took


def bench_replay(entries: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as opa_log:
        home = Path(tmp)
        with OpaSidecar(opa_bin=OPA, bundle=ROOT / "rego", addr=f"127.0.0.1:{free_port()}", log_file=opa_log) as opa:
            wrote = write_log(home, opa.url, entries)
            print(f"wrote {entries} decisions through the PDP in {wrote:.1f}s ({entries / wrote:,.0f}/s)")
            jwks = json.loads((home / "keys" / "jwks.json").read_text())
            t0 = time.perf_counter()
            decisions, skipped = replay.read_log(home / "log", jwks=jwks)
            verified = time.perf_counter() - t0
            impact = replay.replay(decisions, opa_url=opa.url)
    figures = {
        "entries": entries,
        "verify_and_read_s": round(verified, 2),
        "verify_per_s": round(entries / verified),
        "replay_s": round(impact.seconds, 2),
        "replay_per_s": round(impact.replayed / impact.seconds),
        "end_to_end_per_s": round(impact.replayed / (verified + impact.seconds)),
        "changed": impact.changed,
        "changed_on_masked_input": impact.changes_on_masked_input,
        "masked_inputs": impact.masked_inputs,
        "skipped": skipped,
    }
    print(
        f"replay of {entries} entries: verify+read {verified:.1f}s ({figures['verify_per_s']:,}/s), "
        f"re-evaluate {impact.seconds:.1f}s ({figures['replay_per_s']:,}/s), "
        f"end to end {figures['end_to_end_per_s']:,}/s; {impact.changed} changed, all but "
        f"{impact.changed - impact.changes_on_masked_input} on masked input (identical bundle: masking is the cause)"
    )
    return figures


def closed_loop(stub: Any, seconds: float, concurrency: int) -> float:
    """Decide calls per second at ``concurrency``; fails on any RPC error."""
    stop = threading.Event()
    counts = [0] * concurrency
    reqs = requests(512)

    def work(k: int) -> None:
        i = k
        while not stop.is_set():
            r = pb.DecideRequest()
            r.CopyFrom(reqs[i % len(reqs)])
            r.request_id = f"b-{k}-{i}"
            stub.Decide(r, timeout=10)
            counts[k] += 1
            i += concurrency

    threads = [threading.Thread(target=work, args=(k,)) for k in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)  # the measurement window itself, not a synchronisation
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def bench_shadow(seconds: float, concurrency: int) -> dict[str, Any] | None:
    if "shadow_opa_url" not in {f.name for f in dataclasses.fields(Settings)}:
        print("shadow: this PDP has no shadow candidate setting; skipped")
        return None
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as opa_log:
        addr = f"127.0.0.1:{free_port()}"
        shadow_addr = f"127.0.0.1:{free_port()}"
        with (
            OpaSidecar(opa_bin=OPA, bundle=ROOT / "rego", addr=addr, log_file=opa_log) as live,
            OpaSidecar(opa_bin=OPA, bundle=ROOT / "rego", addr=shadow_addr, log_file=opa_log) as cand,
        ):
            modes: dict[str, Callable[[], dict[str, Any]]] = {
                "masking off, shadow off": lambda: {"mask_path": ""},
                "masking on, shadow off": lambda: {},
                "masking on, shadow on": lambda: {"shadow_opa_url": cand.url, "shadow_sample": 1.0},
            }
            for name, extra in modes.items():
                server, channel = start_pdp(Path(tmp) / name, live.url, **extra())
                rps = closed_loop(pb_grpc.DecisionServiceStub(channel), seconds, concurrency)
                channel.close()
                server.stop(5)
                out[name] = round(rps)
                print(f"Decide, {name}: {rps:,.0f}/s at concurrency {concurrency}")
    base, masked, shadowed = out.values()
    out["masking_cost_ratio"] = round(masked / base, 3)
    out["shadow_on_off_ratio"] = round(shadowed / masked, 3)
    print(f"masking on/off {out['masking_cost_ratio']}, shadow on/off {out['shadow_on_off_ratio']}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--entries", type=int, default=100_000, help="decisions in the replayed log")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per shadow measurement")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--only", choices=["replay", "shadow"], help="run one of the two")
    args = p.parse_args()
    results: dict[str, Any] = {}
    if args.only in (None, "replay"):
        results["replay"] = bench_replay(args.entries)
    if args.only in (None, "shadow"):
        results["shadow"] = bench_shadow(args.seconds, args.concurrency)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "lifecycle.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
