"""The pipeline's approvals step: verify the tokens a request carries, bind the verified ones into
the policy input, and consume them when an ALLOW rests on them.

The PDP, not the caller, says which approvals exist: only tokens it signed itself, bound to the
action digest it recomputed from this request, to this agent and principal, unexpired, and not
used before, reach the policy (``input.bound.approvals``; ``input.approvals`` in the v1 input
shape), in the shape the policy reads::

    {"id": jti, "escalation_id", "approver_id", "approver_roles", "action_digest", "expires_at": RFC 3339}

A token that fails a check is ignored, and the record says which check (``pdp.approvals.rejected``):
it can never make a decision an ALLOW, because the policy only ever sees fewer approvals. The
policy keeps its own checks (registry, roles, count, self-approval) as a second line.

An ALLOW whose input holds verified approvals consumes every one of them before it is answered,
atomically across replicas: ``store.first_use`` of each token id, then ``consume_escalation`` of
each escalation they came from. A token already used, or an escalation already consumed, turns the
answer into DENY ``approval.reused``; an escalation not (yet) approved, DENY ``approval.incomplete``;
the store down, DENY ``pdp.state_unavailable`` (fail closed).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import Any

from pdp.approvals.desk import ApprovalDesk, facts_of
from pdp.approvals.tokens import CONSUMED_PREFIX, Approval, ApprovalError, verify_approval
from pdp.decision import Decision
from pdp.errors import PdpError
from pdp.state import Escalation, EscalationError, StateStore, StateUnavailable
from pdp.verdict import RULE_APPROVALS, Outcome, Reason, Verdict, fail_closed

log = logging.getLogger(__name__)

REUSED = "approval.reused"
INCOMPLETE = "approval.incomplete"
SELF_APPROVAL = "self_approval"
_MAX_TOKENS = 16
_TOKEN_MAX_BYTES = 4096


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bound:
    """The approvals of one request: those verified (in the policy input) and those ignored."""

    verified: tuple[Approval, ...] = ()
    rejected: tuple[dict[str, Any], ...] = ()

    def claims(self, *, consumed: bool = False) -> dict[str, Any]:
        """What the decision record says (``pdp.approvals``); empty when the request carried none."""
        if not self.verified and not self.rejected:
            return {}
        return {
            "verified": [
                {"jti": a.jti, "approver": a.approver, "escalation_id": a.escalation_id} for a in self.verified
            ],
            "rejected": list(self.rejected),
            "consumed": consumed,
        }


def bind(input_doc: dict[str, Any], tokens: Sequence[str], *, jwks: dict[str, Any], now: int) -> Bound:
    """Verifies ``tokens`` against the request in ``input_doc`` and writes the verified approvals
    into it (see the module docstring); the input must already hold the recomputed action digest."""
    facts = facts_of(input_doc)
    verified: list[Approval] = []
    rejected: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, token in enumerate(tokens):
        try:
            if i >= _MAX_TOKENS or len(token) > _TOKEN_MAX_BYTES:
                raise ApprovalError("size", f"at most {_MAX_TOKENS} tokens of {_TOKEN_MAX_BYTES} bytes each")
            approval = verify_approval(
                token,
                jwks,
                action_digest=facts["action_digest"],
                agent_id=facts["agent_id"],
                principal_id=facts["principal_id"],
                now=now,
            )
            if approval.approver in {facts["agent_id"], facts["agent_owner"], *facts["principals"]}:
                raise ApprovalError(SELF_APPROVAL, f"{approval.approver} may not approve their own action")
            if approval.jti in seen:
                raise ApprovalError("duplicate", "the same token twice in one request")
        except ApprovalError as e:
            rejected.append({"token": i, "check": e.check, "problem": e.problem})
            continue
        seen.add(approval.jti)
        verified.append(approval)
    shaped = [
        {
            "id": a.jti,
            "escalation_id": a.escalation_id,
            "approver_id": a.approver,
            "approver_roles": list(a.approver_roles),
            "action_digest": a.action_digest,
            "expires_at": datetime.datetime.fromtimestamp(a.exp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for a in verified
    ]
    bound = input_doc.get("bound")
    (bound if isinstance(bound, dict) else input_doc)["approvals"] = shaped
    return Bound(verified=tuple(verified), rejected=tuple(rejected))


def bind_nothing(input_doc: dict[str, Any], tokens: Sequence[str]) -> Bound:
    """No approvals step (no store): no approval reaches the policy, every token is ignored."""
    bound = input_doc.get("bound")
    (bound if isinstance(bound, dict) else input_doc)["approvals"] = []
    problem = "this PDP has no approvals store"
    return Bound(rejected=tuple({"token": i, "check": "unavailable", "problem": problem} for i in range(len(tokens))))


def consume(store: StateStore, bound: Bound, verdict: Verdict, *, now: int) -> tuple[Verdict, list[Escalation]]:
    """Consumes the verified approvals of an ALLOW before it is answered (see the module docstring).

    Returns:
        The verdict to answer (the ALLOW, or the DENY it became) and the escalations consumed.
    """
    if verdict.outcome is not Outcome.ALLOW or not bound.verified:
        return verdict, []
    consumed: list[Escalation] = []
    try:
        for a in bound.verified:
            if not store.first_use(CONSUMED_PREFIX + a.jti, a.exp, now=now):
                return _deny(REUSED, f"approval {a.jti} by {a.approver} was already used"), consumed
        for escalation_id in dict.fromkeys(a.escalation_id for a in bound.verified):
            try:
                consumed.append(store.consume_escalation(escalation_id, now=now))
            except EscalationError:
                e = store.get_escalation(escalation_id)
                if e is not None and e.status == "consumed":
                    return _deny(REUSED, f"escalation {escalation_id} was already used"), consumed
                status = e.status if e is not None else "unknown"
                return _deny(INCOMPLETE, f"escalation {escalation_id} is {status}, not approved"), consumed
    except StateUnavailable as e:
        return fail_closed(e), consumed
    return verdict, consumed


def _deny(code: str, message: str) -> Verdict:
    reason = Reason(code=code, message=message, rule=RULE_APPROVALS, severity="high")
    return Verdict(outcome=Outcome.DENY, reasons=(reason,))


class ApprovalsStep:
    """The pipeline's approvals step (:class:`pdp.decide.Decider`): bind before the policy, consume
    before the answer, open or close escalations once the decision is logged.

    Args:
        desk: the approvals desk (its store holds escalations and consumed token ids).
        jwks: the PDP's own JWKS (every key that ever signed): only its own tokens verify.
    """

    def __init__(self, *, desk: ApprovalDesk, jwks: dict[str, Any]) -> None:
        self._desk = desk
        self._jwks = jwks

    def bind(self, input_doc: dict[str, Any], tokens: Sequence[str], *, now: int) -> Bound:
        return bind(input_doc, tokens, jwks=self._jwks, now=now)

    def consume(self, verdict: Verdict, bound: Bound, *, now: int) -> tuple[Verdict, dict[str, Any]]:
        """The verdict to record (see :func:`consume`) and the record's ``pdp.approvals`` claims."""
        answer, consumed = consume(self._desk.store, bound, verdict, now=now)
        return answer, bound.claims(consumed=bool(consumed) and answer.outcome is Outcome.ALLOW)

    def replayed(self, decision: Decision, *, now: int) -> Decision:
        """A retried REQUIRE_APPROVAL answers with the escalation its first answer opened (if any)."""
        if decision.verdict.outcome is not Outcome.REQUIRE_APPROVAL:
            return decision
        try:
            opened = [e for e in self._desk.store.list_escalations(now=now) if e.decision_id == decision.decision_id]
        except PdpError as e:
            log.warning("decision %s: its escalation could not be looked up: %s", decision.decision_id, e)
            return decision
        if not opened:
            return decision
        return dataclasses.replace(decision, escalation_id=opened[-1].id, escalation_expires_at=opened[-1].expires_at)

    def logged(self, decision: Decision, input_doc: dict[str, Any], *, now: int) -> Decision:
        """After the decision is durable: a REQUIRE_APPROVAL opens its escalation (the answer names
        it); an ALLOW that consumed approvals logs the ``consumed`` step of each escalation. A store or
        log failure here leaves the answer as it is (never an ALLOW it was not)."""
        try:
            if decision.verdict.outcome is Outcome.REQUIRE_APPROVAL and decision.record:
                e = self._desk.open(decision=decision, input_doc=input_doc, now=now)
                if e is not None:
                    return dataclasses.replace(decision, escalation_id=e.id, escalation_expires_at=e.expires_at)
            elif decision.approvals.get("consumed"):
                caller = facts_of(input_doc)["caller"]
                for escalation_id in dict.fromkeys(a["escalation_id"] for a in decision.approvals["verified"]):
                    e = self._desk.store.get_escalation(escalation_id)
                    if e is not None:
                        self._desk.consumed(e, by_decision_id=decision.decision_id, actor=caller, now=now)
        except PdpError as e:
            log.warning("decision %s: escalation step not taken: %s", decision.decision_id, e)
        return decision
