"""The gRPC server: DecisionService, health, reflection, TLS, graceful stop.

The servicer is thin: proto in → :meth:`Decider.decide` (or ``decide_batch``) → proto out.
Errors map to gRPC status codes in exactly one place (:meth:`DecisionServicer._call`).
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import message, struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdp.config import Settings
from pdp.context import Caller, struct_value
from pdp.decide import Decider, Decision
from pdp.errors import ConfigError, InvalidArgument, LedgerUnavailable, NoVerdict, PdpError
from pdp.keys import KeyRing
from pdp.ledger.merkle import ProofError
from pdp.opa import OpaClient
from pdp.recorder import Recorder, open_recorder
from pdp.telemetry import Telemetry
from pdp.trust import TrustVerifier
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from pdp.verdict import Outcome, interpret

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
_OUTCOMES = {
    Outcome.ALLOW: pb.OUTCOME_ALLOW,
    Outcome.DENY: pb.OUTCOME_DENY,
    Outcome.REQUIRE_APPROVAL: pb.OUTCOME_REQUIRE_APPROVAL,
}


_STATUSES = {
    pb.ACTION_STATUS_EXECUTED: "executed",
    pb.ACTION_STATUS_BLOCKED: "blocked",
    pb.ACTION_STATUS_FAILED: "failed",
}


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    """pdp.v1.DecisionService. Every method maps PdpError to its status in :meth:`_call`."""

    def __init__(self, decider: Decider, recorder: Recorder, telemetry: Telemetry, *, max_depth: int) -> None:
        self._decider = decider
        self._recorder = recorder
        self._telemetry = telemetry
        self._max_depth = max_depth

    def _call(self, context: grpc.ServicerContext, what: str, fn: Any) -> Any:
        try:
            return fn()
        except PdpError as e:
            context.abort(e.status, str(e))
        except LedgerUnavailable as e:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except Exception:
            # Never a Python repr to the caller; no answer is a deny for any PEP.
            log.exception("%s failed unexpectedly", what)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error; {what} did nothing")

    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.DecideResponse:  # noqa: N802
        decision: Decision = self._call(
            context,
            "Decide",
            lambda: self._decider.decide(
                request, caller=Caller.from_grpc(context), time_remaining_s=context.time_remaining()
            ),
        )
        self._telemetry.record([decision])
        return to_proto(decision)

    def DecideBatch(  # noqa: N802
        self, request: pb.DecideBatchRequest, context: grpc.ServicerContext
    ) -> pb.DecideBatchResponse:
        decisions: list[Decision] = self._call(
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
            if not request.decision_id:
                raise InvalidArgument("decision_id", "is required")
            p = self._recorder.prove(request.decision_id)
            return pb.GetDecisionResponse(
                record=p.record,
                log_index=p.log_index,
                checkpoint=p.checkpoint.decode(),
                tree_size=p.tree_size,
                inclusion_proof=p.inclusion_proof,
            )

        response: pb.GetDecisionResponse = self._call(context, "GetDecision", get)
        return response

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

        response: pb.GetConsistencyProofResponse = self._call(context, "GetConsistencyProof", get)
        return response

    def ReportOutcome(  # noqa: N802
        self, request: pb.ReportOutcomeRequest, context: grpc.ServicerContext
    ) -> pb.ReportOutcomeResponse:
        def report() -> pb.ReportOutcomeResponse:
            if not request.decision_id:
                raise InvalidArgument("decision_id", "is required")
            if request.status not in _STATUSES:
                raise InvalidArgument("status", "must be EXECUTED, BLOCKED or FAILED")
            caller = Caller.from_grpc(context)
            signed = self._recorder.record_outcome(
                decision_id=request.decision_id,
                report={
                    "status": _STATUSES[request.status],
                    "result": struct_value(request.result, "result", self._max_depth),
                    "impact": struct_value(request.impact, "impact", self._max_depth),
                },
                reporter=caller.subject or caller.peer,
            )
            return pb.ReportOutcomeResponse(record=signed.record, log_index=signed.log_index)

        response: pb.ReportOutcomeResponse = self._call(context, "ReportOutcome", report)
        return response


def to_proto(d: Decision) -> pb.DecideResponse:
    """Converts a Decision into the wire response."""
    v = d.verdict
    resp = pb.DecideResponse(
        decision_id=d.decision_id,
        request_id=d.request_id,
        outcome=_OUTCOMES[v.outcome],
        indeterminate=v.indeterminate,
        error_code=v.error_code,
        reasons=[pb.Reason(code=r.code, message=r.message, rule=r.rule, severity=r.severity) for r in v.reasons],
        obligations=[pb.Obligation(type=o.type, params=_struct(o.params)) for o in v.obligations],
        provenance=pb.PolicyProvenance(
            opa_version=d.opa_version, bundle_revisions=d.bundle_revisions, decision_path=d.decision_path
        ),
        timings=pb.Timings(total_us=d.total_ns // 1000, opa_us=d.opa_ns // 1000, opa_eval_us=d.opa_eval_ns // 1000),
        record=d.record,
        log_index=d.log_index,
    )
    if d.explain:
        resp.explanation.level = d.explain  # type: ignore[assignment]
        resp.explanation.events.extend(_struct(e) for e in d.explanation)
    return resp


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


class OpaHealthMonitor:
    """Polls OPA and reports SERVING only while the decision document evaluates under a bundle.

    Args:
        opa: a client of its own (its connection lives on the monitor's thread).
        recorder: the decision log; a log that cannot be written means not serving.
        health_servicer: the grpc.health.v1 servicer to update.
        interval_s: time between checks.
        timeout_s: longest wait for one check.
    """

    def __init__(
        self,
        *,
        opa: OpaClient,
        recorder: Recorder,
        health_servicer: health.HealthServicer,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._opa = opa
        self._recorder = recorder
        self._health = health_servicer
        self._interval = interval_s
        self._timeout = timeout_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opa-health", daemon=True)
        self._serving: bool | None = None

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + self._timeout + 1)
        self._opa.close()

    def check(self) -> bool:
        """Checks OPA once, updates the health status, and returns whether it is serving."""
        try:
            answer = self._opa.query({}, timeout_s=self._timeout)
            interpret(answer.result, defined=answer.defined)
            problem = "" if answer.bundle_revisions else "OPA has no bundle loaded"
        except NoVerdict as e:
            problem = f"{e.error_code}: {e}"
        if not problem and not self._recorder.healthy:
            problem = "the decision log cannot be written"
        serving = not problem
        if serving != self._serving:
            if serving:
                log.info("OPA healthy; serving")
            else:
                log.warning("not serving: %s", problem)
            self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)
        return serving

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()


class PdpServer:
    """A started-or-not PDP: the gRPC server plus the OPA health monitor."""

    def __init__(
        self,
        server: grpc.Server,
        monitor: OpaHealthMonitor,
        health_servicer: health.HealthServicer,
        recorder: Recorder,
        telemetry: Telemetry,
    ) -> None:
        self.grpc_server = server
        self._recorder = recorder
        self._monitor = monitor
        self._health = health_servicer
        self._telemetry = telemetry

    def start(self) -> None:
        self.grpc_server.start()
        self._monitor.start()

    def stop(self, grace_s: float) -> None:
        """Stops taking calls, lets in-flight calls finish for up to ``grace_s``, then stops."""
        self._health.enter_graceful_shutdown()
        self.grpc_server.stop(grace_s).wait()
        self._monitor.stop()
        self._recorder.close()
        self._telemetry.shutdown()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()


def create_server(settings: Settings, telemetry: Telemetry | None = None) -> tuple[PdpServer, int]:
    """Builds the server and binds its port (``PDP_LISTEN``; port 0 picks a free one).

    Args:
        settings: the configuration.
        telemetry: tracing and metrics; by default from the ``OTEL_*`` environment.

    Returns:
        The server (not yet started) and the port it is bound to.
    """
    if settings.key_dir is None or settings.log_dir is None:
        raise ConfigError("PDP_KEY_DIR and PDP_LOG_DIR are required: a decision that cannot be recorded is not made")
    ring = KeyRing.load(settings.key_dir)
    telemetry = telemetry or Telemetry()
    recorder = open_recorder(
        ring=ring,
        log_dir=settings.log_dir,
        origin=settings.log_origin,
        ttl_s=settings.record_ttl_s,
        mask=settings.mask_pointers,
        erase=settings.erase_pointers,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_interval_s=settings.checkpoint_interval_s,
        segment_max_bytes=settings.segment_max_bytes,
        on_sync=telemetry.ledger_sync_duration.record,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="pdp-rpc"),
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.workers * 64,
        interceptors=[telemetry.server_interceptor()] if telemetry.exporting else [],
    )
    decider = Decider(
        opa=OpaClient(settings.opa_url, settings.decision_path, telemetry, batch_path=settings.batch_path),
        recorder=recorder,
        decision_path=settings.decision_path,
        opa_timeout_s=settings.opa_timeout_s,
        max_depth=settings.max_depth,
        telemetry=telemetry,
        max_batch=settings.max_batch,
        trust=TrustVerifier(settings.trust),
    )
    _add_service(DecisionServicer(decider, recorder, telemetry, max_depth=settings.max_depth), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = (
        server.add_secure_port(settings.listen, _credentials(settings))
        if settings.tls_cert_file
        else (server.add_insecure_port(settings.listen))
    )
    if port == 0:
        raise PdpError(f"could not bind {settings.listen}")
    monitor = OpaHealthMonitor(
        opa=OpaClient(settings.opa_url, settings.decision_path),
        recorder=recorder,
        health_servicer=health_servicer,
        interval_s=settings.health_interval_s,
        timeout_s=settings.opa_timeout_s,
    )
    return PdpServer(server, monitor, health_servicer, recorder, telemetry), port


def _add_service(servicer: DecisionServicer, server: grpc.Server) -> None:
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


def _credentials(settings: Settings) -> grpc.ServerCredentials:
    assert settings.tls_cert_file and settings.tls_key_file
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
