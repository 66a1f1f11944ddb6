"""pdp.v1.AdminService: the kill switch over gRPC (:class:`pdp.suspensions.KillSwitch`).

The role table (:mod:`pdp.authz`) decides who may call each method (``admin``; ``auditor`` may also
list). Without mTLS that table gives everyone every role (development), so here an unauthenticated
caller must also be on this machine (loopback or a unix socket): the kill switch is never thrown
from across the network by somebody nobody can name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from pdp.context import Caller
from pdp.errors import PermissionDenied
from pdp.grpc.status import answering
from pdp.state import StateStore
from pdp.suspensions import KillSwitch, rfc3339
from pdp.telemetry import Telemetry
from pdp.v1 import admin_pb2 as pb
from pdp.v1 import admin_pb2_grpc as pb_grpc

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name

REQUIRED_ROLE = "admin"
"""The role every AdminService method requires."""

_LOCAL_PEERS = ("ipv4:127.", "ipv6:[::1]", "unix:")

T = TypeVar("T")


class AdminServicer(pb_grpc.AdminServiceServicer):
    """pdp.v1.AdminService. Every method answers through :func:`pdp.grpc.status.answering`."""

    def __init__(self, kill_switch: KillSwitch, store: StateStore, telemetry: Telemetry) -> None:
        self._kill_switch = kill_switch
        self._store = store
        self._telemetry = telemetry

    def Suspend(self, request: pb.SuspendRequest, context: grpc.ServicerContext) -> pb.SuspendResponse:  # noqa: N802
        def suspend(by: str) -> pb.SuspendResponse:
            thrown = self._kill_switch.suspend(
                kind=request.kind or "agent",
                value=request.value,
                reason=request.reason,
                until=request.until,
                by=by,
                operator=request.operator,
            )
            self._telemetry.suspension_changes.add(1, {"kind": thrown.record.kind, "action": "suspend"})
            return pb.SuspendResponse(
                record=thrown.signed.record,
                log_index=thrown.signed.log_index,
                closed_escalations=thrown.record.closed_escalations,
            )

        return _as_admin(context, "Suspend", suspend)

    def Resume(self, request: pb.ResumeRequest, context: grpc.ServicerContext) -> pb.ResumeResponse:  # noqa: N802
        def resume(by: str) -> pb.ResumeResponse:
            thrown = self._kill_switch.resume(
                kind=request.kind or "agent",
                value=request.value,
                reason=request.reason,
                by=by,
                operator=request.operator,
            )
            self._telemetry.suspension_changes.add(1, {"kind": thrown.record.kind, "action": "resume"})
            return pb.ResumeResponse(
                record=thrown.signed.record, log_index=thrown.signed.log_index, was_active=thrown.record.was_active
            )

        return _as_admin(context, "Resume", resume)

    def ListSuspensions(  # noqa: N802
        self, request: pb.ListSuspensionsRequest, context: grpc.ServicerContext
    ) -> pb.ListSuspensionsResponse:
        def list_(by: str) -> pb.ListSuspensionsResponse:
            return pb.ListSuspensionsResponse(
                suspensions=[
                    pb.Suspension(
                        kind=s.kind,
                        value=s.value,
                        reason=s.reason,
                        suspended_by=s.by,
                        suspended_at=rfc3339(s.at),
                        until="" if s.until is None else rfc3339(s.until),
                    )
                    for s in self._store.suspensions(now=int(time.time()))
                ]
            )

        return _as_admin(context, "ListSuspensions", list_)


def _as_admin(context: grpc.ServicerContext, what: str, fn: Callable[[str], T]) -> T:
    """Runs ``fn`` with the caller's identity; an unauthenticated caller must be on this machine."""

    def checked() -> T:
        caller = Caller.from_grpc(context)
        if not caller.authenticated and not caller.peer.startswith(_LOCAL_PEERS):
            raise PermissionDenied(
                f"{what} needs the {REQUIRED_ROLE} role: call over mTLS or from this machine, not from {caller.peer}"
            )
        return fn(caller.subject or caller.peer)

    return answering(context, what, checked)


def add_service(servicer: AdminServicer, server: grpc.Server) -> None:
    """Registers AdminService."""
    pb_grpc.add_AdminServiceServicer_to_server(servicer, server)
