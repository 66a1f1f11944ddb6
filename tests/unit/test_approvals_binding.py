"""The pipeline's approvals step on both input shapes, and the settings that guard the dev login."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pdp import keys
from pdp.approvals.binding import bind
from pdp.approvals.desk import facts_of
from pdp.approvals.tokens import issue_approval
from pdp.config import Settings
from pdp.errors import ConfigError

DIGEST = "sha256:" + "a" * 64


def v1() -> dict[str, Any]:
    return {
        "caller": {"authenticated": True, "subject": "pep-1"},
        "agent": {"id": "payments-agent", "owner": "treasury-ops"},
        "principal": {"id": "bob@bank.example"},
        "action": {"tool": "payments.transfer", "arguments": {"amount": 1}},
        "resource": {"type": "account", "id": "A-1", "classification": "confidential"},
        "risk": {"score": 10},
        "lineage": [],
        "approvals": [],
        "action_digest": DIGEST,
    }


def v2() -> dict[str, Any]:
    """The trust-model input (bound / verified / asserted)."""
    return {
        "bound": {"caller": {"authenticated": True, "subject": "pep-1"}, "action_digest": DIGEST, "approvals": []},
        "agent": {"id": "payments-agent"},
        "action": {"tool": "payments.transfer", "arguments": {"amount": 1}},
        "resource": {"type": "account", "id": "A-1"},
        "verified": {"principal": {"id": "bob@bank.example"}},
        "asserted": {
            "agent": {"owner": "treasury-ops"},
            "principal": {"id": "robert@bank.example"},
            "resource": {"classification": "confidential"},
            "risk": {"score": 10},
        },
    }


def _token(ring: keys.KeyRing, approver: str, now: int) -> str:
    """An approval of payments-agent's DIGEST action for bob, signed by ``ring``."""
    return issue_approval(
        ring,
        escalation_id="e-1",
        decision_id="d-1",
        action_digest=DIGEST,
        agent_id="payments-agent",
        principal_id="bob@bank.example",
        approver=approver,
        approver_roles=["payments_approver"],
        now=now,
        ttl_s=60,
    )


@pytest.mark.parametrize("shape", [v1, v2])
def test_facts_are_read_from_either_input_shape(shape: Any) -> None:
    f = facts_of(shape())
    assert (f["action_digest"], f["agent_id"], f["agent_owner"], f["caller"]) == (
        DIGEST,
        "payments-agent",
        "treasury-ops",
        "pep-1",
    )
    assert f["principal_id"] == "bob@bank.example"  # the verified one first
    assert f["context"]["classification"] == "confidential"


def test_verified_approvals_go_where_the_policy_reads_them(tmp_path: Path) -> None:
    ring = keys.ensure(tmp_path)
    now = int(time.time())
    token = _token(ring, "dan.meyer@bank.example", now)
    for doc, where in ((v1(), lambda d: d["approvals"]), (v2(), lambda d: d["bound"]["approvals"])):
        bound = bind(doc, [token, "not-a-token"], jwks=ring.jwks, now=now)
        (approval,) = where(doc)
        assert approval["approver_id"] == "dan.meyer@bank.example" and approval["action_digest"] == DIGEST
        assert [r["check"] for r in bound.rejected] == ["jws"]


def test_self_approval_by_an_asserted_principal_is_ignored(tmp_path: Path) -> None:
    ring = keys.ensure(tmp_path)
    now = int(time.time())
    token = _token(ring, "robert@bank.example", now)  # the principal the caller asserted
    doc = v2()
    bound = bind(doc, [token], jwks=ring.jwks, now=now)
    assert doc["bound"]["approvals"] == [] and [r["check"] for r in bound.rejected] == ["self_approval"]


@pytest.mark.parametrize(
    "env",
    [
        {"PDP_APPROVALS_DEV_LOGIN": "1", "PDP_LISTEN": "0.0.0.0:50051"},
        {"PDP_APPROVALS_DEV_LOGIN": "yes"},
    ],
)
def test_the_dev_login_is_loopback_only(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="PDP_APPROVALS_DEV_LOGIN"):
        Settings.from_env(env)


def test_the_dev_login_on_loopback_is_accepted() -> None:
    assert Settings.from_env({"PDP_APPROVALS_DEV_LOGIN": "1"}).approvals_dev_login
