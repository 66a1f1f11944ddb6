"""The AuthZEN Access Request and Approval Profile (draft, openid/authzen
profiles/authzen-access-request-approval) on the PDP's HTTP face: real uvicorn, real OPA with the
project's bundle, the real approvals desk. A requestable denial carries ``context.access_request``
with a PDP-signed ``binding_token``; the PEP submits ``{subject, resource, action, denial}`` and
polls the ``task``; approvers decide only through the authenticated desk; the re-evaluation with
the task's ``result.approval`` at ``context.approval`` is the one permit: the PDP looks the approval
up itself, for the requester only, and it is single use."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pdp.approvals.desk import ApprovalDesk
from pdp.approvals.tokens import TYP_ACCESS_REQUEST, verify_binding
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
PROBLEM = "urn:openid:authzen:access-request:error:"


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


def _submission(asked: dict[str, Any], denied: dict[str, Any]) -> dict[str, Any]:
    """What a PEP submits for a requestable denial: the denied subject, resource and action, and
    the denial echoed from the decision context."""
    ctx = denied["context"]
    return {
        "subject": asked["subject"],
        "resource": asked["resource"],
        "action": asked["action"],
        "context": {**asked.get("context", {}), "business_justification": "quarterly supplier payment"},
        "requested_access": {"requested_until": "2030-01-01T00:00:00Z"},
        "denial": {
            "evaluation_id": ctx["evaluation_id"],
            "evaluated_at": ctx["evaluated_at"],
            "expires_at": ctx["access_request"]["expires_at"],
            "reason": ctx["reason"],
            "binding_token": ctx["access_request"]["binding_token"],
        },
    }


def _task_url(face: Face, task_id: str) -> str:
    return f"{face.url}{authzen.ACCESS_REQUESTS}/{task_id}"


def _poll(face: Face, task_id: str, **kw: Any) -> dict[str, Any]:
    r = face.session.get(_task_url(face, task_id), timeout=10, **kw)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _problem(r: requests.Response, status: int, kind: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of the draft's type ``kind``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert doc["type"] == PROBLEM + kind and doc["status"] == status and doc["title"] and doc["detail"], doc
    return doc


def _reevaluation(asked: dict[str, Any], approval: dict[str, Any]) -> dict[str, Any]:
    again = copy.deepcopy(asked)
    again.setdefault("context", {})["approval"] = approval
    return again


def test_denial_request_approval_reevaluation_single_use(face: Face) -> None:
    asked = _with_tokens(TRANSFER)
    denied = face.evaluate(asked)
    assert denied["decision"] is False
    ctx = denied["context"]
    assert ctx["outcome"] == "require_approval"
    request = ctx["access_request"]
    # The requestable denial, as the draft shapes it: where, until when, and the binding token.
    assert set(request) == {"endpoint", "expires_at", "binding_token"}
    assert request["endpoint"] == f"{face.url}{authzen.ACCESS_REQUESTS}"
    assert request["expires_at"] == authzen.rfc3339(ctx["escalation"]["escalation_expires_at"])
    assert ctx["evaluation_id"] == ctx["decision_id"] and ctx["reason"] == "approval_required"
    assert authzen.timestamp(ctx["evaluated_at"]) <= authzen.timestamp(request["expires_at"])
    # The binding token is PDP-signed (its own typ, the PDP's JWKS) and bound to the denied action.
    header = json.loads(base64.urlsafe_b64decode(request["binding_token"].split(".")[0] + "=="))
    assert header["typ"] == TYP_ACCESS_REQUEST
    binding = verify_binding(request["binding_token"], face.pdp.server.recorder.jwks())
    assert binding.escalation_id == ctx["escalation"]["escalation_id"]
    assert binding.action_digest == ctx["escalation"]["action_digest"]
    assert binding.evaluation_id == ctx["decision_id"]

    # Submit: 202 with the task handle; the same denial again is the same task.
    submission = _submission(asked, denied)
    r = face.post(authzen.ACCESS_REQUESTS, submission)
    assert r.status_code == 202, r.text
    doc = r.json()
    assert set(doc) == {"task"}
    task = doc["task"]
    task_id = task["id"]
    assert task_id == binding.escalation_id and task["status"] == "pending"
    assert task["status_endpoint"] == _task_url(face, task_id) == r.headers["Location"]
    assert authzen.timestamp(task["expires_at"]) > authzen.timestamp(request["expires_at"])
    assert task["progress"]["total_steps"] >= 1 and task["progress"]["current_step"] == 1
    again = face.post(authzen.ACCESS_REQUESTS, submission)
    assert again.status_code == 202 and again.json()["task"]["id"] == task_id

    # Submissions the denial does not bind are refused with the draft's problem types.
    forged = copy.deepcopy(submission)
    token = submission["denial"]["binding_token"]
    forged["denial"]["binding_token"] = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (
        "binding_token" in _problem(face.post(authzen.ACCESS_REQUESTS, forged), 400, "invalid_denial_binding")["detail"]
    )
    record = copy.deepcopy(submission)
    record["denial"]["binding_token"] = ctx["record"]  # PDP-signed, but a decision record: not a binding token
    _problem(face.post(authzen.ACCESS_REQUESTS, record), 400, "invalid_denial_binding")
    bigger = copy.deepcopy(submission)
    bigger["action"]["properties"]["arguments"]["amount"] = 250000  # another action than the one denied
    _problem(face.post(authzen.ACCESS_REQUESTS, bigger), 400, "invalid_denial_binding")
    someone = copy.deepcopy(submission)
    someone["subject"]["id"] = "mallory@bank.example"
    _problem(face.post(authzen.ACCESS_REQUESTS, someone), 400, "invalid_denial_binding")
    later = copy.deepcopy(submission)
    later["denial"]["expires_at"] = "2099-01-01T00:00:00Z"  # the expiry is the token's, not the PEP's
    _problem(face.post(authzen.ACCESS_REQUESTS, later), 400, "invalid_denial_binding")
    other_eval = copy.deepcopy(submission)
    other_eval["denial"]["evaluation_id"] = "another-evaluation"
    _problem(face.post(authzen.ACCESS_REQUESTS, other_eval), 400, "invalid_denial_binding")
    unbound = {k: v for k, v in submission.items() if k != "denial"}
    _problem(face.post(authzen.ACCESS_REQUESTS, unbound), 400, "invalid_denial_binding")
    bundled = {**submission, "items": [{"resource": submission["resource"], "action": submission["action"]}]}
    _problem(face.post(authzen.ACCESS_REQUESTS, bundled), 400, "invalid_denial_binding")
    r = face.post(authzen.ACCESS_REQUESTS, [])
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")
    # Another denial of the same action binds another task.
    other = face.evaluate(_with_tokens(TRANSFER))
    r = face.post(authzen.ACCESS_REQUESTS, _submission(asked, other))
    assert r.status_code == 202 and r.json()["task"]["id"] not in (task_id, "")
    _problem(face.session.get(_task_url(face, "no-such-id"), timeout=10), 404, "unknown_task")

    # Re-evaluating before any approval is still no: the task id presents no approval yet.
    early = face.evaluate(_reevaluation(asked, {"id": task_id}))
    assert early["decision"] is False
    assert early["context"]["reason"] == "approval_unverifiable"
    assert early["context"]["next_action"] == "request" and "access_request" in early["context"]

    _approve_all(face, task_id)
    polled = _poll(face, task_id)
    assert polled["task"]["status"] == "approved" and "progress" not in polled["task"], polled
    result = polled["result"]
    assert result["mode"] == "reevaluate"
    approval = result["approval"]
    assert approval["id"] == task_id and set(approval) == {"id", "approved_at", "approved_until"}
    assert authzen.timestamp(approval["approved_at"]) < authzen.timestamp(approval["approved_until"])
    # Submitting the denial again once it is decided: 201 with the result (synchronous completion).
    r = face.post(authzen.ACCESS_REQUESTS, submission)
    assert r.status_code == 201 and r.json() == polled

    granted = face.evaluate(_reevaluation(asked, approval))  # the approval object, unchanged
    assert granted["decision"] is True, granted["context"]
    assert granted["context"]["outcome"] == "allow" and granted["context"]["record"]
    assert granted["context"]["approval"] == {"id": task_id, "approved_until": approval["approved_until"]}
    # approved is terminal; the desk knows the approval is used.
    assert _poll(face, task_id)["task"]["status"] == "approved"
    assert _desk(face).escalation(task_id).status == "consumed"

    replayed = face.evaluate(_reevaluation(asked, approval))
    assert replayed["decision"] is False
    assert "approval.reused" in replayed["context"]["reason_admin"]
    assert (replayed["context"]["reason"], replayed["context"]["next_action"]) == ("approval_expired", "none")
    assert face.audit().returncode == 0


def test_the_approval_is_looked_up_never_taken_from_the_request(face: Face) -> None:
    asked = _with_tokens(TRANSFER)
    denied = face.evaluate(asked)
    task_id = denied["context"]["escalation"]["escalation_id"]
    _approve_all(face, task_id)
    approval = _poll(face, task_id)["result"]["approval"]
    tokens = _desk(face).tokens(task_id, now=int(time.time()))
    assert tokens

    # A made-up id is no approval, whatever state, tokens or expiry ride along with it.
    for made_up in (
        {"id": "no-such-approval", "state": tokens},
        {"id": "no-such-approval", "tokens": tokens, "approved_until": "2099-01-01T00:00:00Z"},
        {"id": denied["context"]["decision_id"]},
    ):
        answer = face.evaluate(_reevaluation(asked, made_up))
        assert answer["decision"] is False and answer["context"]["reason"] == "approval_unverifiable", made_up
    # The old shape (approval tokens without an id) is not accepted.
    r = face.post("/access/v1/evaluation", _reevaluation(asked, {"tokens": tokens}))
    assert r.status_code == 400 and r.text.startswith("context.approval.id: is required")
    # The approval is for one action: another amount is out of its scope, and does not use it up.
    other = copy.deepcopy(TRANSFER)
    other["action"]["properties"]["arguments"]["amount"] = 24000
    answer = face.evaluate(_reevaluation(_with_tokens(other), approval))
    assert answer["decision"] is False
    assert (answer["context"]["reason"], answer["context"]["next_action"]) == ("out_of_scope", "request")
    # The approval's own action, in an evaluations call: the one permit.
    batch = face.post("/access/v1/evaluations", {"evaluations": [_reevaluation(asked, approval)]})
    assert batch.status_code == 200, batch.text
    assert [e["decision"] for e in batch.json()["evaluations"]] == [True]


def test_rejected_request_polls_denied_and_approvals_never_come_from_the_pep(face: Face) -> None:
    asked = _with_tokens(TRANSFER)
    ctx = face.evaluate(asked)["context"]
    task_id = ctx["escalation"]["escalation_id"]
    desk = _desk(face)
    desk.reject(task_id, desk.approver(APPROVERS[0]), comment="no", now=int(time.time()))
    polled = _poll(face, task_id)
    assert polled["task"]["status"] == "denied" and "result" not in polled
    # The PEP cannot approve here: no route takes a vote (nor a cancellation), and its id is no approval.
    assert face.post(f"{authzen.ACCESS_REQUESTS}/{task_id}", {"approve": True}).status_code == 405
    assert face.post(f"{authzen.ACCESS_REQUESTS}/{task_id}/cancel", {}).status_code == 404
    answer = face.evaluate(_reevaluation(asked, {"id": task_id}))
    assert answer["decision"] is False and answer["context"]["reason"] == "approval_unverifiable"


def test_an_escalation_the_kill_switch_closed_is_cancelled(face: Face) -> None:
    ctx = face.evaluate(_with_tokens(TRANSFER))["context"]
    task_id = ctx["escalation"]["escalation_id"]
    closed = _desk(face).store.close_for_agent("payments-agent", now=int(time.time()), reason="agent suspended: test")
    assert [e.id for e in closed] == [task_id]
    assert _poll(face, task_id)["task"]["status"] == "cancelled"


def test_expired_denials_tasks_and_approvals(
    start_face: Callable[..., Face],  # noqa: F811
    start_opa: Callable[..., Any],
) -> None:
    # A denial submitted after its expires_at: 410 expired_denial; the task polls expired, then is gone.
    face = start_face(opa=start_opa(), escalation_ttl_s=1, approval_ttl_s=3)
    asked = _with_tokens(TRANSFER)
    denied = face.evaluate(asked)
    task_id = denied["context"]["escalation"]["escalation_id"]
    time.sleep(max(0.0, authzen.timestamp(denied["context"]["access_request"]["expires_at"]) - time.time()) + 0.2)
    _problem(face.post(authzen.ACCESS_REQUESTS, _submission(asked, denied)), 410, "expired_denial")
    polled = _poll(face, task_id)
    assert polled["task"]["status"] == "expired" and "result" not in polled
    time.sleep(max(0.0, authzen.timestamp(polled["task"]["expires_at"]) - time.time()) + 0.2)
    _problem(face.session.get(_task_url(face, task_id), timeout=10), 410, "task_expired")

    # An approval used after its approved_until: no permit, and the PEP is told to request again.
    face = start_face(opa=start_opa(), escalation_ttl_s=60, approval_ttl_s=1)
    denied = face.evaluate(asked)
    task_id = denied["context"]["escalation"]["escalation_id"]
    assert face.post(authzen.ACCESS_REQUESTS, _submission(asked, denied)).status_code == 202
    _approve_all(face, task_id)
    approval = _poll(face, task_id)["result"]["approval"]
    time.sleep(max(0.0, authzen.timestamp(approval["approved_until"]) - time.time()) + 0.2)
    late = face.evaluate(_reevaluation(asked, approval))
    assert late["decision"] is False
    assert (late["context"]["reason"], late["context"]["next_action"]) == ("approval_expired", "request")
    assert late["context"]["access_request"]["binding_token"] != denied["context"]["access_request"]["binding_token"]
    assert _desk(face).escalation(task_id).status == "approved"  # not consumed: nothing was allowed


def test_metadata_names_the_access_request_endpoint(face: Face) -> None:
    meta = face.session.get(f"{face.url}/.well-known/authzen-configuration", timeout=10).json()
    assert meta["access_request_endpoint"] == f"{face.url}{authzen.ACCESS_REQUESTS}"


def test_the_requester_is_the_spiffe_id_whatever_the_cn(
    start_face: Callable[..., Face],  # noqa: F811
    start_opa: Callable[..., Any],
    tmp_path: Path,
) -> None:
    # A PEP whose certificate has only a SPIFFE id submits, polls and re-evaluates its own access
    # request; of two PEPs sharing a CN, the one whose decision did not open it can neither submit
    # it, nor poll it (404, as for none), nor use its approval.
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

    def poll(task_id: str, who: str) -> requests.Response:
        return face.session.get(_task_url(face, task_id), cert=files[who], timeout=10)

    # SPIFFE only: submitted, approved, polled, re-evaluated: the one permit.
    asked = _with_tokens(TRANSFER)
    denied = face.evaluate(asked, cert=files["spiffe-only"])
    task_id = denied["context"]["escalation"]["escalation_id"]
    assert _desk(face).escalation(task_id).context["caller"] == SPIFFE_ONLY
    submitted = face.post(authzen.ACCESS_REQUESTS, _submission(asked, denied), cert=files["spiffe-only"])
    assert submitted.status_code == 202 and submitted.json()["task"]["status"] == "pending", submitted.text
    _approve_all(face, task_id)
    polled = poll(task_id, "spiffe-only")
    assert polled.status_code == 200 and polled.json()["task"]["status"] == "approved", polled.text
    approval = polled.json()["result"]["approval"]
    assert face.evaluate(_reevaluation(asked, approval), cert=files["spiffe-only"])["decision"] is True

    # The same CN, another SPIFFE id: not the requester.
    opened = face.evaluate(asked, cert=files["a"])
    task_id = opened["context"]["escalation"]["escalation_id"]
    assert _desk(face).escalation(task_id).context["caller"] == PEP_A
    _approve_all(face, task_id)
    _problem(poll(task_id, "b"), 404, "unknown_task")
    refused = face.post(authzen.ACCESS_REQUESTS, _submission(asked, opened), cert=files["b"])
    _problem(refused, 400, "invalid_denial_binding")
    _problem(poll(task_id, "spiffe-only"), 404, "unknown_task")
    approval = poll(task_id, "a").json()["result"]["approval"]
    foreign = face.evaluate(_reevaluation(asked, approval), cert=files["b"])
    assert foreign["decision"] is False and foreign["context"]["reason"] == "approval_unverifiable"
    assert face.evaluate(_reevaluation(asked, approval), cert=files["a"])["decision"] is True
