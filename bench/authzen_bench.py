"""AuthZEN evaluation throughput beside gRPC Decide: one PDP process serving both faces.

    .venv/bin/python bench/authzen_bench.py [--seconds 8] [--concurrency 16]

The same request mix as `make bench` (the allow / deny / require_approval examples), sent as
gRPC `Decide` and as AuthZEN `POST /access/v1/evaluation` bodies that the default mapping turns
into the same DecideRequests (checked first: same outcome for each), to one `pdp serve` with
`PDP_HTTP_LISTEN` on, in front of one OPA. Then the batch paths: `DecideBatch` of 10 and an
AuthZEN `evaluations` call of 10. Both faces are driven by the same closed-loop Python load
generator (threads; a gRPC channel, or a keep-alive HTTP/1.1 connection, per thread), so the
generator's own cost weighs on both alike. Prints decisions/s, p50/p99 and CPU ms per decision
(PDP + OPA), and the AuthZEN/gRPC ratios; the goal is ≥ 0.8.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp import keys
from pdp.http import authzen
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BATCH, cpu_s, requests_mix, start_opa  # the bench's own helpers, one copy

Call = Callable[[int], int]  # i-th call → decisions made


def to_authzen(request: pb.DecideRequest) -> dict[str, Any]:
    """The AuthZEN evaluation that the default mapping turns back into ``request``'s context
    (a request without a resource gets type and id ``none``: AuthZEN requires both), tokens
    included: the principal token as ``subject.properties.token``, the others in ``context``."""
    c = json_format.MessageToDict(request.context, preserving_proto_field_name=True)
    agent, principal, action = c["agent"], c.get("principal", {}), c["action"]
    carried = ("environment", "risk", "lineage", "risk_assertion", "lineage_attestations")
    resource, ctx = c.get("resource", {}), {k: c[k] for k in carried if k in c}
    if "classification" in resource:
        resource["classification"] = resource["classification"].removeprefix("CLASSIFICATION_").lower()
    subject_props = {f"agent_{k}": v for k, v in agent.items()} | {
        k: principal[k] for k in ("roles", "tenant") if k in principal
    }
    if "principal_token" in c:
        subject_props["token"] = c["principal_token"]
    return {
        "subject": {"type": principal.get("type", "user"), "id": principal["id"], "properties": subject_props},
        "action": {"name": action["tool"], "properties": {k: v for k, v in action.items() if k != "tool"}},
        "resource": {
            "type": resource.pop("type", "none"),
            "id": resource.pop("id", "none"),
            "properties": resource,
        },
        "context": ctx,
    }


def start_pdp(opa: OpaSidecar, work: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """`pdp serve` with gRPC and HTTP on, in front of ``opa``; returns it, the gRPC address, the HTTP port."""
    grpc_port, http_port = free_port(), free_port()
    keys.ensure(work / "keys")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
        "PDP_LISTEN": f"127.0.0.1:{grpc_port}",
        "PDP_HTTP_LISTEN": f"127.0.0.1:{http_port}",
        "PDP_OPA_URL": opa.url,
        "PDP_KEY_DIR": str(work / "keys"),
        "PDP_DECIDE_RATE": "0",  # the per-caller rate limit would cap the load generator, one caller
        "PDP_LOG_DIR": str(work / "log"),
        "PDP_LOG_LEVEL": "WARNING",
        "PDP_OPA_TIMEOUT_MS": "2000",
    }
    log = (work / "pdp.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "pdp", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
            conn.request("GET", "/.well-known/authzen-configuration")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, f"127.0.0.1:{grpc_port}", http_port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the PDP did not start: {(work / 'pdp.log').read_text()[-2000:]}")


def closed_loop(make_call: Callable[[], Call], *, seconds: float, concurrency: int) -> dict[str, float]:
    """``concurrency`` threads, each calling as fast as answers come, for ``seconds``."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    decisions = [0] * concurrency
    errors = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop_at = [0.0]

    def worker(n: int) -> None:
        call = make_call()
        start.wait()
        i = 0
        while time.monotonic() < stop_at[0]:
            t = time.perf_counter()
            try:
                decisions[n] += call(i)
            except Exception:  # a failed call is counted, never retried
                errors[n] += 1
            latencies[n].append(time.perf_counter() - t)
            i += 1

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(concurrency)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    start.wait()
    began = time.monotonic()
    for t in threads:
        t.join()
    took = time.monotonic() - began
    lat = sorted(x for per in latencies for x in per)
    return {
        "decisions_per_s": sum(decisions) / took,
        "calls": len(lat),
        "errors": sum(errors),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
        "mean_ms": 1000 * statistics.fmean(lat) if lat else 0.0,
    }


def grpc_calls(addr: str, mix: list[pb.DecideRequest], *, batch: int) -> Callable[[], Call]:
    def make() -> Call:
        stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(addr))
        batches = [pb.DecideBatchRequest(requests=[mix[(i + k) % len(mix)] for k in range(batch)]) for i in range(3)]

        def call(i: int) -> int:
            if batch == 1:
                stub.Decide(mix[i % len(mix)], timeout=10)
                return 1
            return len(stub.DecideBatch(batches[i % 3], timeout=10).responses)

        return call

    return make


