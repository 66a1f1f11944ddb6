"""Approval tokens: signed by the PDP's key, bound to one action, agent and principal, and refused by
name when any of that does not hold; single use through the shared state store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk, jws

from pdp import keys
from pdp.approvals.tokens import CONSUMED_PREFIX, TYP_APPROVAL, ApprovalError, issue_approval, verify_approval
from pdp.keys import KeyRing
from pdp.records import TYP_DECISION, sign
from pdp.state import open_store

NOW = 1_800_000_000
DIGEST = "sha256:" + "12" * 32
BINDING = {"action_digest": DIGEST, "agent_id": "payments-agent", "principal_id": "bob@bank.example"}


def approval_claims(**overrides: Any) -> dict[str, Any]:
    return {
        "escalation_id": "esc-1",
        "decision_id": "dec-1",
        **BINDING,
        "approver": "dan.meyer@bank.example",
        "approver_roles": ["payments-approver"],
        **overrides,
    }


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return keys.ensure(tmp_path / "keys")


def issue(ring: KeyRing, **overrides: Any) -> str:
    return issue_approval(ring, **approval_claims(**overrides), now=NOW, ttl_s=300)


def test_a_token_verifies_and_carries_who_approved_what(ring: KeyRing) -> None:
    approval = verify_approval(issue(ring), ring.jwks, **BINDING, now=NOW + 299)
    assert approval.to_dict() | {"jti": "-"} == approval_claims() | {"iat": NOW, "exp": NOW + 300, "jti": "-"}
    assert len(approval.jti) == 32
    assert issue(ring) != issue(ring), "each token has its own jti"


def test_the_token_is_a_standard_jws_an_independent_library_verifies(ring: KeyRing) -> None:
    token = jws.JWS()
    token.deserialize(issue(ring))
    token.verify(jwk.JWK(**ring.jwks["keys"][0]))
    assert token.jose_header["typ"] == TYP_APPROVAL
    assert json.loads(token.payload)["approver"] == "dan.meyer@bank.example"


@pytest.mark.parametrize(
    ("binding", "check"),
    [
        ({"action_digest": "sha256:" + "13" * 32}, "action_digest"),
        ({"agent_id": "other-agent"}, "agent_id"),
        ({"principal_id": "mallory@bank.example"}, "principal_id"),
    ],
)
def test_a_token_for_another_action_agent_or_principal_is_refused(
    ring: KeyRing, binding: dict[str, str], check: str
) -> None:
    with pytest.raises(ApprovalError, match=f"approval token: {check}: the approval is for {check}") as err:
        verify_approval(issue(ring), ring.jwks, **(BINDING | binding), now=NOW)
    assert err.value.check == check


def test_an_action_for_no_verified_principal_is_approved_for_exactly_that(ring: KeyRing) -> None:
    token = issue(ring, principal_id="")  # an agent acting with no principal token: the PDP binds ""
    assert verify_approval(token, ring.jwks, **(BINDING | {"principal_id": ""}), now=NOW).principal_id == ""
    with pytest.raises(ApprovalError, match="principal_id"):
        verify_approval(token, ring.jwks, **BINDING, now=NOW)  # not for a request that names a principal


def test_an_expired_token_is_refused(ring: KeyRing) -> None:
    with pytest.raises(ApprovalError, match="expired: the approval expired at") as err:
        verify_approval(issue(ring), ring.jwks, **BINDING, now=NOW + 300)
    assert err.value.check == "expired"


def test_a_token_signed_by_another_key_is_refused(ring: KeyRing, tmp_path: Path) -> None:
    other = keys.ensure(tmp_path / "other-pdp")
    with pytest.raises(ApprovalError, match="jws: unknown kid") as err:
        verify_approval(issue(other), ring.jwks, **BINDING, now=NOW)
    assert err.value.check == "jws"


def test_a_forged_or_edited_token_is_refused(ring: KeyRing) -> None:
    header, _, signature = issue(ring).split(".")
    forged_payload = keys.b64url(json.dumps(approval_claims(approver="agent-itself", iat=NOW, exp=NOW + 300)).encode())
    with pytest.raises(ApprovalError, match="jws: the signature does not verify"):
        verify_approval(f"{header}.{forged_payload}.{signature}", ring.jwks, **BINDING, now=NOW)
    with pytest.raises(ApprovalError, match="jws: not a JWS"):
        verify_approval("approved by dan, trust me", ring.jwks, **BINDING, now=NOW)


def test_a_decision_record_does_not_pass_for_an_approval(ring: KeyRing) -> None:
    record = sign(approval_claims(iat=NOW, exp=NOW + 300, jti="x"), ring, typ=TYP_DECISION)
    with pytest.raises(ApprovalError, match="jws: typ is 'pdp-decision\\+jws', expected 'pdp-approval\\+jws'"):
        verify_approval(record, ring.jwks, **BINDING, now=NOW)


def test_a_token_missing_a_claim_is_refused_naming_it(ring: KeyRing) -> None:
    claims = approval_claims(iat=NOW, exp=NOW + 300, jti="x")
    del claims["approver_roles"]
    with pytest.raises(ApprovalError, match="claims: approver_roles is missing") as err:
        verify_approval(sign(claims, ring, typ=TYP_APPROVAL), ring.jwks, **BINDING, now=NOW)
    assert err.value.check == "claims"
    with pytest.raises(ApprovalError, match="claims: approver is missing"):
        issue(ring, approver="")


def test_tokens_signed_before_a_key_rotation_still_verify(ring: KeyRing, tmp_path: Path) -> None:
    token = issue(ring)
    rotated = keys.rotate(tmp_path / "keys")
    assert rotated.kid != ring.kid
    assert verify_approval(token, rotated.jwks, **BINDING, now=NOW).approver == "dan.meyer@bank.example"


def test_a_token_is_consumed_once_across_replicas_through_the_state_store(ring: KeyRing, tmp_path: Path) -> None:
    replica_a, replica_b = open_store(tmp_path / "state"), open_store(tmp_path / "state")
    approval = verify_approval(issue(ring), ring.jwks, **BINDING, now=NOW)
    assert replica_a.first_use(CONSUMED_PREFIX + approval.jti, approval.exp, now=NOW) is True
    again = verify_approval(issue(ring), ring.jwks, **BINDING, now=NOW)
    assert replica_b.first_use(CONSUMED_PREFIX + again.jti, again.exp, now=NOW) is True
    assert replica_b.first_use(CONSUMED_PREFIX + approval.jti, approval.exp, now=NOW + 1) is False
    replica_a.close()
    replica_b.close()
