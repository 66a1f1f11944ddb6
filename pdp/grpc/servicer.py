"""pdp.v1.DecisionService: proto in → :class:`Decider` → proto out; errors map in :mod:`pdp.grpc.status`."""

from __future__ import annotations

import json
from typing import Any

import grpc
from google.protobuf import message

from pdp.authz import Role
from pdp.context import Caller, struct_value
from pdp.decide import Decider
from pdp.decision import Decision
from pdp.errors import InvalidArgument, NotFound, PermissionDenied, ProofError
from pdp.grpc.authz import grant
from pdp.grpc.convert import ACTION_STATUS_NAMES, to_proto
from pdp.grpc.status import answering
from pdp.recorder import Recorder
from pdp.schema import OutcomeReport
from pdp.telemetry import Telemetry
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    """pdp.v1.DecisionService. Every method answers through :func:`pdp.grpc.status.answering`."""

    def __init__(
        self,
        decider: Decider,
        recorder: Recorder,
        telemetry: Telemetry,
        *,
        max_depth: int,
        max_outcome_bytes: int = 64 * 1024,
    ) -> None:
        self._decider = decider
        self._recorder = recorder
        self._telemetry = telemetry
        self._max_depth = max_depth
        self._max_outcome_bytes = max_outcome_bytes

    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.DecideResponse:  # noqa: N802
        def decide() -> Decision:
            if request.explain > pb.EXPLAIN_LEVEL_NOTES and not grant().has(Role.AUDITOR):
                raise PermissionDenied("explain: explanations beyond NOTES are for auditors (PDP_ROLES_FILE)")
            caller = Caller.from_grpc(context)
            return self._decider.decide(request, caller=caller, time_remaining_s=context.time_remaining())

        decision: Decision = answering(context, "Decide", decide)
        self._telemetry.record([decision])
        return to_proto(decision)

    def DecideBatch(  # noqa: N802
        self, request: pb.DecideBatchRequest, context: grpc.ServicerContext
    ) -> pb.DecideBatchResponse:
        decisions: list[Decision] = answering(
            context,
            "DecideBatch",
            lambda: self._decider.decide_batch(
                request.requests, caller=Caller.from_grpc(context), time_remaining_s=context.time_remaining()
            ),
        )
        self._telemetry.record(decisions, batch=True)
        return pb.DecideBatchResponse(responses=[to_proto(d) for d in decisions])

    def GetJwks(self, request: pb.GetJwksRequest, context: grpc.ServicerContext) -> pb.GetJwksResponse:  # noqa: N802
        return pb.GetJwksResponse(jwks=json.dumps(self._recorder.jwks()))

    def GetDecision(  # noqa: N802
        self, request: pb.GetDecisionRequest, context: grpc.ServicerContext
    ) -> pb.GetDecisionResponse:
        def get() -> pb.GetDecisionResponse:
            decision_id = _required_id(request.decision_id)
            g = grant()
            if not g.reads_all and self._recorder.owner(decision_id) != g.identity:
                raise NotFound(f"no decision {decision_id} of yours in this PDP's log")
            p = self._recorder.prove(decision_id)
            return pb.GetDecisionResponse(
                record=p.record,
                log_index=p.log_index,
                checkpoint=p.checkpoint.decode(),
                tree_size=p.tree_size,
                inclusion_proof=p.inclusion_proof,
            )

        return answering(context, "GetDecision", get)

    def GetConsistencyProof(  # noqa: N802
        self, request: pb.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> pb.GetConsistencyProofResponse:
        def get() -> pb.GetConsistencyProofResponse:
            if request.new_size > self._recorder.log.size():
                raise InvalidArgument("new_size", f"is beyond the log's {self._recorder.log.size()} entries")
            try:
                proof = self._recorder.log.consistency_proof(request.old_size, request.new_size)
            except ProofError as e:
                raise InvalidArgument("old_size", str(e)) from None
            return pb.GetConsistencyProofResponse(proof=proof)

        return answering(context, "GetConsistencyProof", get)

    def ReportOutcome(  # noqa: N802
        self, request: pb.ReportOutcomeRequest, context: grpc.ServicerContext
    ) -> pb.ReportOutcomeResponse:
        def report() -> pb.ReportOutcomeResponse:
            decision_id = _required_id(request.decision_id)
            if request.status not in ACTION_STATUS_NAMES:
                raise InvalidArgument("status", "must be EXECUTED, BLOCKED or FAILED")
            if request.ByteSize() > self._max_outcome_bytes:
                limit = self._max_outcome_bytes
                raise InvalidArgument("request", f"is larger than {limit} bytes (PDP_MAX_OUTCOME_BYTES)")
            caller = Caller.from_grpc(context)
            g = grant()
            signed = self._recorder.record_outcome(
                decision_id=decision_id,
                report=OutcomeReport(
                    status=ACTION_STATUS_NAMES[request.status],
                    result=struct_value(request.result, "result", self._max_depth),
                    impact=struct_value(request.impact, "impact", self._max_depth),
                ),
                reporter=caller.subject or caller.peer,
                owner=g.identity,
            )
            self._decider.settle(decision_id, status=ACTION_STATUS_NAMES[request.status])  # budgets: keep or release
            return pb.ReportOutcomeResponse(record=signed.record, log_index=signed.log_index)

        return answering(context, "ReportOutcome", report)


def _required_id(decision_id: str) -> str:
    if not decision_id:
        raise InvalidArgument("decision_id", "is required")
    return decision_id


def add_service(servicer: DecisionServicer, server: grpc.Server) -> None:
    """Registers DecisionService with each request parsed inside its handler, so that bytes
    protobuf cannot decode (e.g. Structs nested past its recursion limit of 100) are
    INVALID_ARGUMENT, not the INTERNAL "exception deserializing request" of a deserializer."""
    service = pb.DESCRIPTOR.services_by_name["DecisionService"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            _decoding(getattr(servicer, m.name), getattr(pb, m.input_type.name)),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in service.methods
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)  # type: ignore[attr-defined]  # stubs lag grpcio


def _decoding(method: Any, request_type: Any) -> Any:
    def handle(raw: bytes, context: grpc.ServicerContext) -> Any:
        try:
            request = request_type.FromString(raw)
        except message.DecodeError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {request_type.DESCRIPTOR.name}: {e}")
        return method(request, context)

    return handle
