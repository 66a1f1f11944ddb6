"""The AuthZEN Access Request and Approval Profile on the PDP's HTTP face: real uvicorn, real OPA
with the project's bundle, the real approvals desk. A requestable denial carries
``context.access_request``; the PEP submits it and polls it; approvers decide only through the
authenticated desk; the re-evaluation with ``context.approval`` is the one permit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pdp.approvals.desk import ApprovalDesk
from pdp.http import authzen
from tests.helpers import issue_cert, pem_key
from tests.integration.test_approvals import PEP_A, PEP_B, SHARED_CN, SPIFFE_ONLY, _spiffe_only_cert
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


def test_the_requester_is_the_spiffe_id_whatever_the_cn(
    start_face: Callable[..., Face],  # noqa: F811
    start_opa: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # A PEP whose certificate has only a SPIFFE id polls its own access request; of two PEPs
    # sharing a CN, the one whose decision did not open it gets 404, as for none.
    ca = issue_cert("test-ca", [], None)
    made = {
        "server": issue_cert("localhost", [x509.DNSName("localhost")], ca),
        "spiffe-only": _spiffe_only_cert(SPIFFE_ONLY, ca),
        "a": issue_cert(SHARED_CN, [x509.UniformResourceIdentifier(PEP_A)], ca),
        "b": issue_cert(SHARED_CN, [x509.UniformResourceIdentifier(PEP_B)], ca),
    }
    (tmp_path / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    files: dict[str, tuple[str, str]] = {}
    for who, (cert, key) in made.items():
        (tmp_path / f"{who}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{who}.key").write_bytes(pem_key(key))
        files[who] = (str(tmp_path / f"{who}.crt"), str(tmp_path / f"{who}.key"))
    face = start_face(
        opa=start_opa(),
        ca=tmp_path / "ca.pem",
        tls_cert_file=tmp_path / "server.crt",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
    )

    def poll(escalation_id: str, who: str) -> Any:
        return face.session.get(f"{face.url}{authzen.ACCESS_REQUESTS}/{escalation_id}", cert=files[who], timeout=10)

    # SPIFFE only: submitted, approved, polled, re-evaluated: the one permit.
    asked = _with_tokens(TRANSFER)
    request = face.evaluate(asked, cert=files["spiffe-only"])["context"]["access_request"]
    assert _desk(face).escalation(request["id"]).context["caller"] == SPIFFE_ONLY
    submitted = face.post(authzen.ACCESS_REQUESTS, request, cert=files["spiffe-only"])
    assert submitted.status_code == 200 and submitted.json()["status"] == "pending", submitted.text
    _approve_all(face, request["id"])
    polled = poll(request["id"], "spiffe-only")
    assert polled.status_code == 200 and polled.json()["status"] == "approved", polled.text
    asked["context"]["approval"] = {"tokens": polled.json()["approval"]["tokens"]}
    assert face.evaluate(asked, cert=files["spiffe-only"])["decision"] is True

    # The same CN, another SPIFFE id: not the requester.
    opened = face.evaluate(_with_tokens(TRANSFER), cert=files["a"])["context"]["access_request"]
    assert _desk(face).escalation(opened["id"]).context["caller"] == PEP_A
    _approve_all(face, opened["id"])
    assert poll(opened["id"], "b").status_code == 404
    assert face.post(authzen.ACCESS_REQUESTS, opened, cert=files["b"]).status_code == 404
    assert poll(opened["id"], "spiffe-only").status_code == 404
    assert poll(opened["id"], "a").json()["status"] == "approved"
