"""The one adapter between signed records and the report: claims → :class:`Entry`.

Record classes change (typed records, escalation and shadow records, the trust summary); only
:func:`entry_of` knows where a field sits in the claims, so the figures never read claims directly.
Shadow and suspension records are read with their schema class (:meth:`ShadowRecord.from_dict`,
:meth:`SuspensionRecord.from_dict`) and carried typed; one whose claims the schema cannot read is
an ``Entry`` of its kind without the typed record (counted as unreadable). A record of a type this
version does not know becomes an ``Entry`` with that ``kind`` and is counted, never an error.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any, TypeVar

from pdp.errors import RecordError
from pdp.schema import ShadowRecord, SuspensionRecord

DECISION = "decision"
OUTCOME = "outcome"
ESCALATION = "escalation"
SHADOW = ShadowRecord.KIND
SUSPENSION = SuspensionRecord.KIND
KNOWN = (DECISION, OUTCOME, ESCALATION, SHADOW, SUSPENSION)  # the record kinds this version reads
APPROVAL_ACCEPTED = "approval.accepted"  # the reason an allow carries when a human approved it
_EMPTY: dict[str, Any] = {}
_R = TypeVar("_R", ShadowRecord, SuspensionRecord)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """What the report needs from one record.

    Attributes:
        index: the log index.
        kind: ``pdp.type`` (decision, outcome, escalation, shadow, suspension, or a type this version
            does not know).
        time: unix seconds: a decision's request time, an escalation step's ``at``, otherwise the
            record's ``iat``.
        decision_id: the decision this record is (decisions) or is about (outcomes, escalations,
            shadow records).
        outcome, reasons, indeterminate, error_code: the verdict (decisions).
        agent, tool, principal: who did what (decisions).
        exp: until when a PEP may act on the decision (decisions).
        bundles: ``(bundle name, revision)`` pairs that decided (decisions).
        opa_version: the OPA that evaluated the policy (decisions).
        timers_ns: the record's ``metrics`` timers, ``timer_*_ns`` (decisions).
        masked, erased: JSON pointers of the input masked or erased before signing (decisions).
        has_trust: the decision carries the PDP's provenance summary (``pdp.trust``).
        classification: the data's classification the policy looked up (``pdp.facts.resource``; ""
            when the record has no facts, e.g. fail-closed).
        lineage_verified: the PDP verified at least one lineage attestation (``pdp.trust.lineage``).
        step: an escalation's step (opened, approved, rejected, expired, consumed).
        escalation_id: the escalation a step belongs to.
        shadow: a shadow record as the schema reads it (None: not one, or unreadable).
        suspension: a suspension record as the schema reads it (None: not one, or unreadable).
    """

    index: int
    kind: str
    time: float
    decision_id: str = ""
    outcome: str = ""
    reasons: tuple[str, ...] = ()
    indeterminate: bool = False
    error_code: str = ""
    agent: str = ""
    tool: str = ""
    principal: str = ""
    exp: int | None = None
    bundles: tuple[tuple[str, str], ...] = ()
    opa_version: str = ""
    timers_ns: tuple[tuple[str, int], ...] = ()
    masked: tuple[str, ...] = ()
    erased: tuple[str, ...] = ()
    has_trust: bool = False
    classification: str = ""
    lineage_verified: bool = False
    step: str = ""
    escalation_id: str = ""
    shadow: ShadowRecord | None = None
    suspension: SuspensionRecord | None = None


def entry_of(index: int, claims: Mapping[str, Any]) -> Entry:
    """The report's view of one verified record's claims."""
    pdp = _obj(claims.get("pdp"))
    kind = str(pdp.get("type") or "unknown")
    iat = _number(pdp.get("iat"))
    if kind == DECISION:
        return _decision(index, claims, pdp, iat)
    if kind == ESCALATION:
        esc = _obj(claims.get("escalation"))
        return Entry(
            index=index,
            kind=kind,
            time=_number(pdp.get("at")) or _number(esc.get("at")) or iat,
            decision_id=str(claims.get("decision_id") or esc.get("decision_id") or ""),
            step=str(pdp.get("step") or esc.get("step") or esc.get("status") or ""),
            escalation_id=str(pdp.get("escalation_id") or esc.get("id") or claims.get("escalation_id") or ""),
            agent=str(esc.get("agent_id") or _obj(pdp.get("agent")).get("id") or ""),
        )
    decision_id = str(claims.get("decision_id") or "")
    if kind == SHADOW:
        shadow = _read(ShadowRecord, claims)
        return Entry(index=index, kind=kind, time=iat, decision_id=decision_id, shadow=shadow)
    if kind == SUSPENSION:
        return Entry(index=index, kind=kind, time=iat, suspension=_read(SuspensionRecord, claims))
    return Entry(index=index, kind=kind, time=iat, decision_id=decision_id)


def _read(cls: type[_R], claims: Mapping[str, Any]) -> _R | None:
    """The record as its schema class reads it, or None when its claims do not fit the schema."""
    try:
        return cls.from_dict(claims)
    except RecordError:
        return None


def _decision(index: int, claims: Mapping[str, Any], pdp: Mapping[str, Any], iat: float) -> Entry:
    # pdp.trust: who vouched for what (its `lineage` lists the attestations the PDP verified);
    # pdp.facts: the catalogue's labels the policy decided on (absent when no verdict was reached).
    trust = _obj(pdp.get("trust"))
    resource = _obj(_obj(pdp.get("facts")).get("resource"))
    return Entry(
        index=index,
        kind=DECISION,
        time=_rfc3339(claims.get("timestamp")) or iat,
        decision_id=str(claims.get("decision_id") or ""),
        outcome=str(pdp.get("outcome") or ""),
        reasons=tuple(str(r) for r in pdp.get("reasons") or ()),
        indeterminate=bool(pdp.get("indeterminate")),
        error_code=str(pdp.get("error_code") or ""),
        agent=str(_obj(pdp.get("agent")).get("id") or ""),
        tool=str(pdp.get("tool") or ""),
        principal=str(pdp.get("principal") or ""),
        exp=int(pdp["exp"]) if isinstance(pdp.get("exp"), int) else None,
        bundles=tuple(
            sorted((str(n), str(_obj(b).get("revision", ""))) for n, b in _obj(claims.get("bundles")).items())
        ),
        opa_version=str(pdp.get("opa_version") or ""),
        timers_ns=tuple(
            sorted(
                (k, int(v))
                for k, v in _obj(claims.get("metrics")).items()
                if k.startswith("timer_") and isinstance(v, int) and v > 0
            )
        ),
        masked=tuple(str(p) for p in claims.get("masked") or ()),
        erased=tuple(str(p) for p in claims.get("erased") or ()),
        has_trust="trust" in pdp,
        classification=str(resource.get("classification") or ""),
        lineage_verified=bool(trust.get("lineage")),
    )


def _obj(value: Any) -> dict[str, Any]:
    return value if type(value) is dict else _EMPTY  # JSON objects are dicts; an exact check is cheap


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value.isdigit():
        return float(value)
    return 0.0


def _rfc3339(value: Any) -> float:
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0
