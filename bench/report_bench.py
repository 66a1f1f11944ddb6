"""How long `pdp report` takes on a large decision log (goal: 100k entries in under a minute).

    .venv/bin/python bench/report_bench.py [ENTRIES] [--keep DIR]

Builds a log of ENTRIES entries (default 100,000) the fast way, through the PDP's own recorder
and log (real Ed25519 signatures, real group-committed segments and checkpoints; no OPA: the
verdicts are a fixed mix of allow / deny / require_approval / fail-closed with outcome reports),
then times the `pdp report` command on it (verify everything, compute, render, evidence pack)
and prints the wall time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pdp import keys
from pdp.authz import identity_of
from pdp.recorder import open_recorder
from pdp.schema import DecisionClaims, DecisionRecord, OutcomeReport

ROOT = Path(__file__).resolve().parent.parent
AGENTS = [f"agent-{i:03d}" for i in range(40)]
TOOLS = ["crm.lookup", "payments.transfer", "ehr.read", "files.write", "email.send", "db.query"]
DENY_CODES = ["tool.not_granted", "data.clearance_exceeded", "fintech.sanctioned_counterparty", "risk.critical"]
ROUND = 1000  # entries per round: decisions in one group commit, then outcome reports
OUTCOMES_PER_ROUND = 150
CALLER = {"authenticated": True, "peer": "ipv4:10.0.0.7:51234", "subject": "pep-1", "sans": []}
EXECUTED = OutcomeReport(status="executed", result={}, impact={})


def _claims(rng: random.Random, when: float) -> tuple[DecisionRecord, dict[str, Any]]:
    """One decision's record and input, shaped like the pipeline's (pdp/context.py, pdp/decide.py)."""
    agent, tool = rng.choice(AGENTS), rng.choice(TOOLS)
    roll = rng.random()
    if roll < 0.70:
        outcome, reasons, code = "allow", ["tool.granted"] + (["approval.accepted"] if roll < 0.02 else []), ""
    elif roll < 0.85:
        outcome, reasons, code = "deny", [rng.choice(DENY_CODES)], ""
    elif roll < 0.95:
        outcome, reasons, code = "require_approval", ["risk.high"], ""
    else:
        outcome, reasons, code = "deny", ["pdp.opa_unavailable"], "pdp.opa_unavailable"
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="microseconds")
    caller = CALLER
    principal = f"user-{rng.randrange(500)}"
    lineage = [{"issuer": "lineage.local", "source": "crm"}] if roll < 0.5 else []
    input_doc = {
        "bound": {
            "request_id": "",
            "time": stamp.replace("+00:00", "Z"),
            "caller": caller,
            "action_digest": "sha256:" + "ab" * 32,
            "approvals": [],
            "usage": {},
        },
        "agent": {"id": agent},
        "action": {"tool": tool, "operation": "read", "arguments": {"customer_id": f"C-{rng.randrange(10**6)}"}},
        "resource": {"type": "customer_record", "id": "C-1"},
        "verified": {"lineage": lineage},
        "asserted": {
            "agent": {"version": "1.4.2", "owner": "team-a", "model": "m-large"},
            "principal": {"id": principal, "type": "user", "roles": ["analyst"], "tenant": "t1"},
            "resource": {"classification": "confidential"},
            "environment": {"name": "production", "region": "eu-west-1"},
        },
    }
    record = DecisionRecord(
        decision_id=str(uuid.uuid4()),
        path="pdp/decision",
        result={"outcome": outcome, "reasons": [{"code": c} for c in reasons], "obligations": []},
        bundles={"rego": {"revision": "2026.11.24-2"}},
        timestamp=input_doc["bound"]["time"],
        metrics={
            "timer_rego_query_eval_ns": 0 if code else rng.randrange(80_000, 900_000),
            "timer_pdp_opa_roundtrip_ns": 0 if code else rng.randrange(300_000, 3_000_000),
        },
        pdp=DecisionClaims(
            request_id="",
            request_digest="sha256:" + "cd" * 32,
            caller=caller,
            aud="pep-1",
            agent={"id": agent, **input_doc["asserted"]["agent"]},
            tool=tool,
            principal=principal,
            action_digest=input_doc["bound"]["action_digest"],
            trust={"principal": None, "risk": None, "lineage": lineage, "rejected": []},
            facts=None if code else {"resource": {"classification": "confidential"}},
            outcome=outcome,
            reasons=tuple(reasons),
            obligations=(),
            indeterminate=bool(code),
            error_code=code,
            explanation_digest="",
            opa_version="1.22.2",
        ),
    )
    return record, input_doc


def build(log_dir: Path, key_dir: Path, entries: int) -> None:
    """Writes ``entries`` entries: per round, decisions in one group commit, then outcome reports."""
    ring = keys.ensure(key_dir)
    recorder = open_recorder(
        ring=ring,
        log_dir=log_dir,
        origin="bench.local/decisions",
        ttl_s=300,
        mask=("/asserted/principal/id",),
        erase=(),
        checkpoint_every=1000,
        checkpoint_interval_s=3600,
        segment_max_bytes=64 << 20,
    )
    rng = random.Random(19)
    start = time.time() - 7 * 86400
    step = 7 * 86400 / (entries * (ROUND - OUTCOMES_PER_ROUND) / ROUND)  # the decisions span a week
    written = decided = 0
    try:
        while written < entries:
            n = min(ROUND, entries - written)
            reports = min(OUTCOMES_PER_ROUND, n // 2)
            made = [_claims(rng, start + (decided + i) * step) for i in range(n - reports)]
            recorder.record_decisions(made)
            decided += len(made)
            allows = [r.decision_id for r, _ in made if r.pdp.outcome == "allow"]
            for did in allows[:reports]:
                recorder.record_outcome(decision_id=did, report=EXECUTED, reporter="pep-1", owner=identity_of(CALLER))
            written += len(made) + min(reports, len(allows))
            print(f"\rbuilding: {written}/{entries}", end="", file=sys.stderr)
    finally:
        recorder.close()
        print(file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("entries", type=int, nargs="?", default=100_000)
    parser.add_argument("--keep", type=Path, help="build the log in this directory and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pdp-report-bench-") as tmp:
        work = args.keep or Path(tmp)
        began = time.perf_counter()
        build(work / "log", work / "keys", args.entries)
        print(f"built {args.entries} entries in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        size = sum(p.stat().st_size for p in (work / "log").iterdir())
        command = [
            str(ROOT / ".venv" / "bin" / "pdp"),
            "report",
            str(work / "log"),
            "--jwks",
            str(work / "keys" / "jwks.json"),
            "--bundle",
            str(ROOT / "rego"),
            "--evidence",
            "--out",
            str(work / "report"),
        ]
        env = {**os.environ, "PDP_OPA_BIN": os.environ.get("PDP_OPA_BIN", str(ROOT / ".bin" / "opa"))}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(command, check=True, env=env)
        took = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # On a shared machine the wall time swings with the load; CPU time is the figure that does not.
    print(
        f"pdp report on {args.entries} entries ({size / 1e6:.0f} MB of log): {took:.1f} s wall, {cpu:.1f} s CPU, "
        f"peak RSS {after.ru_maxrss / 1024:.0f} MB, load average {os.getloadavg()[0]:.1f} "
        f"({'within' if took < 60 else 'OVER'} the 60 s goal)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
