"""The AuthZEN Access Request and Approval Profile on the PDP's HTTP face: real uvicorn, real OPA
with the project's bundle, the real approvals desk. A requestable denial carries
``context.access_request``; the PEP submits it and polls it; approvers decide only through the
authenticated desk; the re-evaluation with ``context.approval`` is the one permit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from pdp.approvals.desk import ApprovalDesk
from pdp.http import authzen
from tests.integration.test_authzen import Face, _with_tokens, start_face  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

TRANSFER = {  # examples/fintech-require-approval-new-beneficiary.json, as an AuthZEN evaluation
    "subject": {
        "type": "user",
        "id": "bob@bank.example",
        "properties": {
            "agent_id": "payments-agent",
            "agent_version": "2.0.3",
            "agent_owner": "treasury-ops",
            "roles": ["treasurer"],
        },
    },
    "action": {
        "name": "payments.transfer",
        "properties": {
            "operation": "execute",
            "arguments": {
                "amount": 25000,
                "currency": "USD",
                "beneficiary": "NL91ABNA0417164300",
                "counterparty": "Contoso GmbH",
            },
        },
    },
    "resource": {"type": "account", "id": "ACC-1001", "properties": {"classification": "confidential"}},
    "context": {
        "lineage": [{"source": "core-banking", "kind": "ledger", "quality": 0.99, "verified": True}],
        "environment": {"name": "production"},
        "risk": {"score": 18},
    },
}
APPROVERS = ("dan.meyer@bank.example", "rita.okafor@bank.example")


@pytest.fixture
def face(start_face: Callable[..., Face], start_opa: Callable[..., Any]) -> Face:  # noqa: F811
    return start_face(opa=start_opa())  # the project's bundle: the transfer needs an approval


def _desk(face: Face) -> ApprovalDesk:
    assert face.pdp.server.desk is not None
    return face.pdp.server.desk


def _approve_all(face: Face, escalation_id: str) -> None:
    """Approvers holding the escalation's role approve it through the desk (as ApprovalService does)."""
    desk = _desk(face)
    for who in APPROVERS:
        if desk.escalation(escalation_id).status != "open":
            return
        approver = desk.approver(who)
        if desk.escalation(escalation_id).role in approver.roles:
            desk.approve(escalation_id, approver, comment="checked", now=int(time.time()))


def _poll(face: Face, escalation_id: str) -> dict[str, Any]:
    r = face.session.get(f"{face.url}{authzen.ACCESS_REQUESTS}/{escalation_id}", timeout=10)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def test_denial_request_approval_reevaluation_single_use(face: Face) -> None:
    asked = _with_tokens(TRANSFER)
    denied = face.evaluate(asked)
    assert denied["decision"] is False
    ctx = denied["context"]
    assert ctx["outcome"] == "require_approval"
    request = ctx["access_request"]
    assert request["id"] == ctx["escalation"]["escalation_id"] and request["endpoint"] == authzen.ACCESS_REQUESTS
    assert request["request_token"] == ctx["record"]  # the PDP-signed binding token

    # Submit: bound by the signed token; a forged or foreign token is refused.
    r = face.post(authzen.ACCESS_REQUESTS, {"id": request["id"], "request_token": request["request_token"]})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["id"] == request["id"] and task["status"] == "pending" and "approval" not in task
    forged = request["request_token"][:-4] + ("AAAA" if not request["request_token"].endswith("AAAA") else "BBBB")
    r = face.post(authzen.ACCESS_REQUESTS, {"id": request["id"], "request_token": forged})
    assert r.status_code == 400 and r.text.startswith("request_token:")
    other = face.evaluate(_with_tokens(TRANSFER))["context"]
    r = face.post(authzen.ACCESS_REQUESTS, {"id": request["id"], "request_token": other["record"]})
    assert r.status_code == 404
    assert face.session.get(f"{face.url}{authzen.ACCESS_REQUESTS}/no-such-id", timeout=10).status_code == 404

    # Re-evaluating before any approval is still no.
    assert face.evaluate(asked)["decision"] is False

    _approve_all(face, request["id"])
    polled = _poll(face, request["id"])
    assert polled["status"] == "approved", polled
    tokens = polled["approval"]["tokens"]
    assert tokens and set(polled["approvals"]["approvers"]) <= set(APPROVERS)

    again = _with_tokens(TRANSFER)
    again["context"]["approval"] = {"tokens": tokens}
    granted = face.evaluate(again)
    assert granted["decision"] is True, granted["context"]
    assert granted["context"]["outcome"] == "allow" and granted["context"]["record"]
    assert _poll(face, request["id"])["status"] == "consumed"

    replayed = face.evaluate(again)
    assert replayed["decision"] is False
    assert "approval.reused" in replayed["context"]["reason_admin"]
    assert face.audit().returncode == 0


def test_rejected_request_polls_denied_and_approvals_never_come_from_the_pep(face: Face) -> None:
    ctx = face.evaluate(_with_tokens(TRANSFER))["context"]
    escalation_id = ctx["access_request"]["id"]
    desk = _desk(face)
    desk.reject(escalation_id, desk.approver(APPROVERS[0]), comment="no", now=int(time.time()))
    polled = _poll(face, escalation_id)
    assert polled["status"] == "denied" and "approval" not in polled
    # The PEP cannot approve here: no route takes a vote, and a made-up token is only ignored.
    assert face.post(f"{authzen.ACCESS_REQUESTS}/{escalation_id}", {"approve": True}).status_code == 405
    forged = _with_tokens(TRANSFER)
    forged["context"]["approval"] = {"tokens": [ctx["record"]]}
    assert face.evaluate(forged)["decision"] is False


def test_metadata_names_the_access_request_endpoint(face: Face) -> None:
    meta = face.session.get(f"{face.url}/.well-known/authzen-configuration", timeout=10).json()
    assert meta["access_request_endpoint"] == f"{face.url}{authzen.ACCESS_REQUESTS}"
