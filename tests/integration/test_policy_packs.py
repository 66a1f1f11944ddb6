"""The policy packs through Decide: each example's outcome and reason codes, and approvals."""

from __future__ import annotations

import datetime

import pytest

from pdp import client, devissuer
from pdp.records import unverified_claims as claims_of
from pdp.v1 import decision_pb2 as pb
from tests.conftest import Pdp, dev_issuers, load_request

pytestmark = pytest.mark.integration

ALLOW, DENY, ASK = pb.OUTCOME_ALLOW, pb.OUTCOME_DENY, pb.OUTCOME_REQUIRE_APPROVAL


@pytest.mark.parametrize(
    ("example", "outcome", "codes", "obligations"),
    [
        ("fintech-allow-transfer.json", ALLOW, {"tool.granted"}, {"audit"}),
        ("fintech-deny-sanctioned.json", DENY, {"fintech.sanctioned_counterparty"}, set()),
        ("fintech-require-approval-new-beneficiary.json", ASK, {"fintech.new_beneficiary"}, {"approval.required"}),
        ("require-approval-high-risk.json", ASK, {"risk.high", "fintech.dual_control"}, {"approval.required"}),
        ("healthcare-allow-treatment.json", ALLOW, {"tool.granted"}, {"audit", "minimum_necessary"}),
        ("healthcare-deny-no-purpose.json", DENY, {"hipaa.purpose_required"}, set()),
        ("healthcare-require-approval-break-glass.json", ASK, {"hipaa.break_glass"}, {"approval.required"}),
        ("defense-allow-read.json", ALLOW, {"tool.granted"}, {"audit"}),
        ("defense-deny-need-to-know.json", DENY, {"defense.need_to_know"}, set()),
        ("defense-require-approval-two-person.json", ASK, {"defense.two_person_rule"}, {"approval.required"}),
    ],
)
def test_pack_examples(pdp: Pdp, example: str, outcome: int, codes: set[str], obligations: set[str]) -> None:
    resp = pdp.stub.Decide(load_request(example), timeout=5)
    assert (resp.outcome, {r.code for r in resp.reasons}) == (outcome, codes)
    assert {o.type for o in resp.obligations} == obligations
    assert all(r.severity and r.rule and r.message for r in resp.reasons)


def test_minimum_necessary_names_the_fields_to_drop(pdp: Pdp) -> None:
    resp = pdp.stub.Decide(load_request("healthcare-allow-treatment.json"), timeout=5)
    (kept,) = [o for o in resp.obligations if o.type == "minimum_necessary"]
    assert list(kept.params["drop"]) == ["ssn"]
    assert "diagnoses" in kept.params["keep"]


def digest_of(req: pb.DecideRequest) -> str:
    """The action digest the PDP computes for a request (what an approver signs off)."""
    return client.digest_of(req.context)


def approve(req: pb.DecideRequest, approver: str, *, digest: str | None = None, minutes: int = 30) -> None:
    approval = req.context.approvals.add(approver_id=approver, action_digest=digest or digest_of(req))
    approval.expires_at.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes))


def test_approvals_the_caller_writes_itself_never_turn_escalation_into_allow(pdp: Pdp) -> None:
    # An approval in the request is the caller's word (input.asserted.approvals), even when it
    # names a registered approver and is bound to this action: only approvals the PDP verified
    # (input.bound.approvals, issue 14) count. Until then, nothing the caller writes approves.
    req = load_request("require-approval-high-risk.json")
    approve(req, "rita.okafor@bank.example")  # risk officer and payments approver
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == ASK
    recorded = claims_of(resp.record.encode())["input"]
    assert recorded["bound"]["approvals"] == []
    assert [a["approver_id"] for a in recorded["asserted"]["approvals"]] == ["rita.okafor@bank.example"]


@pytest.mark.parametrize(
    ("approver", "kwargs", "why"),
    [
        ("rita.okafor@bank.example", {"digest": "sha256:" + "0" * 64}, "bound to another action"),
        ("rita.okafor@bank.example", {"minutes": -1}, "expired"),
        ("bob@bank.example", {}, "self-approval by the principal"),
        ("li.chen@bank.example", {}, "approver deactivated"),
        ("mallory@bank.example", {}, "not a registered approver"),
        ("dan.meyer@bank.example", {}, "lacks the risk officer role"),
    ],
)
def test_invalid_approvals_do_not_allow(pdp: Pdp, approver: str, kwargs: dict[str, object], why: str) -> None:
    req = load_request("require-approval-high-risk.json")
    approve(req, approver, **kwargs)  # type: ignore[arg-type]
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == ASK, why


def test_approval_for_a_different_amount_does_not_allow(pdp: Pdp) -> None:
    approved = load_request("require-approval-high-risk.json")
    digest = digest_of(approved)
    bigger = load_request("require-approval-high-risk.json", tokens=False)
    bigger.context.action.arguments["amount"] = 450000
    devissuer.forward_tokens(bigger, dev_issuers())  # the right tokens for the bigger transfer
    approve(bigger, "rita.okafor@bank.example", digest=digest)
    assert pdp.stub.Decide(bigger, timeout=5).outcome == ASK


def test_two_person_rule_is_not_met_by_approvals_the_caller_writes(pdp: Pdp) -> None:
    req = load_request("defense-require-approval-two-person.json")
    approve(req, "sgt.ray@army.example")
    approve(req, "sgt.ray@army.example")
    assert pdp.stub.Decide(req, timeout=5).outcome == ASK
    approve(req, "capt.ng@army.example")
    req.request_id += "-approved"  # the request with approvals attached is a new request
    assert pdp.stub.Decide(req, timeout=5).outcome == ASK  # two distinct officers, but in the caller's word
