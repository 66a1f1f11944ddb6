"""The decision pipeline: context → OPA → verdict → signed record → durable log, in one straight line.

Nothing here knows about gRPC; the servicer converts at the edges.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import uuid
from typing import Any

from pdp.context import Caller, build_input
from pdp.errors import LedgerUnavailable, NoVerdict
from pdp.opa import OpaAnswer, OpaClient
from pdp.recorder import Recorder, Signed, claims_of, decision_id, request_digest
from pdp.records import digest
from pdp.telemetry import SPAN_CONTEXT, SPAN_RECORD, Telemetry
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Verdict, fail_closed, interpret

log = logging.getLogger(__name__)

# Time kept back from the caller's deadline to record (sign, append, fsync) and send the
# fail-closed answer in; fsync p99 is a few milliseconds on ordinary disks.
_ANSWER_MARGIN_S = 0.025


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    """One decision, everything the caller and the record need."""

    decision_id: str
    request_id: str
    verdict: Verdict
    agent_id: str
    tool: str
    decision_path: str
    opa_version: str = ""
    bundle_revisions: dict[str, str] = dataclasses.field(default_factory=dict)
    explain: int = 0
    explanation: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    total_ns: int = 0
    opa_ns: int = 0
    opa_eval_ns: int = 0
    record: str = ""
    log_index: int = 0


class Decider:
    """Runs the pipeline with injected collaborators.

    Args:
        opa: the OPA client.
        recorder: signs each decision and appends it to the durable log.
        decision_path: the rule path queried, for provenance.
        opa_timeout_s: longest wait for OPA when the caller's deadline is further away.
        max_depth: deepest nesting accepted in Struct fields.
        telemetry: where the pipeline's spans go.
    """

    def __init__(
        self,
        *,
        opa: OpaClient,
        recorder: Recorder,
        decision_path: str,
        opa_timeout_s: float,
        max_depth: int,
        telemetry: Telemetry,
    ) -> None:
        self._opa = opa
        self._recorder = recorder
        self._tracer = telemetry.tracer
        self._path = decision_path
        self._timeout = opa_timeout_s
        self._max_depth = max_depth

    def decide(self, request: pb.DecideRequest, *, caller: Caller, time_remaining_s: float | None) -> Decision:
        """Decides one request. Never raises for a missing verdict or record: that is a DENY.

        A retry (same request id, same caller, same request) returns the logged record of the
        first answer instead of deciding again.

        Raises:
            InvalidArgument: the request is malformed, or its request id was used for another request.
        """
        start = time.perf_counter_ns()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        with self._tracer.start_as_current_span(SPAN_CONTEXT):
            input_doc = build_input(request, caller=caller, request_time=now, max_depth=self._max_depth)
        did = decision_id(request_id=request.request_id, caller_subject=caller.subject)
        same = request_digest(input_doc)
        with self._recorder.stripe(did):
            earlier = self._recorder.existing(did, same) if request.request_id else None
            if earlier is not None:
                return _replayed(earlier, path=self._path, start=start)
            answer, verdict = self._evaluate(input_doc, request, time_remaining_s, did)
            if verdict.indeterminate:
                did = str(uuid.uuid4())  # a retry after the outage must get a real verdict
            decision = Decision(
                decision_id=did,
                request_id=request.request_id,
                verdict=verdict,
                agent_id=input_doc["agent"]["id"],
                tool=input_doc["action"]["tool"],
                decision_path=self._path,
                opa_version=answer.opa_version if answer else "",
                bundle_revisions=answer.bundle_revisions if answer else {},
                explain=request.explain,
                explanation=answer.explanation if answer else [],
                opa_ns=answer.roundtrip_ns if answer else 0,
                opa_eval_ns=answer.eval_ns if answer else 0,
            )
            decision = self._record(decision, input_doc, same)
        return dataclasses.replace(decision, total_ns=time.perf_counter_ns() - start)

    def _evaluate(
        self, input_doc: dict[str, Any], request: pb.DecideRequest, time_remaining_s: float | None, did: str
    ) -> tuple[OpaAnswer | None, Verdict]:
        timeout = self._timeout
        if time_remaining_s is not None:
            timeout = min(timeout, time_remaining_s - _ANSWER_MARGIN_S)
        answer = None
        try:
            answer = self._opa.query(input_doc, timeout_s=timeout, explain=request.explain)
            return answer, interpret(answer.result, defined=answer.defined)
        except NoVerdict as e:
            log.warning("decision %s failed closed: %s (%s)", did, e.error_code, e)
            return answer, fail_closed(e)

    def _record(self, d: Decision, input_doc: dict[str, Any], same: str) -> Decision:
        v = d.verdict
        claims = {
            "decision_id": d.decision_id,
            "path": d.decision_path,
            "result": v.to_dict(),
            "bundles": {name: {"revision": rev} for name, rev in d.bundle_revisions.items()},
            "timestamp": input_doc["request_time"],
            "metrics": {"timer_rego_query_eval_ns": d.opa_eval_ns, "timer_pdp_opa_roundtrip_ns": d.opa_ns},
            "pdp": {
                "type": "decision",
                "version": 1,
                "request_id": d.request_id,
                "request_digest": same,
                "caller": input_doc["caller"],
                "agent": input_doc["agent"],
                "tool": input_doc["action"]["tool"],
                "principal": input_doc["principal"]["id"],
                "action_digest": input_doc["action_digest"],
                "outcome": v.outcome.value,
                "reasons": [r.code for r in v.reasons],
                "obligations": [o.to_dict() for o in v.obligations],
                "indeterminate": v.indeterminate,
                "error_code": v.error_code,
                "explanation_digest": digest(d.explanation) if d.explain else "",
                "opa_version": d.opa_version,
            },
        }
        try:
            with self._tracer.start_as_current_span(SPAN_RECORD):
                signed = self._recorder.record_decision(claims=claims, input_doc=input_doc)
        except LedgerUnavailable as e:
            # Not durable, so not a decision anyone may act on: DENY, whatever the policy said.
            log.error("decision %s could not be recorded: %s", d.decision_id, e)
            return dataclasses.replace(d, verdict=fail_closed(e))
        return dataclasses.replace(d, record=signed.record, log_index=signed.log_index)


def _replayed(earlier: Signed, *, path: str, start: int) -> Decision:
    """The answer to a retry: the first answer's verdict, with its record (no explanation)."""
    claims = claims_of(earlier.record.encode())
    verdict = interpret(claims["result"])
    return Decision(
        decision_id=claims["decision_id"],
        request_id=claims["pdp"]["request_id"],
        verdict=verdict,
        agent_id=claims["pdp"]["agent"]["id"],
        tool=claims["pdp"]["tool"],
        decision_path=path,
        opa_version=claims["pdp"]["opa_version"],
        bundle_revisions={name: b["revision"] for name, b in claims["bundles"].items()},
        total_ns=time.perf_counter_ns() - start,
        record=earlier.record,
        log_index=earlier.log_index,
    )
