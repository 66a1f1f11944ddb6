"""The policy packs through Decide: each example's outcome and reason codes, and approvals."""

from __future__ import annotations

import pytest

from pdp.v1 import decision_pb2 as pb
from tests.approving import approved_through_the_desk, mint
from tests.helpers import Pdp, load_request

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


def test_approvals_bound_to_the_action_turn_escalation_into_allow(pdp: Pdp) -> None:
    req = load_request("require-approval-high-risk.json")
    tokens = approved_through_the_desk(pdp, req, ["rita.okafor@bank.example"])  # risk officer, payments approver
    req.approval_tokens.extend(tokens)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == ALLOW
    assert {r.code for r in resp.reasons} == {"tool.granted", "approval.accepted"}


@pytest.mark.parametrize(
    ("approver", "kwargs", "why"),
    [
        ("rita.okafor@bank.example", {"digest": "sha256:" + "0" * 64}, "bound to another action"),
        ("rita.okafor@bank.example", {"now": 1, "ttl_s": 60}, "expired"),
        ("bob@bank.example", {}, "self-approval by the principal"),
        ("li.chen@bank.example", {}, "approver deactivated"),
        ("mallory@bank.example", {}, "not a registered approver"),
        ("dan.meyer@bank.example", {}, "lacks the risk officer role"),
    ],
)
def test_invalid_approvals_do_not_allow(pdp: Pdp, approver: str, kwargs: dict[str, object], why: str) -> None:
    req = load_request("require-approval-high-risk.json")
    req.approval_tokens.append(mint(pdp.server.recorder.ring, req, approver, **kwargs))  # type: ignore[arg-type]
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == ASK, why


def test_approval_for_a_different_amount_does_not_allow(pdp: Pdp) -> None:
    approved = load_request("require-approval-high-risk.json")
    tokens = approved_through_the_desk(pdp, approved, ["rita.okafor@bank.example"])
    bigger = load_request("require-approval-high-risk.json")
    bigger.context.action.arguments["amount"] = 450000
    bigger.approval_tokens.extend(tokens)
    assert pdp.stub.Decide(bigger, timeout=5).outcome != ALLOW


def test_two_person_rule_needs_two_distinct_officers(pdp: Pdp) -> None:
    req = load_request("defense-require-approval-two-person.json")
    one = approved_through_the_desk(pdp, req, ["sgt.ray@army.example"])
    req.approval_tokens.extend(one + one)
    assert pdp.stub.Decide(req, timeout=5).outcome == ASK
    req = load_request("defense-require-approval-two-person.json")
    both = approved_through_the_desk(pdp, req, ["sgt.ray@army.example", "capt.ng@army.example"])
    req.approval_tokens.extend(both)
    assert pdp.stub.Decide(req, timeout=5).outcome == ALLOW
