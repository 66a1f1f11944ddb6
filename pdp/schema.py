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
TYP_SHADOW = "pdp-shadow+jws"
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
    # The trust model (docs/trust-model.md); absent from records written before it.
    aud: str | None = None  # the caller the record was made for
    trust: dict[str, Any] | None = None  # which issuers vouched for what, and rejected tokens
    facts: dict[str, Any] | None = None  # the looked-up facts the policy rested on

    def to_dict(self) -> dict[str, Any]:
        optional = {k: v for k, v in (("aud", self.aud), ("trust", self.trust), ("facts", self.facts)) if v is not None}
        return {
            **optional,
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
            aud=_field(pdp, "aud", str, w) if "aud" in pdp else None,
            trust=_object(pdp, "trust", w) if "trust" in pdp else None,
            facts=_object(pdp, "facts", w) if "facts" in pdp else None,
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
class _Linked:
    """What an outcome report and a shadow record share: the link to their decision record by its
    log index and the SHA-256 of its exact bytes, and their own time, token id and log index."""

    decision_log_index: str
    decision_record_digest: str
    iat: int
    jti: str
    log_index: str = ""

    def at(self, log_index: int) -> Self:
        """This record as signed for log index ``log_index``."""
        return dataclasses.replace(self, log_index=str(log_index))

    def _link(self) -> dict[str, Any]:
        return {
            "decision_log_index": self.decision_log_index,
            "decision_record_digest": self.decision_record_digest,
            "iat": self.iat,
            "jti": self.jti,
            "log_index": self.log_index,
        }

    @staticmethod
    def _link_from(pdp: Mapping[str, Any]) -> dict[str, Any]:
        w = "pdp."
        return {
            "decision_log_index": _field(pdp, "decision_log_index", str, w),
            "decision_record_digest": _field(pdp, "decision_record_digest", str, w),
            "iat": _field(pdp, "iat", int, w),
            "jti": _field(pdp, "jti", str, w),
            "log_index": _field(pdp, "log_index", str, w),
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutcomeRecord(_Linked):
    """An outcome report as logged, linked to its decision record by index and digest."""

    TYP: ClassVar[str] = TYP_OUTCOME
    KIND: ClassVar[str] = "outcome"

    decision_id: str
    timestamp: str
    outcome: OutcomeReport
    requested_by: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "outcome": self.outcome.to_dict(),
            "requested_by": self.requested_by,
            "pdp": {
                "type": self.KIND,
                **self._link(),
            },
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
            **cls._link_from(pdp),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShadowRecord(_Linked):
    """A shadow candidate's divergence from a live decision (:mod:`pdp.policy.shadow`), linked to
    the decision record by index and digest. It carries no input and is never a decision: a PEP
    that checks ``typ`` cannot mistake it for one."""

    TYP: ClassVar[str] = TYP_SHADOW
    KIND: ClassVar[str] = "shadow"

    decision_id: str
    timestamp: str
    bundles: dict[str, dict[str, str]]  # the candidate's revisions
    result: dict[str, Any]  # the candidate's decision document
    divergence: str  # allow->deny, deny->allow, ..., reasons
    live: dict[str, Any]  # {outcome, reasons}
    candidate: dict[str, Any]  # {outcome, reasons, indeterminate, error_code}

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "timestamp": self.timestamp,
            "bundles": self.bundles,
            "result": self.result,
            "pdp": {
                "type": self.KIND,
                "kind": self.divergence,
                "live": self.live,
                "candidate": self.candidate,
                **self._link(),
            },
        }

    @classmethod
    def from_dict(cls, claims: Mapping[str, Any]) -> ShadowRecord:
        """Reads verified claims.

        Raises:
            RecordError: a field is missing or of the wrong type (the message names it).
        """
        pdp = _object(claims, "pdp")
        w = "pdp."
        return cls(
            decision_id=_field(claims, "decision_id", str),
            timestamp=_field(claims, "timestamp", str),
            bundles=_object(claims, "bundles"),
            result=_object(claims, "result"),
            divergence=_field(pdp, "kind", str, w),
            live=_object(pdp, "live", w),
            candidate=_object(pdp, "candidate", w),
            **cls._link_from(pdp),
        )


Record = DecisionRecord | OutcomeRecord | ShadowRecord
"""Any record the PDP signs and logs."""

RECORD_TYPES: dict[str, type[DecisionRecord] | type[OutcomeRecord] | type[ShadowRecord]] = {
    TYP_DECISION: DecisionRecord,
    TYP_OUTCOME: OutcomeRecord,
    TYP_SHADOW: ShadowRecord,
}
"""Each record class by its JWS ``typ``."""
