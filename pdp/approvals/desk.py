"""The approvals desk: the one place escalations are opened, shown, approved, rejected and awaited.

The gRPC ApprovalService (:mod:`pdp.grpc.approvals`), the CLI (``pdp approvals``) and the web
console are thin faces over :class:`ApprovalDesk`. The desk never takes an approver's identity,
roles or activity from a request: the face passes the identity its transport authenticated (mTLS
certificate, console session), and :meth:`ApprovalDesk.approver` looks the roles up in the approver
registry of the policy data (``data.pdp.approvals.approvers``) at the time of each step.

Rules every step keeps (docs/approvals.md):

* no self-approval: neither the agent, nor its principal (verified or asserted), nor the agent's
  owner may vote on an escalation about them (:class:`ApprovalRefused` ``self_approval``);
* an approver must be in the registry (``unknown_approver``), active (``inactive``) and hold the
  escalation's role (``missing_role``);
* the store refuses (:class:`pdp.state.EscalationError`) a vote on an unknown (``not_found``),
  expired (``expired``) or decided (``decided``) escalation, and a second vote of one approver
  (``duplicate_approver``); ``count`` distinct approvers holding the role approve it;
* every step is a signed :class:`pdp.schema.EscalationRecord` in the decision log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pdp.approvals.tokens import issue_approval
from pdp.authz import identity_of
from pdp.decision import Decision
from pdp.errors import NotFound, PdpError
from pdp.opa import OpaClient
from pdp.recorder import Recorder
from pdp.schema import EscalationRecord
from pdp.state import Escalation, EscalationError, StateStore, Vote
from pdp.verdict import Outcome

log = logging.getLogger(__name__)

__all__ = [
    "ApprovalDesk",
    "ApprovalRefused",
    "Approved",
    "Approver",
    "Escalation",
    "EscalationError",
    "Unauthenticated",
    "facts_of",
    "opa_registry",
]

REGISTRY_PATH = "pdp/approvals/approvers"
"""Where the approver registry is in the policy data: ``{identity: {"active": bool, "roles": [...]}}``."""

_POLL_S = 0.2  # how often a wait looks at the shared store (another replica may take the step)
_COMMENT_MAX = 1024


class ApprovalRefused(PdpError):
    """The approver may not take this step; ``reason`` is ``self_approval``, ``missing_role``,
    ``inactive`` or ``unknown_approver``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class Unauthenticated(PdpError):
    """The caller of an approvals face is not authenticated (no client certificate, no session)."""

    hint = "call with a client certificate (mTLS); see docs/approvals.md"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approver:
    """An authenticated approver, with roles and activity from the registry at the time of the step."""

    identity: str
    roles: tuple[str, ...]
    active: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approved:
    """An approve step: the escalation after it, and this approver's approval token."""

    escalation: Escalation
    token: str


Registry = Callable[[], dict[str, Any]]
"""Reads the whole approver registry, now (raises a :class:`pdp.errors.NoVerdict` when it cannot)."""


def opa_registry(opa_url: str, *, timeout_s: float) -> Registry:
    """The approver registry as the running policy has it, read from OPA's data API on each call."""
    client = OpaClient(opa_url, REGISTRY_PATH)

    def read() -> dict[str, Any]:
        answer = client.query({}, timeout_s=timeout_s)
        return answer.result if isinstance(answer.result, dict) else {}

    return read


