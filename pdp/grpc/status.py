"""The one place where PDP errors become gRPC status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from pdp.approvals.desk import ApprovalRefused, Unauthenticated
from pdp.approvals.tokens import ApprovalError
from pdp.errors import (
    AlreadyReported,
    ConfigError,
    InvalidArgument,
    LedgerCorrupt,
    LedgerUnavailable,
    NotAnAllow,
    NotFound,
    NoVerdict,
    PdpError,
    PermissionDenied,
    RateLimited,
)
from pdp.state import EscalationError, StateUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

STATUS_OF: dict[type[PdpError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    AlreadyReported: grpc.StatusCode.ALREADY_EXISTS,
    NotAnAllow: grpc.StatusCode.FAILED_PRECONDITION,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    LedgerCorrupt: grpc.StatusCode.FAILED_PRECONDITION,
    LedgerUnavailable: grpc.StatusCode.UNAVAILABLE,
    StateUnavailable: grpc.StatusCode.UNAVAILABLE,
    EscalationError: grpc.StatusCode.FAILED_PRECONDITION,
    ApprovalError: grpc.StatusCode.INVALID_ARGUMENT,
    ApprovalRefused: grpc.StatusCode.PERMISSION_DENIED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    NoVerdict: grpc.StatusCode.UNAVAILABLE,  # outside Decide (e.g. the approver registry): no answer
}
"""Errors a caller is told about, with their message; anything else is a bare INTERNAL."""


def status_of(error: BaseException) -> grpc.StatusCode | None:
    """The status a caller gets for ``error`` (None: not an error the caller is told about)."""
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return None


def answering(context: grpc.ServicerContext, what: str, fn: Callable[[], T]) -> T:
    """Runs ``fn`` for an RPC; a known error aborts the call with its status and message."""
    try:
        return fn()
    except Exception as e:
        status = status_of(e)
        if status is not None:
            context.abort(status, str(e))
        # Never a Python repr to the caller; no answer is a deny for any PEP.
        log.exception("%s failed unexpectedly", what)
        context.abort(grpc.StatusCode.INTERNAL, f"internal error; {what} did nothing")
