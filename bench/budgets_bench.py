"""Decisions/s with budgets on the path vs without (issue 20's goal: at least 0.8x).

    .venv/bin/python bench/budgets_bench.py [--seconds 10] [--concurrency 16] [--rounds 2] [--state-url URL|--postgres]

The same request (the example payment, with the principal token, risk assessment and lineage
attestation a PEP forwards, minted by dev issuers the PDP trusts: an ALLOW) against `pdp serve` with
its OPA sidecar, twice: once with the bundle's budget claims in the decision (three claims per
decision: the agent's call rate, the principal's daily transfer and the agent's payment velocity;
limits raised so that every decision is reserved and none refused), once with the decision's
`budgets` forced to `[]` (no usage to bind, nothing to reserve). The state store is the embedded
SQLite default, or PostgreSQL: at --state-url, or (--postgres) a throwaway cluster on this machine
made as the tests make theirs (tests/postgres.py: Debian's postgresql package, fsync off). Rounds
alternate (without, with, without, with) so that drift on a shared machine hits both. Prints one
line per round, with the CPU milliseconds per decision of the PDP, its OPA and (--postgres) the
database server, and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
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

from pdp import devissuer
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


def request(issuers: Path) -> pb.DecideRequest:
    """The example payment with fresh tokens from the dev issuers (assertions last 5 minutes)."""
    req = json_format.Parse((run.ROOT / "examples" / EXAMPLE).read_text(), pb.DecideRequest())
    req.request_id = ""  # every call a new decision (a repeated request id is answered from the log)
    devissuer.forward_tokens(req, issuers)
    return req


def postgres_cpu_s(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster and its children (backends, writers)."""
    total = run.cpu_s(postmaster)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / run.TICK
    return total


def measure(
    work: Path, *, budgets: bool, seconds: float, concurrency: int, state_url: str, postmaster: int = 0
) -> tuple[float, dict[str, float]]:
    """Decisions/s of one closed-loop run, and CPU ms per decision of the PDP, OPA and PostgreSQL."""
    home = work / f"run-{len(list(work.glob('run-*')))}"
    home.mkdir()
    opa = OpaSidecar(
        opa_bin=str(run.BIN / "opa"),
        bundle=bundle(home, budgets=budgets),
        addr=f"127.0.0.1:{free_port()}",
        log_file=(home / "opa.log").open("ab"),
    )
    opa.start()
    env = {"PDP_TRUST_FILE": str(devissuer.init(work / "issuers"))}
    if state_url:
        env["PDP_STATE_URL"] = state_url
    req = request(work / "issuers")
    run.requests_mix = lambda: [req]  # ghz sends this one request
    proc, addr = run.start_pdp(opa, home, log_dir=home / "log", extra_env=env)
    try:
        with grpc.insecure_channel(addr) as channel:
            answer = pb_grpc.DecisionServiceStub(channel).Decide(req, timeout=10)
            assert answer.outcome == pb.OUTCOME_ALLOW, answer.reasons
        assert opa.process is not None
        pids = {"pdp": proc.pid, "opa": opa.process.pid}
        before = {name: run.cpu_s(pid) for name, pid in pids.items()}
        before["postgres"] = postgres_cpu_s(postmaster) if postmaster else 0.0
        r = run.ghz(addr, home, seconds=seconds, concurrency=concurrency, rate=0, explain=0)
        after = {name: run.cpu_s(pid) for name, pid in pids.items()}  # before the PDP's connections close
        after["postgres"] = postgres_cpu_s(postmaster) if postmaster else 0.0
        if r["errors"]:
            raise RuntimeError(f"{r['errors']} calls failed")
        cpu = {name: (after[name] - before[name]) * 1000 / max(r["count"], 1) for name in after}
        return float(r["rps"]), cpu
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        opa.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "10")))
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("BENCH_CONCURRENCY", "16")))
    p.add_argument("--rounds", type=int, default=2)
    store = p.add_mutually_exclusive_group()
    store.add_argument("--state-url", default="", help="PostgreSQL URL (default: the embedded SQLite store)")
    store.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL server and use it")
    args = p.parse_args()
    figures: dict[bool, list[float]] = {False: [], True: []}
    cpus: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    postmaster = 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pdp-bench-budgets-"))
        if args.postgres:
            sys.path.insert(0, str(run.ROOT))
            from tests.postgres import PostgresServer  # the tests' throwaway cluster

            server = PostgresServer()
            stack.callback(server.remove)
            server.start()
            args.state_url = server.create_database()
            postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
        for i in range(args.rounds):
            for budgets in (False, True):
                rps, cpu = measure(
                    Path(tmp),
                    budgets=budgets,
                    seconds=args.seconds,
                    concurrency=args.concurrency,
                    state_url=args.state_url,
                    postmaster=postmaster,
                )
                figures[budgets].append(rps)
                cpus[budgets].append(cpu)
                print(
                    f"round {i + 1}: {'with budgets   ' if budgets else 'without budgets'} {rps:8.1f} decisions/s;"
                    f" CPU ms per decision: {_cpu(cpu)}"
                )
    without, with_ = statistics.median(figures[False]), statistics.median(figures[True])
    name = "PostgreSQL" if args.state_url else "SQLite (embedded default)"
    print(f"median: without {without:.1f}/s, with {with_:.1f}/s, ratio {with_ / without:.2f} (goal >= 0.8); {name}")
    for budgets in (False, True):
        median = {n: statistics.median(c[n] for c in cpus[budgets]) for n in cpus[budgets][0]}
        print(f"median CPU ms per decision {'with' if budgets else 'without'}: {_cpu(median)}")
    return 0


def _cpu(cpu: dict[str, float]) -> str:
    return ", ".join(f"{n} {ms:.2f}" for n, ms in cpu.items() if n != "postgres" or ms) or "-"


if __name__ == "__main__":
    sys.exit(main())
