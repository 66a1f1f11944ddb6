"""Decisions/s with budgets on the path vs without (issue 20's goal: at least 0.8x).

    .venv/bin/python bench/budgets_bench.py [--seconds 10] [--concurrency 16] [--rounds 2] [--state-url URL]

The same request (the example payment: an ALLOW) against `pdp serve` with its OPA sidecar, twice:
once with the bundle's budget claims in the decision (three claims per decision: the agent's call
rate, the principal's daily transfer and the agent's payment velocity; limits raised so that every
decision is reserved and none refused), once with the decision's `budgets` forced to `[]` (no usage
to bind, nothing to reserve). The state store is the embedded SQLite default, or PostgreSQL with
--state-url. Rounds alternate (without, with, without, with) so that drift on a shared machine hits
both. Prints one line per round and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # the bench's load generator (ghz) and PDP start-up, shared

from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

EXAMPLE = "fintech-allow-transfer.json"
HUGE = 10**15


def bundle(work: Path, *, budgets: bool) -> Path:
    """The project's bundle; limits out of reach, or no claims in the decision at all."""
    out = work / ("with" if budgets else "without")
    shutil.copytree(run.ROOT / "rego", out, ignore=shutil.ignore_patterns("*_test.rego"))
    data_file = out / "pdp" / "budgets" / "data.json"
    data = json.loads(data_file.read_text())
    c = data["config"]
    c["baseline"]["calls_per_minute"]["payments-agent"] = HUGE
    c["fintech"]["daily_transfer_minor"]["principals"]["bob@bank.example"] = HUGE
    c["fintech"]["velocity"]["agents"]["payments-agent"] = HUGE
    data_file.write_text(json.dumps(data))
    if not budgets:
        decision = out / "pdp" / "decision.rego"
        decision.write_text(decision.read_text().replace('"budgets": _budgets,', '"budgets": [],'))
    return out


def measure(work: Path, *, budgets: bool, seconds: float, concurrency: int, state_url: str) -> float:
    """Decisions/s of one closed-loop run."""
    home = work / f"run-{len(list(work.glob('run-*')))}"
    home.mkdir()
    opa = OpaSidecar(
        opa_bin=str(run.BIN / "opa"),
        bundle=bundle(home, budgets=budgets),
        addr=f"127.0.0.1:{free_port()}",
        log_file=(home / "opa.log").open("ab"),
    )
    opa.start()
    if state_url:
        os.environ["PDP_STATE_URL"] = state_url
    proc, addr = run.start_pdp(opa, home, log_dir=home / "log")
    try:
        with grpc.insecure_channel(addr) as channel:
            req = json_format.Parse((run.ROOT / "examples" / EXAMPLE).read_text(), pb.DecideRequest())
            req.request_id = ""
            answer = pb_grpc.DecisionServiceStub(channel).Decide(req, timeout=10)
            assert answer.outcome == pb.OUTCOME_ALLOW, answer.reasons
        r = run.ghz(addr, home, seconds=seconds, concurrency=concurrency, rate=0, explain=0)
        if r["errors"]:
            raise RuntimeError(f"{r['errors']} calls failed")
        return float(r["rps"])
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        opa.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "10")))
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--state-url", default="", help="PostgreSQL URL (default: the embedded SQLite store)")
    args = p.parse_args()
    run.MIX = [EXAMPLE]  # ghz sends this one request
    figures: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="pdp-bench-budgets-") as tmp:
        for i in range(args.rounds):
            for budgets in (False, True):
                rps = measure(
                    Path(tmp),
                    budgets=budgets,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    state_url=args.state_url,
                )
                figures[budgets].append(rps)
                print(f"round {i + 1}: {'with budgets   ' if budgets else 'without budgets'} {rps:8.1f} decisions/s")
    without, with_ = statistics.median(figures[False]), statistics.median(figures[True])
    store = "PostgreSQL" if args.state_url else "SQLite (embedded default)"
    print(f"median: without {without:.1f}/s, with {with_:.1f}/s, ratio {with_ / without:.2f} (goal >= 0.8); {store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
