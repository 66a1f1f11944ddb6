"""Assembly: settings → key ring, recorder, decider, services, bound port → a :class:`PdpServer`."""

from __future__ import annotations

import dataclasses
import socket
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pdp import limits
from pdp.approvals.binding import ApprovalsStep
from pdp.approvals.desk import ApprovalDesk, ExpirySweep, opa_registry
from pdp.authz import RoleMap
from pdp.coalesce import CoalescingOpaClient
from pdp.config import Settings
from pdp.decide import Decider
from pdp.errors import ConfigError, PdpError
from pdp.explain import Explainer
from pdp.grpc import admin
from pdp.grpc import approvals as approval_service
from pdp.grpc.authz import AuthzInterceptor
from pdp.grpc.health import SERVICE_NAME, OpaHealthMonitor
from pdp.grpc.servicer import DecisionServicer, add_service
from pdp.grpc.tls import server_credentials
from pdp.http.console import ConsoleFace, create_console
from pdp.http.face import HttpFace
from pdp.keys import KeyRing, id_secret
from pdp.opa import OpaClient
from pdp.policy.pipeline import Lifecycle, policy_lifecycle
from pdp.policy.watch import HEALTH_SERVICE as BUNDLE_HEALTH
from pdp.recorder import Recorder, open_recorder
from pdp.state import StateStore, open_store
from pdp.suspensions import KillSwitch, SuspensionList
from pdp.telemetry import Telemetry
from pdp.trust import TrustVerifier


