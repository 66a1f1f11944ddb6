"""The one place gRPC calls are authorised: an interceptor that checks the caller's roles
against :data:`pdp.authz.METHOD_ROLES` before any servicer runs, and hands the servicer its
:class:`pdp.authz.Grant` (:func:`grant`) for the per-decision checks (own decisions only)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from pdp.authz import METHOD_ROLES, Grant, RoleMap, authorize
from pdp.context import Caller
from pdp.errors import PermissionDenied

if TYPE_CHECKING:
    _Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.ServerInterceptor  # generic only in the stubs

_GRANT: contextvars.ContextVar[Grant] = contextvars.ContextVar("pdp_grant")


def grant() -> Grant:
    """The current call's grant (set by :class:`AuthzInterceptor` around every handler)."""
    return _GRANT.get()


class AuthzInterceptor(_Interceptor):
    """Refuses a call (PERMISSION_DENIED) unless the caller holds a role its method needs."""

    def __init__(self, roles: RoleMap) -> None:
        self._roles = roles

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        wrapped = {k: self._guard(method, getattr(handler, k), k.endswith("stream")) for k in kinds}
        return handler._replace(**{k: v for k, v in wrapped.items() if v is not None})

    def _guard(self, method: str, behavior: Any, streams: bool) -> Any:
        if behavior is None:
            return None

        def checked(request: Any, context: grpc.ServicerContext) -> Any:
            g = self._roles.grant(Caller.from_grpc(context).to_dict())
            try:
                authorize(METHOD_ROLES, method, g)
            except PermissionDenied as e:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
            if streams:
                return _streaming(behavior, request, context, g)
            token = _GRANT.set(g)
            try:
                return behavior(request, context)
            finally:
                _GRANT.reset(token)

        return checked


def _streaming(behavior: Any, request: Any, context: grpc.ServicerContext, g: Grant) -> Iterator[Any]:
    token = _GRANT.set(g)
    try:
        yield from behavior(request, context)
    finally:
        _GRANT.reset(token)
