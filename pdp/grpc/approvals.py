"""pdp.v1.ApprovalService: a thin face over :class:`pdp.approvals.desk.ApprovalDesk`.

Who calls is taken from the transport only: under mTLS the client certificate's identity as
:func:`pdp.authz.identity_of` names it (its SPIFFE ID, the first URI SAN, else its subject common
name), the same identity decisions and escalations are owned under. Without a client certificate
every call is UNAUTHENTICATED, except with
``PDP_APPROVALS_DEV_LOGIN=1`` (accepted only on a loopback listener without mTLS), where a loopback
peer names itself in the ``pdp-approver`` metadata: a development convenience, never a deployment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf import struct_pb2

from pdp.approvals.desk import ApprovalDesk, Approver, Unauthenticated
from pdp.authz import identity_of
from pdp.context import Caller
from pdp.errors import InvalidArgument, NotFound
from pdp.grpc.status import answering
from pdp.state import Escalation
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc

SERVICE_NAME = "pdp.v1.ApprovalService"
DEV_LOGIN_METADATA = "pdp-approver"
_WAIT_DEFAULT_S = 60
_WAIT_MAX_S = 3600


def to_proto(e: Escalation) -> apb.Escalation:
    """An escalation as the wire message."""
    context = struct_pb2.Struct()
    context.update(e.context)
    return apb.Escalation(
        id=e.id,
        decision_id=e.decision_id,
        action_digest=e.action_digest,
        agent_id=e.agent_id,
        principal_id=e.principal_id,
        reasons=e.reasons,
        role=e.role,
        count=e.count,
        created_at=e.created_at,
        expires_at=e.expires_at,
        status=e.status,
        votes=[
            apb.Vote(approver=v.approver, roles=v.roles, approve=v.approve, comment=v.comment, at=v.at) for v in e.votes
        ],
        context=context,
        closed_at=e.closed_at or 0,
        closed_reason=e.closed_reason,
    )


class ApprovalServicer(apb_grpc.ApprovalServiceServicer):
    """pdp.v1.ApprovalService. Every method answers through :func:`pdp.grpc.status.answering`."""

    def __init__(self, desk: ApprovalDesk, *, dev_login: bool, max_waiters: int) -> None:
        self._desk = desk
        self._dev_login = dev_login
        # A waiting stream holds one of the server's worker threads: never so many that Decide starves.
        self._waiters = threading.BoundedSemaphore(max_waiters)

    def ListEscalations(  # noqa: N802
        self, request: apb.ListEscalationsRequest, context: grpc.ServicerContext
    ) -> apb.ListEscalationsResponse:
        def run() -> apb.ListEscalationsResponse:
            pending = self._desk.pending(self._approver(context), now=int(time.time()))
            return apb.ListEscalationsResponse(escalations=[to_proto(e) for e in pending])

        return answering(context, "ListEscalations", run)

    def GetEscalation(self, request: apb.GetEscalationRequest, context: grpc.ServicerContext) -> apb.Escalation:  # noqa: N802
        return answering(
            context,
            "GetEscalation",
            lambda: to_proto(self._desk.get(_id(request.escalation_id), self._approver(context), now=int(time.time()))),
        )

    def Approve(self, request: apb.ApproveRequest, context: grpc.ServicerContext) -> apb.ApproveResponse:  # noqa: N802
        def run() -> apb.ApproveResponse:
            approver = self._approver(context)
            done = self._desk.approve(
                _id(request.escalation_id), approver, comment=request.comment, now=int(time.time())
            )
            return apb.ApproveResponse(escalation=to_proto(done.escalation), approval_token=done.token)

        return answering(context, "Approve", run)

    def Reject(self, request: apb.RejectRequest, context: grpc.ServicerContext) -> apb.Escalation:  # noqa: N802
        def run() -> apb.Escalation:
            approver = self._approver(context)
            return to_proto(
                self._desk.reject(_id(request.escalation_id), approver, comment=request.comment, now=int(time.time()))
            )

        return answering(context, "Reject", run)

    def WaitEscalation(  # noqa: N802
        self, request: apb.WaitEscalationRequest, context: grpc.ServicerContext
    ) -> Iterator[apb.Escalation]:
        timeout = request.timeout_seconds or _WAIT_DEFAULT_S
        if not 1 <= timeout <= _WAIT_MAX_S:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"timeout_seconds: must be 1..{_WAIT_MAX_S}")
        if not self._waiters.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "too many callers waiting; poll GetApprovalTokens (its status)"
            )
        try:
            yield from self._wait(request, context, time.monotonic() + timeout)
        finally:
            self._waiters.release()

    def _wait(
        self, request: apb.WaitEscalationRequest, context: grpc.ServicerContext, deadline: float
    ) -> Iterator[apb.Escalation]:
        e = answering(context, "WaitEscalation", lambda: self._requester_of(request.escalation_id, context))
        yield to_proto(e)
        while e.status == "open" and context.is_active():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            seen = e
            e = answering(
                context,
                "WaitEscalation",
                lambda: self._desk.wait(e.id, timeout_s=min(left, 5.0), changed_from=seen),  # noqa: B023
            )
            if e != seen:
                yield to_proto(e)

    def GetApprovalTokens(  # noqa: N802
        self, request: apb.GetApprovalTokensRequest, context: grpc.ServicerContext
    ) -> apb.GetApprovalTokensResponse:
        def run() -> apb.GetApprovalTokensResponse:
            e = self._requester_of(request.escalation_id, context)
            tokens = self._desk.tokens(e.id, now=int(time.time()))
            return apb.GetApprovalTokensResponse(approval_tokens=tokens, status=e.status)

        return answering(context, "GetApprovalTokens", run)

    def _identity(self, context: grpc.ServicerContext) -> str:
        """The caller's identity from the transport (see the module docstring)."""
        if identity := identity_of(Caller.from_grpc(context).to_dict()):
            return identity
        if self._dev_login and _loopback_peer(context.peer()):
            named = dict(context.invocation_metadata()).get(DEV_LOGIN_METADATA, "")
            if isinstance(named, str) and named:
                return named
        raise Unauthenticated(
            "the approvals service needs a client certificate (mTLS) naming the caller: its SPIFFE ID (URI SAN) "
            "or subject common name"
        )

    def _approver(self, context: grpc.ServicerContext) -> Approver:
        return self._desk.approver(self._identity(context))

    def _requester_of(self, escalation_id: str, context: grpc.ServicerContext) -> Escalation:
        """The escalation, if the caller is the one whose decision opened it (else NotFound): the
        same identity (:func:`pdp.authz.identity_of`, as the desk recorded the requester when the
        decision opened it); in the dev login, a loopback peer for a decision made without a certificate."""
        identity = identity_of(Caller.from_grpc(context).to_dict())
        if not identity and not (self._dev_login and _loopback_peer(context.peer())):
            raise Unauthenticated("the approvals service needs a client certificate (mTLS) naming the caller")
        e = self._desk.escalation(_id(escalation_id))
        if identity != (e.context.get("caller") or ""):
            raise NotFound(f"no escalation {escalation_id} opened by this caller")
        return e


def _loopback_peer(peer: str) -> bool:
    return peer.startswith(("ipv4:127.", "ipv6:[::1]", "unix:"))


def _id(escalation_id: str) -> str:
    if not escalation_id:
        raise InvalidArgument("escalation_id", "is required")
    return escalation_id


def add_service(servicer: ApprovalServicer, server: grpc.Server) -> None:
    """Registers ApprovalService."""
    apb_grpc.add_ApprovalServiceServicer_to_server(servicer, server)
