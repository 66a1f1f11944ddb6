"""The decision pipeline: context → OPA → verdict, in one straight line.

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
from pdp.errors import NoVerdict
from pdp.opa import OpaClient
from pdp.telemetry import SPAN_CONTEXT, Telemetry
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Verdict, fail_closed, interpret

log = logging.getLogger(__name__)

# Time kept back from the caller's deadline to send the fail-closed answer in.
_ANSWER_MARGIN_S = 0.005


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


class Decider:
    """Runs the pipeline with injected collaborators.

    Args:
        opa: the OPA client.
        decision_path: the rule path queried, for provenance.
        opa_timeout_s: longest wait for OPA when the caller's deadline is further away.
        max_depth: deepest nesting accepted in Struct fields.
        telemetry: where the pipeline's spans go.
    """

    def __init__(
        self, *, opa: OpaClient, decision_path: str, opa_timeout_s: float, max_depth: int, telemetry: Telemetry
    ) -> None:
        self._opa = opa
        self._tracer = telemetry.tracer
        self._path = decision_path
        self._timeout = opa_timeout_s
        self._max_depth = max_depth

    def decide(self, request: pb.DecideRequest, *, caller: Caller, time_remaining_s: float | None) -> Decision:
        """Decides one request. Never raises for a missing verdict: that is a DENY.

        Raises:
            InvalidArgument: the request is malformed.
        """
        start = time.perf_counter_ns()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        with self._tracer.start_as_current_span(SPAN_CONTEXT):
            input_doc = build_input(request, caller=caller, request_time=now, max_depth=self._max_depth)
        decision_id = str(uuid.uuid4())
        timeout = self._timeout
        if time_remaining_s is not None:
            timeout = min(timeout, time_remaining_s - _ANSWER_MARGIN_S)
        answer = None
        try:
            answer = self._opa.query(input_doc, timeout_s=timeout, explain=request.explain)
            verdict = interpret(answer.result, defined=answer.defined)
        except NoVerdict as e:
            log.warning("decision %s failed closed: %s (%s)", decision_id, e.error_code, e)
            verdict = fail_closed(e)
        return Decision(
            decision_id=decision_id,
            request_id=request.request_id,
            verdict=verdict,
            agent_id=input_doc["agent"]["id"],
            tool=input_doc["action"]["tool"],
            decision_path=self._path,
            opa_version=answer.opa_version if answer else "",
            bundle_revisions=answer.bundle_revisions if answer else {},
            explain=request.explain,
            explanation=answer.explanation if answer else [],
            total_ns=time.perf_counter_ns() - start,
            opa_ns=answer.roundtrip_ns if answer else 0,
            opa_eval_ns=answer.eval_ns if answer else 0,
        )
