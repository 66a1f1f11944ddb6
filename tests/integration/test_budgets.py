"""Budgets and the kill switch across replicas: two ``pdp serve`` processes, one real OPA, one
shared state store — a real PostgreSQL (throwaway cluster) or the embedded SQLite default.

What a user notices: concurrent payments that together exceed a budget get exactly as many
ALLOWs as fit (counted from both replicas' verified logs); a failed outcome gives its amount back;
a suspension made on one replica stops the agent on the other within a second, rejects the agent's
open escalations on every replica, and is a signed record in the log; a state store that is down
makes budgeted decisions fail closed.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.grpc.approvals import DEV_LOGIN_METADATA
from pdp.ledger.audit import verify_log
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import admin_pb2 as admin_pb
from pdp.v1 import admin_pb2_grpc as admin_grpc
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import BUNDLE, PDP_COMMAND, ROOT, claims_of, load_request, serve_env, start_child, wait_for
from tests.postgres import PostgresServer

VELOCITY = 5  # payments the payments agent may make per hour in these tests
LOOKUP = "allow-crm-lookup.json"  # the support bot's CRM lookup: allowed, and under no budget
NEW_BENEFICIARY = "fintech-require-approval-new-beneficiary.json"  # the payments agent: one payments_approver
BREAK_GLASS = "healthcare-require-approval-break-glass.json"  # the clinical assistant: another agent
APPROVER = "dan.meyer@bank.example"  # a payments_approver in the bundle's approver registry


class Replica:
    """One ``pdp serve`` child: its port, home (key, log), stubs."""

    def __init__(self, home: Path, port: int, process: subprocess.Popen[str]) -> None:
        self.home, self.port, self.process = home, port, process
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.DecisionServiceStub(self.channel)
        self.admin = admin_grpc.AdminServiceStub(self.channel)
        self.desk = apb_grpc.ApprovalServiceStub(self.channel)  # callers name themselves: the dev login

    def decide(self, example: str = "fintech-allow-transfer.json") -> pb.DecideResponse:
        response: pb.DecideResponse = self.stub.Decide(load_request(example), timeout=10)
        return response

    def records(self) -> list[dict[str, Any]]:
        """Every record in this replica's log, after `pdp audit verify`'s checks pass."""
        jwks = json.loads((self.home / "keys" / "jwks.json").read_text())
        found: list[dict[str, Any]] = []
        verify_log(self.home / "log", jwks=jwks, on_entry=lambda _i, entry: found.append(claims_of(entry.decode())))
        return found

    def audit(self) -> str:
        done = subprocess.run(
            [*PDP_COMMAND, "audit", "verify", str(self.home / "log"), "--jwks", str(self.home / "keys" / "jwks.json")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def stop(self) -> None:
        self.channel.close()
        self.process.terminate()
        self.process.wait(timeout=20)


def _bundle(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The project's bundle with its budget settings (rego/pdp/budgets/data.json) edited."""
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("*_test.rego"))
    data_file = bundle / "pdp" / "budgets" / "data.json"
    data = json.loads(data_file.read_text())
    edit(data["config"])
    data_file.write_text(json.dumps(data))
    return bundle


@pytest.fixture
def budget_bundle(tmp_path: Path) -> Path:
    """The project's bundle with the payments agent's velocity set to :data:`VELOCITY` per hour."""
    return _bundle(tmp_path, lambda c: c["fintech"]["velocity"]["agents"].update({"payments-agent": VELOCITY}))


