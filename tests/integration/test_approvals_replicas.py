"""Two PDP replicas (`pdp serve` processes) sharing one PostgreSQL state store: an escalation opened on
one is approved on the other, and one approval token raced to both gives exactly one ALLOW."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from pdp import keys
from pdp.grpc.approvals import DEV_LOGIN_METADATA
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import assert_fail_closed, load_request, serve_env, start_child
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def replicas(start_opa: Callable[..., OpaSidecar], postgres_url: str, tmp_path: Path) -> Iterator[list[grpc.Channel]]:
    """Two `pdp serve` children: one signing key (replicas share it, so each verifies the other's
    tokens), a log each, one PostgreSQL state store; the dev login on loopback for the approver."""
    opa = start_opa()
    keys.ensure(tmp_path / "keys")
    children, channels = [], []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = serve_env(
                tmp_path / name,
                port=port,
                opa_url=opa.url,
                PDP_KEY_DIR=str(tmp_path / "keys"),
                PDP_STATE_URL=postgres_url,
                PDP_APPROVALS_DEV_LOGIN="1",
            )
            children.append(start_child("serve", env=env, log=tmp_path / f"{name}.log"))
            channels.append(grpc.insecure_channel(f"127.0.0.1:{port}"))
        yield channels
    finally:
        for c in channels:
            c.close()
        for p in children:
            p.terminate()
            p.wait(timeout=30)


def test_one_token_raced_to_two_replicas_allows_once(replicas: list[grpc.Channel]) -> None:
    a, b = replicas
    req = load_request("fintech-require-approval-new-beneficiary.json")
    opened = pb_grpc.DecisionServiceStub(a).Decide(req, timeout=10)
    assert opened.outcome == pb.OUTCOME_REQUIRE_APPROVAL and opened.escalation_id

    # Approved on the other replica: the escalation lives in the shared store.
    approver = [(DEV_LOGIN_METADATA, "dan.meyer@bank.example")]
    done = apb_grpc.ApprovalServiceStub(b).Approve(
        apb.ApproveRequest(escalation_id=opened.escalation_id), metadata=approver, timeout=10
    )
    assert done.escalation.status == "approved"
    tokens = apb_grpc.ApprovalServiceStub(a).GetApprovalTokens(
        apb.GetApprovalTokensRequest(escalation_id=opened.escalation_id), timeout=10
    )
    assert list(tokens.approval_tokens) == [done.approval_token]

    start = threading.Barrier(2)

    def retry(channel: grpc.Channel, suffix: str) -> pb.DecideResponse:
        r = load_request("fintech-require-approval-new-beneficiary.json")
        r.request_id += suffix
        r.approval_tokens.append(done.approval_token)
        start.wait(timeout=10)
        answer: pb.DecideResponse = pb_grpc.DecisionServiceStub(channel).Decide(r, timeout=10)
        return answer

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(retry, [a, b], ["-on-a", "-on-b"]))
    outcomes = sorted(pb.Outcome.Name(x.outcome) for x in answers)
    assert outcomes == ["OUTCOME_ALLOW", "OUTCOME_DENY"]
    (denied,) = [x for x in answers if x.outcome == pb.OUTCOME_DENY]
    assert [r.code for r in denied.reasons] == ["approval.reused"]


def test_store_down_fails_closed(replicas: list[grpc.Channel], postgres_server: PostgresServer) -> None:
    a, _ = replicas
    req = load_request("fintech-require-approval-new-beneficiary.json")
    opened = pb_grpc.DecisionServiceStub(a).Decide(req, timeout=10)
    done = apb_grpc.ApprovalServiceStub(a).Approve(
        apb.ApproveRequest(escalation_id=opened.escalation_id),
        metadata=[(DEV_LOGIN_METADATA, "dan.meyer@bank.example")],
        timeout=10,
    )
    req.request_id += "-approved"
    req.approval_tokens.append(done.approval_token)
    postgres_server.stop()  # the postgres_url fixture of the next test starts it again
    answer = pb_grpc.DecisionServiceStub(a).Decide(req, timeout=30)
    assert_fail_closed(answer, "pdp.state_unavailable")
