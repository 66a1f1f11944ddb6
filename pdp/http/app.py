"""The HTTP face's ASGI application (Starlette): AuthZEN routes, limits, errors, caller identity.

Thin, like the gRPC servicer: JSON in → :mod:`pdp.http.authzen` → :class:`~pdp.decide.Decider`
(in a worker thread: the pipeline blocks on OPA and the log) → JSON out. Errors map to HTTP
statuses in one place (:meth:`AuthzenApp._answer`): 400 naming the field, 401 without the client
certificate mTLS requires, 403 for a caller not on the allow-list or without the route's role
(:data:`pdp.authz.ROUTE_ROLES`, checked before any route runs, for the route the router will run:
a route the table does not declare is refused), 413 past the size limit, 415
for a body that is not JSON, 429 over the caller's rate, 500 without a Python repr. Every answer
echoes ``X-Request-ID``.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opentelemetry import propagate, trace
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdp import keys, records
from pdp.approvals.desk import ApprovalDesk
from pdp.authz import PUBLIC, ROUTE_ROLES, RoleMap, authorize, identity_of
from pdp.context import Caller
from pdp.decide import Decider
from pdp.errors import InvalidArgument, NotFound, PdpError, PermissionDenied, RateLimited, RecordError
from pdp.http import authzen
from pdp.recorder import Recorder
from pdp.state import Escalation, EscalationError
from pdp.telemetry import Telemetry
from pdp.v1 import decision_pb2 as pb

log = logging.getLogger(__name__)

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
METADATA = "/.well-known/authzen-configuration"
JWKS = "/.well-known/jwks.json"
# Levels an AuthZEN body wraps around a property value (evaluations[i].resource.properties):
# the value itself may nest as deep as PDP_MAX_DEPTH allows in gRPC Structs.
_WRAPPING = 4

# What the TLS layer established about each open connection, keyed by the client address
# (host, port) that the ASGI scope carries: (certificate subject CN, subject alternative names).
PeerNames = Mapping[tuple[str, int], tuple[str, tuple[str, ...], tuple[str, ...]]]


class HttpError(PdpError):
    """An answer other than 200: the status and a message for the caller (no Python repr)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class AuthzenApp:
    """The AuthZEN routes over one :class:`Decider`.

    Args:
        decider: the decision pipeline (the same one gRPC uses).
        recorder: for the JWKS.
        telemetry: spans and metrics, as for gRPC.
        mapping: AuthZEN ↔ DecideRequest.
        max_request_bytes: largest body accepted (PDP_MAX_REQUEST_BYTES); past it, 413.
        max_depth: deepest nesting of property values (PDP_MAX_DEPTH).
        peers: the TLS layer's client certificate names per connection.
        require_client_cert: mTLS is configured: a caller without a certificate gets 401.
        allowed_callers: when not empty, only callers whose certificate subject or a SAN is
            listed may ask (others get 403).
        base_url: the PDP identifier in the metadata; empty: the URL the caller used.
        roles: who may call which route (:data:`pdp.authz.ROUTE_ROLES`).
        desk: the approvals desk behind the access request routes.
    """

    def __init__(
        self,
        *,
        decider: Decider,
        recorder: Recorder,
        telemetry: Telemetry,
        mapping: authzen.Mapping,
        max_request_bytes: int,
        max_depth: int,
        peers: PeerNames,
        require_client_cert: bool = False,
        allowed_callers: frozenset[str] = frozenset(),
        base_url: str = "",
        roles: RoleMap | None = None,
        desk: ApprovalDesk | None = None,
    ) -> None:
        self._decider = decider
        self._recorder = recorder
        self._telemetry = telemetry
        self._mapping = mapping
        self._max_bytes = max_request_bytes
        self._max_depth = max_depth + _WRAPPING
        self._peers = peers
        self._require_cert = require_client_cert
        self._allowed = allowed_callers
        self._base_url = base_url
        self._roles = roles or RoleMap.default(mtls=require_client_cert)
        self._desk = desk

    def routes(self) -> list[Route]:
        """The routes this face serves; each ``METHOD path`` is declared in :data:`pdp.authz.ROUTE_ROLES`."""
        return [
            Route(EVALUATION, self._evaluation, methods=["POST"]),
            Route(EVALUATIONS, functools.partial(self._evaluation, plural=True), methods=["POST"]),
            Route(authzen.ACCESS_REQUESTS, self._submit, methods=["POST"]),
            Route(authzen.ACCESS_REQUESTS + "/{id}", self._status, methods=["GET"]),
            Route(METADATA, self._metadata, methods=["GET"]),
            Route(JWKS, self._jwks, methods=["GET"]),
        ]

    def asgi(self) -> ASGIApp:
        """The ASGI application."""
        routes = self.routes()
        return _echo_request_id(self._authorizing(Starlette(routes=routes), routes))

    def _authorizing(self, app: ASGIApp, routes: Sequence[Route]) -> ASGIApp:
        """The one place HTTP calls are authorised: the roles (:data:`pdp.authz.ROUTE_ROLES`) of the
        route the router will run (:func:`route_of`, parameterised routes included) against the
        caller's, before it runs. A route of ours that declares no roles is refused (fail closed); a
        request no route takes goes on to the router (its 404 / 405 / redirect, which run no route)."""

        async def authorizing(scope: Scope, receive: Receive, send: Send) -> None:
            what = route_of(routes, scope)
            if what is not None and ROUTE_ROLES.get(what) != PUBLIC:
                try:
                    authorize(ROUTE_ROLES, what, self._roles.grant(self._caller_of(scope).to_dict()))
                except HttpError as e:
                    await Response(e.message, e.status, media_type="text/plain")(scope, receive, send)
                    return
                except PermissionDenied as e:
                    await Response(str(e), 403, media_type="text/plain")(scope, receive, send)
                    return
            await app(scope, receive, send)

        return authorizing

    # ---- routes ---------------------------------------------------------------------------

    async def _evaluation(self, request: Request, *, plural: bool = False) -> Response:
        async def answer() -> Any:
            caller = self._caller(request)
            body = await self._body(request)
            return await run_in_threadpool(self._evaluate, body, caller, request, plural=plural)

        return await self._answer(request, answer, batch=plural)

    async def _submit(self, request: Request) -> Response:
        """Submits a requestable denial: ``{"request_token": <the denial's signed record>}``.

        The escalation is already open (the denial opened it); submitting binds the PEP to it by the
        PDP-signed token and answers the task handle. Approvers decide only through the
        authenticated ApprovalService and console, never here.
        """

        async def answer() -> Any:
            caller = self._caller(request)
            body = await self._body(request)
            token = body.get("request_token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise InvalidArgument("request_token", "is required (the access_request.request_token of the denial)")
            try:
                claims = records.verify(token, keys.public_keys(self._recorder.jwks()), typ=records.TYP_DECISION)
            except RecordError as bad:
                raise InvalidArgument("request_token", f"is not a record this PDP signed: {bad}") from None
            wanted = body.get("id")
            if not isinstance(wanted, str) or not wanted:
                raise InvalidArgument("id", "is required (the access_request.id of the denial)")
            e = await run_in_threadpool(self._requested, wanted, caller)
            if e.decision_id != claims.get("decision_id"):
                raise HttpError(404, f"access request {wanted}: not the one this request_token's decision opened")
            return await run_in_threadpool(self._task, e)

        return await self._answer(request, answer, batch=False)

    async def _status(self, request: Request) -> Response:
        """Polls an access request: pending, approved (with the approval to re-evaluate with),
        denied, expired or consumed."""

        async def answer() -> Any:
            caller = self._caller(request)
            e = await run_in_threadpool(self._requested, request.path_params["id"], caller)
            return await run_in_threadpool(self._task, e)

        return await self._answer(request, answer, batch=False)

    async def _metadata(self, request: Request) -> Response:
        async def answer() -> Any:
            return authzen.metadata(self._base_url or f"{request.url.scheme}://{request.url.netloc}")

        return await self._answer(request, answer, batch=False)

    async def _jwks(self, request: Request) -> Response:
        async def answer() -> Any:
            return self._recorder.jwks()

        return await self._answer(request, answer, batch=False)

    # ---- the one place errors become statuses ---------------------------------------------

    async def _answer(self, request: Request, answer: Callable[[], Awaitable[Any]], *, batch: bool) -> Response:
        headers: dict[str, str] = {}
        try:
            doc = await answer()
        except HttpError as e:
            return Response(e.message, status_code=e.status, headers=headers, media_type="text/plain")
        except InvalidArgument as e:
            field = authzen.name_field(e, self._mapping, batch=batch)
            return Response(f"{field}: {e.problem}", status_code=400, headers=headers, media_type="text/plain")
        except RateLimited as e:
            return Response(str(e), status_code=429, headers=headers, media_type="text/plain")
        except Exception:
            # Never a Python repr to the caller; no answer is a deny for any PEP.
            log.exception("%s %s failed unexpectedly", request.method, request.url.path)
            return Response("internal error; nothing was decided", 500, headers=headers, media_type="text/plain")
        body = doc if isinstance(doc, bytes) else _json(doc)
        return Response(body, headers=headers, media_type="application/json")

    # ---- pieces ---------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        """The caller as the transport established it, bound as gRPC binds it (never from the body)."""
        return self._caller_of(request.scope)

    def _caller_of(self, scope: Scope) -> Caller:
        client = scope.get("client") or ("", 0)
        host, port = client[0], client[1]
        subject, sans, uris = self._peers.get((host, port), ("", (), ()))
        authenticated = bool(subject or sans)
        if self._require_cert and not authenticated:
            raise HttpError(401, "a client certificate is required (mTLS)")
        if self._allowed and not ({subject, *sans} & self._allowed):
            raise HttpError(403, f"caller {subject or host!r} is not allowed to ask this PDP")
        peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        return Caller(authenticated=authenticated, peer=peer, subject=subject, sans=sans, uri_sans=uris)

    async def _body(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise HttpError(415, f"Content-Type: {ctype} is not application/json")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self._max_bytes:
            raise HttpError(413, f"request: {length} bytes; PDP_MAX_REQUEST_BYTES allows {self._max_bytes}")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self._max_bytes:
                raise HttpError(413, f"request: more than PDP_MAX_REQUEST_BYTES ({self._max_bytes}) bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise InvalidArgument("request", f"is not JSON: {str(e)[:200]}") from None
        _check_depth(body, self._max_depth)
        return body

    def _requested(self, escalation_id: str, caller: Caller) -> Escalation:
        """The escalation, as it is now (expiry applied), if this caller's decision opened it: the
        same identity (:func:`pdp.authz.identity_of`, as the desk recorded the requester), as gRPC
        GetApprovalTokens (else 404, as for none). A certificate naming nobody owns nothing."""
        missing = HttpError(404, f"no access request {escalation_id} opened by this caller")
        identity = identity_of(caller.to_dict())
        if self._desk is None or not escalation_id or (caller.authenticated and not identity):
            raise missing
        try:
            e = self._desk.wait(escalation_id, timeout_s=0)
        except (EscalationError, NotFound):
            raise missing from None
        if identity != (e.context.get("caller") or ""):
            raise missing
        return e

    def _task(self, e: Escalation) -> dict[str, Any]:
        assert self._desk is not None  # _requested found the escalation on it
        tokens = self._desk.tokens(e.id, now=int(time.time())) if e.status == "approved" else []
        return authzen.task(e, tokens)

    def _request_for(self, evaluation: dict[str, Any], request: Request, *, index: int | None) -> pb.DecideRequest:
        rid = ""
        if self._mapping.request_id == "x-request-id" and (header := request.headers.get("x-request-id")):
            rid = header if index is None else f"{header}.{index}"
        try:
            return self._mapping.to_request(evaluation, request_id=rid)
        except InvalidArgument as e:
            if index is None:
                raise
            raise InvalidArgument(f"evaluations[{index}].{e.field}", e.problem) from None

    def _evaluate(self, body: Any, caller: Caller, request: Request, *, plural: bool) -> bytes:
        """Runs in a worker thread, everything from the parsed body to the answer's bytes: the
        event loop only moves bytes (measured: mapping and answers on the loop's thread cost
        evaluations a third of their throughput)."""
        if plural:
            evaluations, semantic, single = authzen.evaluations_of(body)
        else:
            evaluations, semantic, single = [authzen.evaluation_of(body)], authzen.EXECUTE_ALL, True
        requests = [self._request_for(e, request, index=None if single else i) for i, e in enumerate(evaluations)]
        parent = propagate.extract(dict(request.headers))
        name = f"POST {request.url.path}"
        with self._telemetry.tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER):
            if single:
                decisions = [self._decider.decide(requests[0], caller=caller, time_remaining_s=None)]
            elif semantic == authzen.EXECUTE_ALL:
                decisions = self._decider.decide_batch(requests, caller=caller, time_remaining_s=None)
            else:
                decisions = authzen.decide_in_order(
                    lambda r: self._decider.decide(r, caller=caller, time_remaining_s=None), requests, semantic
                )
            self._telemetry.record(decisions, batch=not single)
        with_context = self._mapping.response_context
        if single:
            doc = authzen.to_result(decisions[0], with_context=with_context)
        else:
            results = [authzen.to_result(d, with_context=with_context) for d in decisions]
            if with_context and len(decisions) < len(requests):
                results[-1]["context"]["short_circuit"] = semantic  # why the answer stops here (spec §7.1.2)
            doc = {"evaluations": results}
        return _json(doc)


def route_of(routes: Sequence[Route], scope: Scope) -> str | None:
    """``METHOD path`` of the route the router runs for an HTTP request, as :data:`pdp.authz.ROUTE_ROLES`
    names it: the first route whose path and method match (the router's choice), its path as declared
    (``/access/v1/access_requests/{id}``), HEAD as GET (Starlette answers HEAD with the GET route).
    None when no route runs: not HTTP, or the router answers 404 / 405 / a redirect itself."""
    if scope["type"] != "http":
        return None
    for route in routes:
        if route.matches(scope)[0] is Match.FULL:
            method = "GET" if scope["method"] == "HEAD" else scope["method"]
            return f"{method} {route.path_format}"
    return None


def _echo_request_id(app: ASGIApp) -> ASGIApp:
    """Answers every request that carries ``X-Request-ID`` with the same header (spec §10.1.3),
    whatever answers it: a route, an error, or the router's 404 / 405."""

    async def echoing(scope: Scope, receive: Receive, send: Send) -> None:
        rid = (
            next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
            if scope["type"] == "http"
            else None
        )
        if rid is None:
            await app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid)]}
            await send(message)

        await app(scope, receive, send_with_id)

    return echoing


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _check_depth(value: Any, limit: int) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise InvalidArgument("request", f"nests deeper than {limit} levels")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