@pytest.fixture(params=["postgres", "sqlite"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The shared state store's variable: a fresh PostgreSQL database, or one SQLite directory."""
    if request.param == "postgres":
        return {"PDP_STATE_URL": request.getfixturevalue("postgres_url")}
    return {"PDP_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture
def replicas(
    budget_bundle: Path, state: dict[str, str], start_opa: Callable[..., OpaSidecar], tmp_path: Path
) -> Iterator[list[Replica]]:
    """Two PDP replicas, each with its own key and log, sharing one OPA and one state store."""
    opa = start_opa(bundle=budget_bundle)
    started: list[Replica] = []
    for name in ("a", "b"):
        home = tmp_path / name
        port = free_port()
        env = serve_env(
            home, port=port, opa_url=opa.url, PDP_LOG_ORIGIN=f"pdp.test/{name}", PDP_APPROVALS_DEV_LOGIN="1", **state
        )
        started.append(Replica(home, port, start_child("serve", env=env, log=home / "pdp.out")))
    yield started
    for r in started:
        r.stop()


def _race(replicas: list[Replica], n: int) -> list[pb.DecideResponse]:
    """``n`` payments at once, spread over the replicas."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: replicas[i % len(replicas)].decide(), range(n)))


def _logged_allows(replicas: list[Replica]) -> int:
    return sum(
        1 for r in replicas for c in r.records() if c["pdp"]["type"] == "decision" and c["pdp"]["outcome"] == "allow"
    )


def test_racing_replicas_get_exactly_as_many_allows_as_fit(replicas: list[Replica]) -> None:
    answers = _race(replicas, 16)

    allowed = [a for a in answers if a.outcome == pb.OUTCOME_ALLOW]
    assert len(allowed) == VELOCITY
    for a in answers:
        if a.outcome != pb.OUTCOME_ALLOW:
            assert a.outcome == pb.OUTCOME_DENY
            assert not a.indeterminate
            assert "budget.exceeded" in [r.code for r in a.reasons], a.reasons
    assert _logged_allows(replicas) == VELOCITY  # the logs of both replicas, verified, agree
    claims = claims_of(allowed[0].record)
    budgets = {b["budget"]: b for b in claims["result"]["budgets"]}
    assert budgets["fintech.velocity"] == {
        "budget": "fintech.velocity",
        "key": "payments-agent",
        "amount": 1,
        "limit": VELOCITY,
        "window": "1h",
    }
    assert "fintech.velocity" in claims["input"]["bound"]["usage"]  # what the policy saw as used
    for r in replicas:
        assert "OK:" in r.audit()


def test_a_failed_outcome_releases_its_reservation(replicas: list[Replica]) -> None:
    a, b = replicas
    allowed = [(r, r.decide()) for r in (a, b, a, b, a)]
    assert all(d.outcome == pb.OUTCOME_ALLOW for _, d in allowed)
    assert b.decide().outcome == pb.OUTCOME_DENY  # full

    replica, failed = allowed[1]
    replica.stub.ReportOutcome(
        pb.ReportOutcomeRequest(decision_id=failed.decision_id, status=pb.ACTION_STATUS_FAILED), timeout=10
    )
    again = a.decide()  # the other replica sees the amount given back
    assert again.outcome == pb.OUTCOME_ALLOW, again.reasons

    replica, executed = allowed[0]
    replica.stub.ReportOutcome(
        pb.ReportOutcomeRequest(decision_id=executed.decision_id, status=pb.ACTION_STATUS_EXECUTED), timeout=10
    )
    denied = b.decide()
    assert denied.outcome == pb.OUTCOME_DENY  # an executed payment stays counted
    assert [r.code for r in denied.reasons] == ["budget.exceeded"]
    outcomes = [c for r in replicas for c in r.records() if c["pdp"]["type"] == "outcome"]
    assert sorted(o["outcome"]["status"] for o in outcomes) == ["executed", "failed"]


def test_suspend_on_one_replica_denies_on_the_other_within_a_second(replicas: list[Replica]) -> None:
    a, b = replicas
    assert b.decide(LOOKUP).outcome == pb.OUTCOME_ALLOW
    done = subprocess.run(
        [
            *PDP_COMMAND,
            "agents",
            "suspend",
            "support-bot",
            "--reason",
            "moving money in a loop",
            "--operator",
            "oncall@bank.example",
            "--addr",
            f"127.0.0.1:{a.port}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    suspended_at = time.monotonic()
    # "On every replica within a second": whatever b decides from one second on is a denial.
    time.sleep(max(0.0, suspended_at + 1.0 - time.monotonic()))
    denied = b.decide(LOOKUP)
    assert [r.code for r in denied.reasons] == ["agent.suspended"]
    assert "moving money in a loop" in denied.reasons[0].message
    assert not denied.indeterminate
    assert claims_of(denied.record)["pdp"]["opa_version"] == ""  # decided before OPA was asked

    listed = a.admin.ListSuspensions(admin_pb.ListSuspensionsRequest(), timeout=10).suspensions
    assert [(s.kind, s.value, s.reason) for s in listed] == [("agent", "support-bot", "moving money in a loop")]

    resumed = a.admin.Resume(
        admin_pb.ResumeRequest(value="support-bot", reason="loop fixed", operator="oncall@bank.example"), timeout=10
    )
    assert resumed.was_active
    wait_for(
        lambda: b.decide(LOOKUP).outcome == pb.OUTCOME_ALLOW, timeout_s=1.0, what="the other replica to allow again"
    )

    records = [c for c in a.records() if c["pdp"]["type"] == "suspension"]
    assert [(c["suspension"]["action"], c["suspension"]["reason"]) for c in records] == [
        ("suspend", "moving money in a loop"),
        ("resume", "loop fixed"),
    ]
    assert all(c["suspension"]["operator"] == "oncall@bank.example" for c in records)
    assert all(c["requested_by"].startswith("ipv4:127.0.0.1") for c in records)
    assert "2 suspension records" in a.audit()


def test_suspending_an_agent_rejects_its_open_escalations(replicas: list[Replica]) -> None:
    a, b = replicas
    held = b.decide(NEW_BENEFICIARY)  # opened on b ...
    assert held.outcome == pb.OUTCOME_REQUIRE_APPROVAL and held.escalation_id
    other = b.decide(BREAK_GLASS)  # ... beside another agent's
    assert other.outcome == pb.OUTCOME_REQUIRE_APPROVAL and other.escalation_id
    as_approver = ((DEV_LOGIN_METADATA, APPROVER),)
    ask = apb.GetEscalationRequest(escalation_id=held.escalation_id)
    assert b.desk.GetEscalation(ask, metadata=as_approver, timeout=10).status == "open"

    reason = "paying new beneficiaries in a loop"
    suspended = a.admin.Suspend(  # ... and the agent suspended on a
        admin_pb.SuspendRequest(kind="agent", value="payments-agent", reason=reason, operator="oncall@bank.example"),
        timeout=10,
    )
    assert list(suspended.closed_escalations) == [held.escalation_id]  # its own, not the other agent's
    assert claims_of(suspended.record)["suspension"]["closed_escalations"] == [held.escalation_id]

    closed = b.desk.GetEscalation(ask, metadata=as_approver, timeout=10)  # the shared store, seen from b
    assert closed.status == "rejected"
    assert closed.closed_reason == f"agent suspended: {reason}"
    assert closed.closed_at > 0
    assert closed.votes == []  # closed by the kill switch, not by an approver
    with pytest.raises(grpc.RpcError) as late:
        b.desk.Approve(apb.ApproveRequest(escalation_id=held.escalation_id), metadata=as_approver, timeout=10)
    assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # the store's reason: decided
    assert "already rejected" in (late.value.details() or ""), late.value.details()
    waiting = b.desk.ListEscalations(apb.ListEscalationsRequest(), metadata=as_approver, timeout=10)
    assert list(waiting.escalations) == []  # nothing left for the approver

    (record,) = [c for c in a.records() if c["pdp"]["type"] == "suspension"]
    assert record["suspension"]["action"] == "suspend" and record["suspension"]["reason"] == reason
    assert record["suspension"]["closed_escalations"] == [held.escalation_id]
    assert "1 suspension records" in a.audit()
    assert "2 escalation steps" in b.audit()  # b's log: the two escalations opened


def test_suspend_a_tool_and_a_principal(replicas: list[Replica]) -> None:
    a, b = replicas
    a.admin.Suspend(
        admin_pb.SuspendRequest(kind="principal", value="bob@bank.example", reason="account takeover suspected"),
        timeout=10,
    )
    denied = a.decide()
    assert [r.code for r in denied.reasons] == ["principal.suspended"]
    a.admin.Resume(admin_pb.ResumeRequest(kind="principal", value="bob@bank.example"), timeout=10)
    a.admin.Suspend(
        admin_pb.SuspendRequest(kind="tool", value="payments.transfer", reason="bank API incident", until="1h"),
        timeout=10,
    )
    wait_for(
        lambda: [r.code for r in b.decide().reasons] == ["tool.suspended"],
        timeout_s=1.0,
        what="the tool suspended on b",
    )
    with pytest.raises(grpc.RpcError) as e:
        a.admin.Suspend(admin_pb.SuspendRequest(value="payments-agent"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in (e.value.details() or "")


def test_store_down_fails_budgeted_decisions_closed(
    replicas: list[Replica], state: dict[str, str], request: pytest.FixtureRequest
) -> None:
    a, _ = replicas
    assert a.decide().outcome == pb.OUTCOME_ALLOW
    if "PDP_STATE_URL" in state:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        server.stop()
    else:  # the embedded store's file gone (a disk swapped under it): never silently a new, empty one
        shutil.rmtree(state["PDP_STATE_DIR"])

    def closed(example: str) -> bool:
        d = a.decide(example)
        return d.outcome == pb.OUTCOME_DENY and d.indeterminate and d.error_code == "pdp.state_unavailable"

    wait_for(lambda: closed("fintech-allow-transfer.json"), timeout_s=15, what="budgeted decisions to fail closed")
    # No budget, but a suspension list older than half a second is not decided on either.
    wait_for(lambda: closed(LOOKUP), timeout_s=1.0, what="unbudgeted decisions to fail closed")


def test_the_policy_sees_usage_and_escalates_near_the_limit(
    tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Any]
) -> None:
    # bob may move 100,000.00 a day; each example payment is 25,000.00; above 80 % needs approval.
    bundle = _bundle(
        tmp_path, lambda c: c["fintech"]["daily_transfer_minor"]["principals"].update({"bob@bank.example": 10_000_000})
    )
    pdp = start_pdp(start_opa(bundle=bundle).url)  # the embedded SQLite store beside its log
    answers = [pdp.stub.Decide(load_request("fintech-allow-transfer.json"), timeout=10) for _ in range(4)]
    assert [a.outcome for a in answers] == [pb.OUTCOME_ALLOW] * 3 + [pb.OUTCOME_REQUIRE_APPROVAL]
    assert [r.code for r in answers[3].reasons] == ["budget.near_limit"]
    assert "would be at 10000000 of 10000000 per 24h" in answers[3].reasons[0].message
    seen = claims_of(answers[2].record)["input"]["bound"]["usage"]
    assert seen["fintech.transfer_daily"]["bob@bank.example"]["24h"] == 5_000_000  # two before it


def test_a_burst_cannot_cross_the_review_threshold_unescalated(
    tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Any]
) -> None:
    # As above: above 80,000.00 of bob's 100,000.00 a day a human approves. Eight payments of
    # 25,000.00 at once each see (about) nothing used yet; only three fit under the threshold.
    bundle = _bundle(
        tmp_path, lambda c: c["fintech"]["daily_transfer_minor"]["principals"].update({"bob@bank.example": 10_000_000})
    )
    pdp = start_pdp(start_opa(bundle=bundle).url)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(lambda _: pdp.stub.Decide(load_request("fintech-allow-transfer.json"), timeout=10), range(8))
        )
    allowed = [a for a in answers if a.outcome == pb.OUTCOME_ALLOW]
    assert len(allowed) == 3, [(pb.Outcome.Name(a.outcome), [r.code for r in a.reasons]) for a in answers]
    for a in answers:
        if a.outcome != pb.OUTCOME_ALLOW:  # refused at the threshold by the PDP, or escalated by the policy
            codes = [r.code for r in a.reasons]
            assert (a.outcome, codes) in (
                (pb.OUTCOME_DENY, ["budget.review_threshold"]),
                (pb.OUTCOME_REQUIRE_APPROVAL, ["budget.near_limit"]),
            ), codes
    daily = [b for b in claims_of(allowed[0].record)["result"]["budgets"] if b["budget"] == "fintech.transfer_daily"]
    assert daily[0]["ceiling"] == 8_000_000  # the threshold, in the signed record
    again = pdp.stub.Decide(load_request("fintech-allow-transfer.json"), timeout=10)
    assert again.outcome == pb.OUTCOME_REQUIRE_APPROVAL and [r.code for r in again.reasons] == ["budget.near_limit"]