def facts_of(input_doc: dict[str, Any]) -> dict[str, Any]:
    """What an escalation needs from a decision's policy input, in either input shape (v1: flat;
    v2: ``bound`` / ``verified`` / ``asserted``, docs/trust.md).

    Returns:
        ``action_digest``, ``agent_id``, ``agent_owner``, ``principal_id`` (the verified one when
        there is one, else the asserted one), ``principals`` (every principal id named),
        ``caller`` (the transport-authenticated caller's identity, :func:`pdp.authz.identity_of`:
        its SPIFFE ID, else its certificate subject; "" without a certificate), and ``context``
        (what an approver must see).
    """
    bound = input_doc.get("bound")
    if isinstance(bound, dict):  # v2
        asserted = input_doc.get("asserted") or {}
        verified = input_doc.get("verified") or {}
        named = [str((verified.get("principal") or {}).get("id") or ""), str(asserted["principal"].get("id") or "")]
        owner = str(asserted["agent"].get("owner") or "")
        resource = {**input_doc["resource"], **asserted.get("resource", {})}
        risk = verified.get("risk") or asserted.get("risk") or {}
        lineage = verified.get("lineage") or asserted.get("lineage") or []
        caller, digest = bound.get("caller"), bound["action_digest"]
    else:  # v1
        named = [str(input_doc["principal"].get("id") or "")]
        owner = str(input_doc["agent"].get("owner") or "")
        resource, risk, lineage = input_doc["resource"], input_doc["risk"], input_doc["lineage"]
        caller, digest = input_doc.get("caller"), input_doc["action_digest"]
    requester = identity_of(caller) if isinstance(caller, dict) else ""  # masked or erased in a shown input
    principals = [p for p in named if p]
    action = input_doc["action"]
    return {
        "action_digest": digest,
        "agent_id": input_doc["agent"]["id"],
        "agent_owner": owner,
        "principal_id": principals[0] if principals else "",
        "principals": principals,
        "caller": requester,
        "context": {
            "tool": action["tool"],
            "operation": action.get("operation", ""),
            "arguments": action.get("arguments", {}),
            "destination": action.get("destination", {}),
            "resource": resource,
            "classification": resource.get("classification", ""),
            "agent": {"id": input_doc["agent"]["id"], "owner": owner},
            "principal": {"id": principals[0] if principals else "", "all": principals},
            "risk": risk,
            "lineage": lineage,
            "caller": requester,
        },
    }


