"""Proto ↔ domain: the only module that knows both the wire messages and the pipeline's types."""

from __future__ import annotations

import sys
from typing import Any

from google.protobuf import struct_pb2

from pdp.decision import Decision
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Outcome

OUTCOMES = {
    Outcome.ALLOW: pb.OUTCOME_ALLOW,
    Outcome.DENY: pb.OUTCOME_DENY,
    Outcome.REQUIRE_APPROVAL: pb.OUTCOME_REQUIRE_APPROVAL,
}

ACTION_STATUS_NAMES = {
    pb.ACTION_STATUS_EXECUTED: "executed",
    pb.ACTION_STATUS_BLOCKED: "blocked",
    pb.ACTION_STATUS_FAILED: "failed",
}
"""The reportable action statuses of ReportOutcome, by the name they have in an outcome record."""


def to_proto(d: Decision) -> pb.DecideResponse:
    """Converts a Decision into the wire response."""
    v = d.verdict
    resp = pb.DecideResponse(
        decision_id=d.decision_id,
        request_id=d.request_id,
        outcome=OUTCOMES[v.outcome],
        indeterminate=v.indeterminate,
        error_code=v.error_code,
        reasons=[pb.Reason(code=r.code, message=r.message, rule=r.rule, severity=r.severity) for r in v.reasons],
        obligations=[pb.Obligation(type=o.type, params=to_struct(o.params)) for o in v.obligations],
        provenance=pb.PolicyProvenance(
            opa_version=d.opa_version,
            bundle_revisions=d.bundle_revisions,
            decision_path=d.decision_path,
            bundle_signing_keys=d.bundle_signing_keys,
        ),
        timings=pb.Timings(total_us=d.total_ns // 1000, opa_us=d.opa_ns // 1000, opa_eval_us=d.opa_eval_ns // 1000),
        record=d.record,
        log_index=d.log_index,
        escalation_id=d.escalation_id,
        escalation_expires_at=d.escalation_expires_at,
    )
    if d.explain:
        resp.explanation.level = d.explain  # type: ignore[assignment]
        resp.explanation.events.extend(to_struct(e) for e in d.explanation)
        resp.explanation.omitted = d.explanation_omitted
    return resp


def to_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct."""
    s = struct_pb2.Struct()
    s.update(_struct_numbers(value))
    return s


def _struct_numbers(value: Any) -> Any:
    """``value`` with every integer a Struct's double cannot hold written as its decimal string.

    OPA computes with arbitrary precision (``round(1e308 * 100)`` is an exact 311-digit integer),
    and its obligations and explanations carry such numbers; a Struct number is a double.
    """
    if isinstance(value, dict):
        return {k: _struct_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_struct_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -_DOUBLE_MAX <= value <= _DOUBLE_MAX:
        return str(value)
    return value


_DOUBLE_MAX = int(sys.float_info.max)