@dataclasses.dataclass(frozen=True, kw_only=True)
class PdpServer:
    """A started-or-not PDP: the gRPC server plus the OPA health monitor, and what stops with them."""

    grpc_server: grpc.Server
    monitor: OpaHealthMonitor
    health: health.HealthServicer
    recorder: Recorder
    store: StateStore
    telemetry: Telemetry
    http: HttpFace | None = None  # the AuthZEN face (PDP_HTTP_LISTEN), or None
    desk: ApprovalDesk | None = None  # the approvals desk the faces share (ApprovalService, console)
    console: ConsoleFace | None = None  # the approver console (PDP_CONSOLE_LISTEN), or None
    lifecycle: Lifecycle = dataclasses.field(default_factory=Lifecycle)  # bundle watch, policy masks, shadow
    opa: OpaClient | None = None  # the decision path's OPA client (coalescing unless PDP_OPA_COALESCE=false)
    roles: RoleMap = dataclasses.field(default_factory=lambda: RoleMap.default(mtls=False))
    health_server: grpc.Server | None = None  # PDP_HEALTH_LISTEN: grpc.health.v1 only, plaintext
    health_port: int = 0
    sweep: ExpirySweep | None = None  # expires escalations on time (PDP_ESCALATION_SWEEP_MS)

    def start(self) -> None:
        self.grpc_server.start()
        if self.health_server is not None:
            self.health_server.start()
        for face in self._faces():
            face.start()
        self.monitor.start()
        if self.sweep is not None:
            self.sweep.start()

    def stop(self, grace_s: float) -> None:
        """Stops taking calls, lets in-flight calls finish for up to ``grace_s``, then stops."""
        self.health.enter_graceful_shutdown()
        for face in self._faces():
            face.stop(grace_s)
        self.grpc_server.stop(grace_s).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        self.monitor.stop()
        if self.sweep is not None:
            self.sweep.stop()
        self.lifecycle.close()  # the shadow's queue drains into the log before it closes
        self.recorder.close()
        self.store.close()
        self.telemetry.shutdown()

    def wait(self) -> None:
        self.grpc_server.wait_for_termination()

    def _faces(self) -> list[HttpFace]:
        return [face for face in (self.http, self.console) if face is not None]


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
    secret = id_secret(settings.key_dir)
    roles = RoleMap.load(settings.roles_file) if settings.roles_file else RoleMap.default(mtls=_mtls(settings))
    limits.configure(
        limits.Limits(
            max_depth=settings.max_depth,
            max_entries=settings.max_list_entries,
            max_chars=settings.max_string_chars,
            max_bytes=settings.max_struct_bytes,
        )
    )
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
        id_secret=secret,
    )
    try:
        store = open_store(settings.state_location)
    except PdpError:
        recorder.close()
        raise
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="pdp-rpc"),
        options=[
            ("grpc.max_receive_message_length", settings.max_request_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.workers * 64,
        interceptors=[*([telemetry.server_interceptor()] if telemetry.exporting else []), AuthzInterceptor(roles)],
    )
    desk = ApprovalDesk(
        store=store,
        recorder=recorder,
        registry=opa_registry(settings.opa_url, timeout_s=max(settings.opa_timeout_s, 1.0)),
        escalation_ttl_s=settings.escalation_ttl_s,
        approval_ttl_s=settings.approval_ttl_s,
    )
    suspensions = SuspensionList(store)
    lifecycle = policy_lifecycle(settings, telemetry.meter_provider, recorder.record_shadow)
    opa = _opa_client(settings, telemetry)
    decider = Decider(
        opa=opa,
        recorder=recorder,
        decision_path=settings.decision_path,
        opa_timeout_s=settings.opa_timeout_s,
        explainer=Explainer(
            OpaClient(
                settings.opa_url, settings.decision_path, telemetry, max_answer_bytes=settings.max_explanation_bytes
            ),
            timeout_s=settings.opa_explain_timeout_s,
            lanes=settings.explain_concurrency,
        ),
        max_depth=settings.max_depth,
        telemetry=telemetry,
        max_batch=settings.max_batch,
        store=store,
        approvals=ApprovalsStep(desk=desk, jwks=recorder.jwks()),
        suspensions=suspensions,
        rate_limiter=limits.RateLimiter(rate=settings.decide_rate, burst=settings.decide_burst),
        trust=TrustVerifier(settings.trust),
        lifecycle=lifecycle,
    )
    approval_service.add_service(
        approval_service.ApprovalServicer(
            desk, dev_login=settings.approvals_dev_login, max_waiters=max(1, settings.workers // 4)
        ),
        server,
    )
    add_service(
        DecisionServicer(
            decider, recorder, telemetry, max_depth=settings.max_depth, max_outcome_bytes=settings.max_outcome_bytes
        ),
        server,
    )
    kill_switch = KillSwitch(store=store, recorder=recorder, suspensions=suspensions)
    admin.add_service(admin.AdminServicer(kill_switch, store, telemetry), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, approval_service.SERVICE_NAME, admin.SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
        server,
    )
    health_servicer.set(BUNDLE_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        port = _bind(server, settings)
        health_server, health_port = _health_listener(settings, health_servicer)
    except ConfigError:
        recorder.close()
        store.close()
        raise
    monitor = OpaHealthMonitor(
        opa=OpaClient(settings.opa_url, settings.decision_path),
        recorder=recorder,
        store=store,
        health_servicer=health_servicer,
        interval_s=settings.health_interval_s,
        timeout_s=settings.opa_timeout_s,
        allow_api_data=settings.allow_opa_api_data,
        bundles=lifecycle.watch,
    )
    http = None
    if settings.http_listen:  # the AuthZEN face beside gRPC (pdp.http)
        http = HttpFace.create(
            settings, decider=decider, recorder=recorder, telemetry=telemetry, roles=roles, desk=desk
        )
    # ---- the approver console (pdp.http.console), a face over the approvals desk ----
    console = create_console(settings, desk=desk) if settings.console_listen else None
    # ----
    server_ = PdpServer(
        grpc_server=server,
        monitor=monitor,
        health=health_servicer,
        recorder=recorder,
        store=store,
        telemetry=telemetry,
        http=http,
        desk=desk,
        console=console,
        lifecycle=lifecycle,
        opa=opa,
        roles=roles,
        health_server=health_server,
        health_port=health_port,
        sweep=ExpirySweep(desk, interval_s=settings.escalation_sweep_s),
    )
    return server_, port


def _opa_client(settings: Settings, telemetry: Telemetry) -> OpaClient:
    """The decision path's OPA client, coalescing concurrent Decide calls into batches (PDP_OPA_COALESCE).

    With policy masking on, one evaluation answers the decision and its masks (pdp.policy.masking).
    """
    path = settings.mask_path or settings.decision_path
    batch_path = settings.mask_batch_path if settings.mask_path else settings.batch_path
    if not settings.opa_coalesce:
        return OpaClient(settings.opa_url, path, telemetry, batch_path=batch_path)
    return CoalescingOpaClient(settings.opa_url, path, telemetry, batch_path=batch_path, max_batch=settings.max_batch)


def _mtls(settings: Settings) -> bool:
    return settings.tls_client_ca_file is not None


def _health_listener(settings: Settings, servicer: health.HealthServicer) -> tuple[grpc.Server | None, int]:
    """``PDP_HEALTH_LISTEN``: the same health servicer on a plaintext port with nothing else on it,
    so that the kubelet's gRPC probes (which cannot present a client certificate) work under mTLS."""
    if not settings.health_listen:
        return None, 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="pdp-health"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(settings.health_listen)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"PDP_HEALTH_LISTEN: cannot listen on {settings.health_listen}")
    return server, port


def _bind(server: grpc.Server, settings: Settings) -> int:
    """Binds ``PDP_LISTEN`` (TLS when a certificate is set) and returns the port.

    Raises:
        ConfigError: the address cannot be bound (the port is taken, or the host is not this machine's).
    """
    problem = f"PDP_LISTEN: cannot listen on {settings.listen}: the port is taken or the host is not local"
    host, port = settings.listen.rsplit(":", 1)
    if port != "0":  # asked first, so that the answer is this one line and not gRPC's own log of it
        try:
            with socket.socket(socket.AF_INET6 if host.startswith("[") else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host.strip("[]"), int(port)))
        except OSError:
            raise ConfigError(problem) from None
    try:
        if settings.tls_cert_file:
            bound = server.add_secure_port(settings.listen, server_credentials(settings))
        else:
            bound = server.add_insecure_port(settings.listen)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(problem)
    return bound