class ApprovalDesk:
    """Escalations over the shared store, every step signed into the decision log.

    Args:
        store: the shared state store (escalations, votes).
        recorder: signs and logs each step; its key ring signs the approval tokens.
        registry: reads the approver registry (roles, activity) at each step.
        escalation_ttl_s: how long an escalation stays open (``PDP_ESCALATION_TTL_SECONDS``).
        approval_ttl_s: how long an approval token is valid after the vote (``PDP_APPROVAL_TTL_SECONDS``).
    """

    def __init__(
        self,
        *,
        store: StateStore,
        recorder: Recorder,
        registry: Registry,
        escalation_ttl_s: int,
        approval_ttl_s: int,
    ) -> None:
        self._store = store
        self._recorder = recorder
        self._registry = registry
        self._escalation_ttl = escalation_ttl_s
        self._approval_ttl = approval_ttl_s

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def approval_ttl_s(self) -> int:
        """How long an approval token is valid after its vote (``PDP_APPROVAL_TTL_SECONDS``)."""
        return self._approval_ttl

    def approver(self, identity: str) -> Approver:
        """The approver ``identity`` as the registry has it now; unknown: no roles, inactive."""
        entry = self._registry().get(identity) if identity else None
        if not isinstance(entry, dict):
            return Approver(identity=identity, roles=(), active=False)
        roles = tuple(str(r) for r in entry.get("roles") or () if isinstance(r, str))
        return Approver(identity=identity, roles=roles, active=entry.get("active") is True)

    def open(self, *, decision: Decision, input_doc: dict[str, Any], now: int) -> Escalation | None:
        """Opens the escalation of a logged REQUIRE_APPROVAL decision (the pipeline only).

        The requirement is the decision's first ``approval.required`` obligation (by reason, role):
        one role and count per escalation. When the policy asks for several, the retry with this
        escalation's tokens is REQUIRE_APPROVAL again for the rest, which opens the next one; the
        agent retries with all tokens it holds.

        Returns:
            The escalation, or None when the decision is not REQUIRE_APPROVAL or names no requirement.

        Raises:
            StateUnavailable: the store is down (the decision stays REQUIRE_APPROVAL).
            LedgerUnavailable: the step could not be recorded.
        """
        v = decision.verdict
        wanted = sorted(
            (str(o.params.get("reason", "")), str(o.params.get("role", "")), o.params.get("count", 1))
            for o in v.obligations
            if o.type == "approval.required" and o.params.get("role")
        )
        if v.outcome is not Outcome.REQUIRE_APPROVAL or not wanted:
            return None
        _, role, count = wanted[0]
        facts = facts_of(input_doc)
        shown = facts_of(self._recorder.shown(input_doc))["context"]  # what records show: masked
        shown["reasons"] = [{"code": r.code, "message": r.message} for r in v.reasons]
        shown["agent"]["owner"], shown["principals"] = facts["agent_owner"], facts["principals"]
        # The requester, from the caller as the transport authenticated it (never a masked copy): the
        # approvals faces answer WaitEscalation / GetApprovalTokens / access request polls only to a
        # caller whose identity_of is this.
        shown["caller"] = facts["caller"]
        escalation = Escalation(
            id=str(uuid.uuid4()),
            decision_id=decision.decision_id,
            action_digest=facts["action_digest"],
            agent_id=facts["agent_id"],
            principal_id=facts["principal_id"],
            reasons=[r.code for r in v.reasons],
            role=role,
            count=max(1, int(count)),
            created_at=now,
            expires_at=now + self._escalation_ttl,
            context=shown,
        )
        self._store.open_escalation(escalation)
        self._log(escalation, "opened", actor=facts["caller"] or "pdp", at=now)
        return escalation

    def pending(self, approver: Approver, *, now: int) -> list[Escalation]:
        """The open, unexpired escalations this approver may act on (role held, not about them)."""
        self.expire(now=now)
        if not approver.active:
            return []
        return [
            e
            for e in self._store.list_escalations(status="open", now=now)
            if e.role in approver.roles and not _about(e, approver.identity)
        ]

    def get(self, escalation_id: str, approver: Approver, *, now: int) -> Escalation:
        """One escalation, if this approver holds its role (else, as when it does not exist, NotFound)."""
        self.expire(now=now)
        e = self._store.get_escalation(escalation_id)
        if e is None or not approver.active or e.role not in approver.roles:
            raise NotFound(f"no escalation {escalation_id} for approver {approver.identity}")
        return e

    def approve(self, escalation_id: str, approver: Approver, *, comment: str, now: int) -> Approved:
        """The approver approves; returns the escalation after the vote and the approver's token.

        Raises:
            ApprovalRefused: self-approval, unknown, inactive, or the role is missing.
            EscalationError: not_found, expired, decided, duplicate_approver.
        """
        e = self._vote(escalation_id, approver, approve=True, comment=comment, now=now)
        vote = next(v for v in e.votes if v.approver == approver.identity)
        return Approved(escalation=e, token=self._token(e, vote))

    def reject(self, escalation_id: str, approver: Approver, *, comment: str, now: int) -> Escalation:
        """The approver rejects: one rejection closes the escalation. Raises as :meth:`approve`."""
        return self._vote(escalation_id, approver, approve=False, comment=comment, now=now)

    def wait(self, escalation_id: str, *, timeout_s: float, changed_from: Escalation | None = None) -> Escalation:
        """The escalation once it is decided or expired, or once it differs from ``changed_from``
        (a vote, a status), or as it is when ``timeout_s`` has passed.

        Raises:
            EscalationError: not_found.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            now = int(time.time())
            self.expire(now=now)
            e = self._store.get_escalation(escalation_id)
            if e is None:
                raise EscalationError(escalation_id, "not_found", "no such escalation")
            if e.status != "open" or (changed_from is not None and e != changed_from):
                return e
            if time.monotonic() >= deadline:
                return e
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))

    def tokens(self, escalation_id: str, *, now: int) -> list[str]:
        """The approval tokens of the votes that count so far (the same tokens on every call).

        Raises:
            EscalationError: not_found.
        """
        e = self._store.get_escalation(escalation_id)
        if e is None:
            raise EscalationError(escalation_id, "not_found", "no such escalation")
        return [self._token(e, v) for v in e.votes if v.approve and e.role in v.roles]

    def escalation(self, escalation_id: str) -> Escalation:
        """The escalation as stored, for the agent's side (the face checks who asks).

        Raises:
            EscalationError: not_found.
        """
        e = self._store.get_escalation(escalation_id)
        if e is None:
            raise EscalationError(escalation_id, "not_found", "no such escalation")
        return e

    def expire(self, *, now: int) -> list[Escalation]:
        """Moves open escalations past their expiry to ``expired`` and logs each (once, across replicas)."""
        moved = self._store.expire_due(now=now)
        for e in moved:
            self._log(e, "expired", actor="pdp", at=now)
        return moved

    def consumed(self, escalation: Escalation, *, by_decision_id: str, actor: str, now: int) -> None:
        """Logs that an ALLOW decision consumed the escalation (the pipeline, after consuming it)."""
        self._log(escalation, "consumed", actor=actor or "pdp", at=now, by_decision_id=by_decision_id)

    def _vote(self, escalation_id: str, approver: Approver, *, approve: bool, comment: str, now: int) -> Escalation:
        if len(comment) > _COMMENT_MAX:
            raise ApprovalRefused("comment", f"is longer than {_COMMENT_MAX} characters")
        e = self._store.get_escalation(escalation_id)
        if e is None:
            raise EscalationError(escalation_id, "not_found", "no such escalation")
        if _about(e, approver.identity):
            raise ApprovalRefused(
                "self_approval", f"{approver.identity} is the agent, its principal or the agent's owner of this action"
            )
        if not approver.roles and not approver.active:
            raise ApprovalRefused("unknown_approver", f"{approver.identity} is not in the approver registry")
        if not approver.active:
            raise ApprovalRefused("inactive", f"{approver.identity} is not an active approver")
        if e.role not in approver.roles:
            raise ApprovalRefused("missing_role", f"{approver.identity} does not hold the role {e.role!r}")
        vote = Vote(approver=approver.identity, roles=list(approver.roles), approve=approve, comment=comment, at=now)
        try:
            after = self._store.record_vote(escalation_id, vote, now=now)
        except EscalationError as err:
            if err.reason == "expired":
                self.expire(now=now)
            raise
        self._log(
            after, "approved" if approve else "rejected", actor=approver.identity, at=now, vote=vote, comment=comment
        )
        return after

    def _token(self, e: Escalation, vote: Vote) -> str:
        return issue_approval(
            self._recorder.ring,
            escalation_id=e.id,
            decision_id=e.decision_id,
            action_digest=e.action_digest,
            agent_id=e.agent_id,
            principal_id=e.principal_id,
            approver=vote.approver,
            approver_roles=list(vote.roles),
            now=vote.at,
            ttl_s=self._approval_ttl,
            jti=hashlib.sha256(f"{e.id}\n{vote.approver}".encode()).hexdigest()[:32],
        )

    def _log(
        self,
        e: Escalation,
        step: str,
        *,
        actor: str,
        at: int,
        vote: Vote | None = None,
        comment: str = "",
        by_decision_id: str = "",
    ) -> None:
        self._recorder.record_escalation(
            EscalationRecord(
                decision_id=e.decision_id,
                timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
                step=step,
                escalation=summary(e),
                actor=actor,
                step_at=at,
                actor_roles=tuple(vote.roles) if vote else (),
                comment=comment,
                by_decision_id=by_decision_id,
                decision_log_index="",  # the recorder links it when its log holds the decision
                decision_record_digest="",
                iat=0,
                jti="",
            )
        )


def summary(e: Escalation) -> dict[str, Any]:
    """What an escalation record says of the escalation (no action data beyond its digest)."""
    return {
        "id": e.id,
        "decision_id": e.decision_id,
        "action_digest": e.action_digest,
        "agent_id": e.agent_id,
        "principal_id": e.principal_id,
        "reasons": list(e.reasons),
        "role": e.role,
        "count": e.count,
        "expires_at": e.expires_at,
        "status": e.status,
        "approvers": e.approvers(),
    }


def _about(e: Escalation, identity: str) -> bool:
    """Whether ``identity`` is the agent, a principal or the agent's owner of the escalated action."""
    ctx = e.context
    named = {e.agent_id, e.principal_id, str(ctx.get("agent", {}).get("owner", "")), *ctx.get("principals", [])}
    return identity in named - {""}


class ExpirySweep:
    """Expires (and logs) escalations past their expiry every ``interval_s``, so an escalation's
    ``expired`` record is written when it expires, not at the next call to the desk.

    Args:
        desk: the desk whose escalations it expires.
        interval_s: seconds between sweeps.
    """

    def __init__(self, desk: ApprovalDesk, *, interval_s: float) -> None:
        self._desk = desk
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="escalation-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._desk.expire(now=int(time.time()))
            except PdpError as e:  # the store or the log is down: the next sweep (or desk call) retries
                log.warning("escalation sweep: %s", e)
