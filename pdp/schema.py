"""The signed records' schema, owned here: typed, frozen classes with ``to_dict``/``from_dict``.

A record's wire form is the JSON object that is the payload of its JWS (see :mod:`pdp.records`
for signing and verifying, and docs/records.md for every field). ``to_dict`` gives exactly that
object (the signer serialises it once, compact with sorted keys); ``from_dict`` reads one back
from verified claims. Verification always works on the exact signed bytes, never on a
re-serialisation, so a record written by any earlier version verifies as it was signed.

Every record has a JWS ``typ`` and a ``pdp`` object with its ``type`` and, once appended, its
``log_index``. A new kind of record (approvals, escalations) is one more class here with its
``TYP`` and ``KIND``, added to :data:`RECORD_TYPES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pdp.errors import RecordError

TYP_DECISION = "pdp-decision+jws"
TYP_OUTCOME = "pdp-outcome+jws"
TYP_ESCALATION = "pdp-escalation+jws"
ESCALATION_STEPS = ("opened", "approved", "rejected", "expired", "consumed")
SCHEMA_VERSION = 1


def _field(claims: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    value = claims.get(name)
    if not isinstance(value, kind):
        raise RecordError(f"{where}{name}: missing or not a {getattr(kind, '__name__', 'valid value')}")
    return value


def _object(claims: Mapping[str, Any], name: str, where: str = "") -> dict[str, Any]:
    value: dict[str, Any] = _field(claims, name, dict, where)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordHead:
    """What the log needs of any record: its kind, decision, signed index, and link (outcomes)."""

    kind: str
    decision_id: str
    log_index: str | None
    decision_record_digest: str | None = None

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> RecordHead:
        """Reads the head of any record, tolerating every other field's absence."""
        pdp = claims.get("pdp")
        pdp = pdp if isinstance(pdp, dict) else {}
        decision_id = claims.get("decision_id")
        return cls(
            kind=str(pdp.get("type", "")),
            decision_id=decision_id if isinstance(decision_id, str) else "",
            log_index=pdp.get("log_index"),
            decision_record_digest=pdp.get("decision_record_digest"),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecisionClaims:
    """The ``pdp`` object of a decision record: what a PEP checks before it acts."""

    request_id: str
    request_digest: str
    caller: dict[str, Any]
    agent: dict[str, Any]
    tool: str
    principal: str
    action_digest: str
    outcome: str
    reasons: tuple[str, ...]
    obligations: tuple[dict[str, Any], ...]
    indeterminate: bool
    error_code: str
    explanation_digest: str
    opa_version: str
    iat: int = 0
    exp: int = 0
    jti: str = ""
    log_index: str = ""  # large integers travel as strings
    approvals: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The approval tokens the request carried: ``verified`` (jti, approver, escalation_id each),
    ``rejected`` (``{"token": i, "check", "problem"}``: ignored), ``consumed`` (bool). Absent when
    the request carried none."""

    def to_dict(self) -> dict[str, Any]:
        extra = {"approvals": self.approvals} if self.approvals else {}
        return extra | {
            "type": DecisionRecord.KIND,
            "version": SCHEMA_VERSION,
            "request_id": self.request_id,
            "request_digest": self.request_digest,
            "caller": self.caller,
            "agent": self.agent,
            "tool": self.tool,
            "principal": self.principal,
            "action_digest": self.action_digest,
            "outcome": self.outcome,
            "reasons": list(self.reasons),
            "obligations": list(self.obligations),
            "indeterminate": self.indeterminate,
            "error_code": self.error_code,
            "explanation_digest": self.explanation_digest,
            "opa_version": self.opa_version,
            "iat": self.iat,
            "exp": self.exp,
            "jti": self.jti,
            "log_index": self.log_index,
        }

    @classmethod
    def from_dict(cls, pdp: Mapping[str, Any]) -> DecisionClaims:
        w = "pdp."
        return cls(
            request_id=_field(pdp, "request_id", str, w),
            request_digest=_field(pdp, "request_digest", str, w),
            caller=_object(pdp, "caller", w),
            agent=_object(pdp, "agent", w),
            tool=_field(pdp, "tool", str, w),
            principal=_field(pdp, "principal", str, w),
            action_digest=_field(pdp, "action_digest", str, w),
            outcome=_field(pdp, "outcome", str, w),
            reasons=tuple(_field(pdp, "reasons", list, w)),
            obligations=tuple(_field(pdp, "obligations", list, w)),
            indeterminate=_field(pdp, "indeterminate", bool, w),
            error_code=_field(pdp, "error_code", str, w),
            explanation_digest=_field(pdp, "explanation_digest", str, w),
            opa_version=_field(pdp, "opa_version", str, w),
            iat=_field(pdp, "iat", int, w),
            exp=_field(pdp, "exp", int, w),
            jti=_field(pdp, "jti", str, w),
            log_index=_field(pdp, "log_index", str, w),
            approvals=_field(pdp, "approvals", dict, w) if "approvals" in pdp else {},
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """A decision record: OPA's decision-log event fields, and the PDP's own ``pdp`` claims.

    The pipeline makes it (:meth:`pdp.decide.Decider`); the recorder fills in what only it knows
    (the redacted input, trace, times, token id, log index) just before signing.
    """

    TYP: ClassVar[str] = TYP_DECISION
    KIND: ClassVar[str] = "decision"

    decision_id: str
    path: str
    result: dict[str, Any]
    bundles: dict[str, dict[str, str]]
    timestamp: str
    metrics: dict[str, int]
    pdp: DecisionClaims
    input: dict[str, Any] = dataclasses.field(default_factory=dict)
    masked: tuple[str, ...] = ()
    erased: tuple[str, ...] = ()
    trace_id: str = ""
    span_id: str = ""
    requested_by: str = ""

    def at(self, log_index: int) -> Self:
        """This record as signed for log index ``log_index``."""
        return dataclasses.replace(self, pdp=dataclasses.replace(self.pdp, log_index=str(log_index)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "path": self.path,
            "result": self.result,
            "bundles": self.bundles,
            "timestamp": self.timestamp,
            "metrics": self.metrics,
            "input": self.input,
            "masked": list(self.masked),
            "erased": list(self.erased),
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "requested_by": self.requested_by,
            "pdp": self.pdp.to_dict(),
        }

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> DecisionRecord:
        """Reads verified claims.

        Raises:
            RecordError: a field is missing or of the wrong type (the message names it).
        """
        return cls(
            decision_id=_field(claims, "decision_id", str),
            path=_field(claims, "path", str),
            result=_object(claims, "result"),
            bundles=_object(claims, "bundles"),
            timestamp=_field(claims, "timestamp", str),
            metrics=_object(claims, "metrics"),
            input=_object(claims, "input"),
            masked=tuple(_field(claims, "masked", list)),
            erased=tuple(_field(claims, "erased", list)),
            trace_id=_field(claims, "trace_id", str),
            span_id=_field(claims, "span_id", str),
            requested_by=_field(claims, "requested_by", str),
            pdp=DecisionClaims.from_dict(_object(claims, "pdp")),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutcomeReport:
    """What a PEP reports it did with a decision (ReportOutcome)."""

    status: str  # executed, blocked or failed
    result: dict[str, Any]
    impact: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "result": self.result, "impact": self.impact}

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> OutcomeReport:
        w = "outcome."
        return cls(
            status=_field(report, "status", str, w),
            result=_object(report, "result", w),
            impact=_object(report, "impact", w),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutcomeRecord:
    """An outcome report as logged, linked to its decision record by index and digest."""

    TYP: ClassVar[str] = TYP_OUTCOME
    KIND: ClassVar[str] = "outcome"

    decision_id: str
    timestamp: str
    outcome: OutcomeReport
    requested_by: str
    decision_log_index: str
    decision_record_digest: str
    iat: int
    jti: str
    log_index: str = ""

    def at(self, log_index: int) -> Self:
        """This record as signed for log index ``log_index``."""
        return dataclasses.replace(self, log_index=str(log_index))

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "outcome": self.outcome.to_dict(),
            "requested_by": self.requested_by,
            "pdp": {"type": self.KIND, **_link(self)},
        }

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> OutcomeRecord:
        """Reads verified claims.

        Raises:
            RecordError: a field is missing or of the wrong type (the message names it).
        """
        pdp = _object(claims, "pdp")
        return cls(
            decision_id=_field(claims, "decision_id", str),
            timestamp=_field(claims, "timestamp", str),
            outcome=OutcomeReport.from_dict(_object(claims, "outcome")),
            requested_by=_field(claims, "requested_by", str),
            **_link_of(pdp),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class EscalationRecord:
    """One step of an escalation (docs/approvals.md), linked to the decision that opened it.

    ``escalation`` is the escalation after the step (id, decision_id, action_digest, agent_id,
    principal_id, reasons, role, count, expires_at, status, approvers). ``actor`` is who took the
    step: the approver (approved, rejected; ``actor_roles`` their registry roles then), or the
    caller whose decision opened or consumed it, or ``pdp`` (expired). ``by_decision_id`` is the
    ALLOW decision that consumed it. ``decision_log_index`` / ``decision_record_digest`` link the
    opening decision's record when it is in this log (another replica's log otherwise: empty).
    """

    TYP: ClassVar[str] = TYP_ESCALATION
    KIND: ClassVar[str] = "escalation"

    decision_id: str
    timestamp: str
    step: str
    escalation: dict[str, Any]
    actor: str
    step_at: int  # unix seconds (``pdp.at``)
    actor_roles: tuple[str, ...] = ()
    comment: str = ""
    by_decision_id: str = ""
    decision_log_index: str = ""
    decision_record_digest: str = ""
    iat: int = 0
    jti: str = ""
    log_index: str = ""

    def __post_init__(self) -> None:
        if self.step not in ESCALATION_STEPS:
            raise RecordError(f"pdp.step: must be one of {ESCALATION_STEPS}, not {self.step!r}")

    def at(self, log_index: int) -> Self:
        """This record as signed for log index ``log_index``."""
        return dataclasses.replace(self, log_index=str(log_index))

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "requested_by": self.actor,
            "escalation": self.escalation,
            "pdp": {
                "type": self.KIND,
                "step": self.step,
                "escalation_id": str(self.escalation.get("id", "")),
                "at": self.step_at,
                "actor": self.actor,
                "actor_roles": list(self.actor_roles),
                "comment": self.comment,
                "by_decision_id": self.by_decision_id,
                **_link(self),
            },
        }

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> EscalationRecord:
        """Reads verified claims.

        Raises:
            RecordError: a field is missing or of the wrong type (the message names it).
        """
        pdp = _object(claims, "pdp")
        w = "pdp."
        return cls(
            decision_id=_field(claims, "decision_id", str),
            timestamp=_field(claims, "timestamp", str),
            escalation=_object(claims, "escalation"),
            step=_field(pdp, "step", str, w),
            actor=_field(pdp, "actor", str, w),
            step_at=_field(pdp, "at", int, w),
            actor_roles=tuple(_field(pdp, "actor_roles", list, w)),
            comment=_field(pdp, "comment", str, w),
            by_decision_id=_field(pdp, "by_decision_id", str, w),
            **_link_of(pdp),
        )


_LINK = {"decision_log_index": str, "decision_record_digest": str, "iat": int, "jti": str, "log_index": str}
"""The ``pdp`` fields of a record about a decision (outcome, escalation step): its link and its own ids."""


def _link(record: OutcomeRecord | EscalationRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _LINK}


def _link_of(pdp: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _field(pdp, name, kind, "pdp.") for name, kind in _LINK.items()}


Record = DecisionRecord | OutcomeRecord | EscalationRecord
"""Any record the PDP signs and logs."""

RECORD_TYPES: dict[str, type[DecisionRecord] | type[OutcomeRecord] | type[EscalationRecord]] = {
    TYP_DECISION: DecisionRecord,
    TYP_OUTCOME: OutcomeRecord,
    TYP_ESCALATION: EscalationRecord,
}
"""Each record class by its JWS ``typ``."""
