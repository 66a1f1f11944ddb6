"""What approval tests share: tokens minted with a PDP's own key (forgeries an attacker holding
that key, or a bug, could make) and the real way, through the desk of a running PDP."""

from __future__ import annotations

import time

from pdp.approvals.tokens import issue_approval
from pdp.client import digest_of
from pdp.keys import KeyRing
from pdp.v1 import decision_pb2 as pb
from tests.helpers import Pdp


def mint(
    ring: KeyRing,
    req: pb.DecideRequest,
    approver: str,
    *,
    roles: tuple[str, ...] = (),
    digest: str | None = None,
    agent: str | None = None,
    principal: str | None = None,
    ttl_s: int = 900,
    now: int | None = None,
    escalation_id: str = "no-such-escalation",
) -> str:
    """An approval token signed by ``ring`` for ``req`` (unless told otherwise), no escalation behind it."""
    return issue_approval(
        ring,
        escalation_id=escalation_id,
        decision_id="no-such-decision",
        action_digest=digest or digest_of(req.context),
        agent_id=agent or req.context.agent.id,
        principal_id=principal if principal is not None else req.context.principal.id,
        approver=approver,
        approver_roles=list(roles),
        now=int(time.time()) if now is None else now,
        ttl_s=ttl_s,
    )


def approved_through_the_desk(pdp: Pdp, req: pb.DecideRequest, approvers: list[str]) -> list[str]:
    """Asks (REQUIRE_APPROVAL opens an escalation), lets ``approvers`` approve it on the PDP's desk,
    and returns the approval tokens; the request gets a new request id for its retry."""
    first = pdp.stub.Decide(req, timeout=5)
    assert first.outcome == pb.OUTCOME_REQUIRE_APPROVAL and first.escalation_id, first
    desk = pdp.server.desk
    assert desk is not None
    for identity in approvers:
        desk.approve(first.escalation_id, desk.approver(identity), comment="ok", now=int(time.time()))
    req.request_id += "-approved"
    return desk.tokens(first.escalation_id, now=int(time.time()))