def http_calls(port: int, bodies: list[dict[str, Any]], *, batch: int) -> Callable[[], Call]:
    path = "/access/v1/evaluation" if batch == 1 else "/access/v1/evaluations"
    if batch == 1:
        raw = [json.dumps(b).encode() for b in bodies]
    else:
        raw = [
            json.dumps({"evaluations": [bodies[(i + k) % len(bodies)] for k in range(batch)]}).encode()
            for i in range(3)
        ]
    headers = {"Content-Type": "application/json"}

    def make() -> Call:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def call(i: int) -> int:
            conn.request("POST", path, raw[i % len(raw)], headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
            return batch

        return call

    return make


def check_same_outcomes(addr: str, port: int, mix: list[pb.DecideRequest], bodies: list[dict[str, Any]]) -> list[str]:
    """The outcome of each example on both faces; they must agree, or the comparison is void."""
    stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(addr))
    outcomes = []
    for req, body in zip(mix, bodies, strict=True):
        via_grpc = pb.Outcome.Name(stub.Decide(req, timeout=10).outcome).removeprefix("OUTCOME_").lower()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/access/v1/evaluation", json.dumps(body), {"Content-Type": "application/json"})
        via_http = json.loads(conn.getresponse().read())["context"]["outcome"]
        conn.close()
        if via_grpc != via_http:
            raise RuntimeError(f"{req.context.action.tool}: gRPC says {via_grpc}, AuthZEN says {via_http}")
        outcomes.append(via_grpc)
    return outcomes


def bench_authzen(*, seconds: float, concurrency: int, work: Path) -> dict[str, Any]:
    """Measures AuthZEN evaluation(s) beside gRPC Decide(Batch) on one PDP; returns the figures."""
    mix = requests_mix()
    bodies = [to_authzen(r) for r in mix]
    assert all(
        authzen.Mapping.default().to_request(b).context.agent == r.context.agent
        and authzen.Mapping.default().to_request(b).context.principal_token == r.context.principal_token
        for b, r in zip(bodies, mix, strict=True)
    )
    opa = start_opa(work)
    proc, addr, port = start_pdp(opa, work)
    rows: dict[str, Any] = {}
    try:
        rows["outcomes"] = check_same_outcomes(addr, port, mix, bodies)
        targets = {
            "gRPC Decide": grpc_calls(addr, mix, batch=1),
            "AuthZEN evaluation": http_calls(port, bodies, batch=1),
            f"gRPC DecideBatch x{BATCH}": grpc_calls(addr, mix, batch=BATCH),
            f"AuthZEN evaluations x{BATCH}": http_calls(port, bodies, batch=BATCH),
        }
        for name, make in targets.items():
            closed_loop(make, seconds=1, concurrency=concurrency)  # warm-up
            cpu0, gen0 = cpu_s(proc.pid) + cpu_s(opa.process.pid), _self_cpu_s()
            r = closed_loop(make, seconds=seconds, concurrency=concurrency)
            cpu, gen = cpu_s(proc.pid) + cpu_s(opa.process.pid) - cpu0, _self_cpu_s() - gen0
            made = max(1.0, r["decisions_per_s"] * seconds)
            r["cpu_ms_per_decision"] = 1000 * cpu / made
            r["loadgen_cpu_ms_per_decision"] = 1000 * gen / made
            rows[name] = r
    finally:
        proc.terminate()
        proc.wait(30)
        opa.stop()
    rows["ratio_evaluation_vs_decide"] = (
        rows["AuthZEN evaluation"]["decisions_per_s"] / rows["gRPC Decide"]["decisions_per_s"]
    )
    rows["ratio_evaluations_vs_batch"] = (
        rows[f"AuthZEN evaluations x{BATCH}"]["decisions_per_s"] / rows[f"gRPC DecideBatch x{BATCH}"]["decisions_per_s"]
    )
    return rows


def _self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def report(rows: dict[str, Any]) -> str:
    lines = [
        f"{'target':<28} {'decisions/s':>12} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU ms/decision':>16} {'(load gen)':>10} {'errors':>7}",
    ]
    for name, r in rows.items():
        if isinstance(r, dict):
            lines.append(
                f"{name:<28} {r['decisions_per_s']:>12.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                f"{r['cpu_ms_per_decision']:>16.2f} {r['loadgen_cpu_ms_per_decision']:>10.2f} {r['errors']:>7}"
            )
    lines.append(f"AuthZEN evaluation / gRPC Decide: {rows['ratio_evaluation_vs_decide']:.2f} (goal >= 0.8)")
    lines.append(f"AuthZEN evaluations / DecideBatch (x{BATCH}): {rows['ratio_evaluations_vs_batch']:.2f}")
    lines.append(f"outcomes of the mix on both faces: {', '.join(rows['outcomes'])}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "8")))
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdp-authzen-bench-") as tmp:
        rows = bench_authzen(seconds=args.seconds, concurrency=args.concurrency, work=Path(tmp))
    print(report(rows))
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "authzen.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
