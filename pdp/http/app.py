"""The HTTP face's ASGI application (Starlette): AuthZEN routes, limits, errors, caller identity.

Thin, like the gRPC servicer: JSON in → :mod:`pdp.http.authzen` → :class:`~pdp.decide.Decider`
(in a worker thread: the pipeline blocks on OPA and the log) → JSON out. Errors map to HTTP
statuses in one place (:meth:`AuthzenApp._error`): 400 naming the field, 401 without the client
certificate mTLS requires, 403 for a caller not on the allow-list or without the route's role
(:data:`pdp.authz.ROUTE_ROLES`, checked before any route runs, for the route the router will run:
a route the table does not declare is refused), 413 past the size limit, 415
for a body that is not JSON, 429 over the caller's rate, 500 without a Python repr; plain text,
except on the access request routes, which answer RFC 9457 problems (the Access Request and
Approval Profile draft's types). Every answer echoes ``X-Request-ID``.
"""

from __future__ import annotations

import dataclasses
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

from pdp.approvals.desk import ApprovalDesk
from pdp.approvals.tokens import ApprovalError, issue_binding, verify_binding
from pdp.authz import PUBLIC, ROUTE_ROLES, RoleMap, authorize, identity_of
from pdp.client import digest_of
from pdp.context import Caller
from pdp.decide import Decider, Decision
from pdp.errors import InvalidArgument, NotFound, PdpError, PermissionDenied, RateLimited
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


class Problem(HttpError):
    """An error of the access request endpoints of one of the draft's problem types
    (:data:`pdp.http.authzen.PROBLEMS`), answered as ``application/problem+json``."""

    def __init__(self, kind: str, detail: str) -> None:
        status, self.doc = authzen.problem(kind, detail)
        super().__init__(status, detail)


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
        """Submits an access request (the profile's Access Request Submission): ``subject``,
        ``resource``, ``action`` and the ``denial`` with the ``binding_token`` the requestable denial
        carried. The escalation is already open (the denial opened it); the submission is checked
        against it (:meth:`_bound`) and answered with its task: 202 while pending, 201 when already
        decided. Approvers decide only through the authenticated ApprovalService and console, never here.
        """

        async def answer() -> Any:
            caller = self._caller(request)
            body = await self._body(request)
            try:
                evaluation, denial = authzen.submission_of(body)
            except InvalidArgument as bad:
                raise Problem("invalid_denial_binding", f"{bad.field}: {bad.problem}") from None
            bound = await run_in_threadpool(self._bound, evaluation, denial, caller)
            doc = self._task(bound, request)
            status = 202 if doc["task"]["status"] == "pending" else 201
            return _Created(doc, status, {"Location": doc["task"]["status_endpoint"]})

        return await self._answer(request, answer, batch=False, problems=True)

    async def _status(self, request: Request) -> Response:
        """Polls an access request's task (the profile's Task Status Endpoint): ``pending``,
        ``approved`` (with the ``result`` to re-evaluate with), ``denied``, ``cancelled`` or ``expired``."""

        async def answer() -> Any:
            caller = self._caller(request)
            task_id = request.path_params["id"]
            e = await run_in_threadpool(self._owned, task_id, caller)
            if e is None:
                raise Problem("unknown_task", f"no access request {task_id} submitted by this caller")
            assert self._desk is not None  # _owned found it on the desk
            if int(time.time()) >= authzen.task_expires_at(e, self._desk.approval_ttl_s):
                raise Problem("task_expired", f"access request {task_id} expired")
            return self._task(e, request)

        return await self._answer(request, answer, batch=False, problems=True)

    async def _metadata(self, request: Request) -> Response:
        async def answer() -> Any:
            return authzen.metadata(self._base_url or f"{request.url.scheme}://{request.url.netloc}")

        return await self._answer(request, answer, batch=False)

    async def _jwks(self, request: Request) -> Response:
        async def answer() -> Any:
            return self._recorder.jwks()

        return await self._answer(request, answer, batch=False)

    # ---- the one place errors become statuses ---------------------------------------------

    async def _answer(
        self, request: Request, answer: Callable[[], Awaitable[Any]], *, batch: bool, problems: bool = False
    ) -> Response:
        """Runs a route's ``answer`` and maps its errors to statuses (:meth:`_error`)."""
        try:
            doc = await answer()
        except Exception as exc:  # _error maps every error; a bug to a 500 without a repr
            return self._error(request, exc, batch=batch, problems=problems)
        if isinstance(doc, _Created):
            return Response(_json(doc.doc), status_code=doc.status, headers=doc.headers, media_type="application/json")
        body = doc if isinstance(doc, bytes) else _json(doc)
        return Response(body, media_type="application/json")

    def _error(self, request: Request, exc: Exception, *, batch: bool, problems: bool) -> Response:
        """The answer to an error. ``problems``: the access request endpoints, whose errors are RFC 9457
        ``application/problem+json`` (the draft's problem types, else ``about:blank``); the evaluation
        endpoints answer errors in plain text (AuthZEN 1.0)."""
        if isinstance(exc, Problem):
            return Response(_json(exc.doc), status_code=exc.status, media_type="application/problem+json")
        if isinstance(exc, HttpError):
            status, message = exc.status, exc.message
        elif isinstance(exc, InvalidArgument):
            status, message = 400, f"{authzen.name_field(exc, self._mapping, batch=batch)}: {exc.problem}"
        elif isinstance(exc, RateLimited):
            status, message = 429, str(exc)
        else:
            # Never a Python repr to the caller; no answer is a deny for any PEP.
            log.error("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
            status, message = 500, "internal error; nothing was decided"
        if not problems:
            return Response(message, status_code=status, media_type="text/plain")
        _, doc = authzen.problem("", message, status=status)
        return Response(_json(doc), status_code=status, media_type="application/problem+json")

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

    def _owned(self, escalation_id: str, caller: Caller) -> Escalation | None:
        """The escalation, as it is now (expiry applied), if this caller's decision opened it: the
        same identity (:func:`pdp.authz.identity_of`, as the desk recorded the requester), as gRPC
        GetApprovalTokens; else None, as for none. A certificate naming nobody owns nothing."""
        identity = identity_of(caller.to_dict())
        if self._desk is None or not escalation_id or (caller.authenticated and not identity):
            return None
        try:
            e = self._desk.wait(escalation_id, timeout_s=0)
        except (EscalationError, NotFound):
            return None
        return e if identity == (e.context.get("caller") or "") else None

    def _bound(self, evaluation: dict[str, Any], denial: dict[str, Any], caller: Caller) -> Escalation:
        """The escalation a submission is for, once the submission is bound to it: the binding token
        is one this PDP signed (its keys, its ``typ``), ``denial.expires_at`` is the token's expiry
        and has not passed, the escalation is this caller's, and the submitted subject, action and
        resource (mapped as an evaluation is) are the denied action: the same action digest and a
        principal it names.

        Raises:
            Problem: ``invalid_denial_binding`` (400) or ``expired_denial`` (410).
        """
        try:
            binding = verify_binding(denial["binding_token"], self._recorder.jwks())
        except ApprovalError as bad:
            raise Problem(
                "invalid_denial_binding", f"denial.binding_token: not one this PDP signed: {bad.problem}"
            ) from None
        try:
            echoed = authzen.timestamp(denial["expires_at"])
        except ValueError as bad:
            raise Problem("invalid_denial_binding", f"denial.expires_at: {bad}") from None
        if echoed != binding.exp:
            raise Problem("invalid_denial_binding", "denial.expires_at: not the expiry the binding token carries")
        if denial.get("evaluation_id", binding.evaluation_id) != binding.evaluation_id:
            raise Problem("invalid_denial_binding", "denial.evaluation_id: not the evaluation the binding token names")
        if int(time.time()) >= binding.exp:
            raise Problem("expired_denial", f"the requestable denial expired at {authzen.rfc3339(binding.exp)}")
        e = self._owned(binding.escalation_id, caller)
        if e is None or e.decision_id != binding.evaluation_id or e.action_digest != binding.action_digest:
            raise Problem("invalid_denial_binding", "denial.binding_token: not a denial this PDP gave this caller")
        try:
            context = self._mapping.to_request(evaluation).context
            digest = digest_of(context)
        except InvalidArgument as bad:
            field = authzen.name_field(bad, self._mapping, batch=False)
            raise Problem("invalid_denial_binding", f"{field}: {bad.problem}") from None
        if digest != binding.action_digest:
            raise Problem("invalid_denial_binding", "subject, action, resource: not the action that was denied")
        principals = {e.principal_id, *e.context.get("principals", ())} - {""}
        if context.principal.id not in (principals or {""}):
            raise Problem("invalid_denial_binding", "subject: not the principal of the denied action")
        return e

    def _task(self, e: Escalation, request: Request) -> dict[str, Any]:
        assert self._desk is not None  # the escalation was found on it
        endpoint = f"{self._base(request)}{authzen.ACCESS_REQUESTS}/{e.id}"
        return authzen.task(e, status_endpoint=endpoint, approval_ttl_s=self._desk.approval_ttl_s)

    def _base(self, request: Request) -> str:
        """The PDP identifier: ``PDP_HTTP_BASE_URL``, else the scheme and host the caller used."""
        return (self._base_url or f"{request.url.scheme}://{request.url.netloc}").rstrip("/")

    def _present(self, approval_id: str, caller: Caller) -> authzen.Presented:
        """Looks up the approval a re-evaluation presents (its id is the task id): only an approved
        (or already consumed) escalation this caller's decision opened gives tokens; the pipeline then
        verifies them against this request (signature, expiry, action digest recomputed, agent,
        principal) and consumes them on an ALLOW, once. Anything else presents nothing (a store that
        cannot be read included: never more approvals than the PDP found)."""
        unverifiable = authzen.Presented(id=approval_id, problem=authzen.APPROVAL_UNVERIFIABLE)
        desk = self._desk
        try:
            e = self._owned(approval_id, caller)
            if desk is None or e is None or e.status not in ("approved", "consumed"):
                return unverifiable
            tokens = desk.tokens(e.id, now=int(time.time()))
        except PdpError as err:
            log.warning("approval %s could not be looked up: %s", approval_id, err)
            return unverifiable
        until = authzen.approved_until(e, desk.approval_ttl_s)
        return authzen.Presented(id=approval_id, tokens=tuple(tokens), approved_until=until)

    def _requestable(self, d: Decision, endpoint: str) -> dict[str, Any] | None:
        """The requestable denial of a REQUIRE_APPROVAL that opened an escalation, with its binding token."""
        claims = authzen.binding_of(d)
        if not claims:
            return None
        token = issue_binding(self._recorder.ring, **claims)
        return authzen.access_request(d, binding_token=token, endpoint=endpoint)

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
        referenced = [authzen.approval_of(e, "" if single else f"evaluations[{i}].") for i, e in enumerate(evaluations)]
        requests = [self._request_for(e, request, index=None if single else i) for i, (e, _) in enumerate(referenced)]
        presented = [self._present(ref, caller) if ref is not None else None for _, ref in referenced]
        for r, p in zip(requests, presented, strict=True):
            if p is not None:
                r.approval_tokens.extend(p.tokens)
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
        endpoint = f"{self._base(request)}{authzen.ACCESS_REQUESTS}"
        results = [
            authzen.to_result(
                d,
                with_context=with_context,
                access_request=self._requestable(d, endpoint) if with_context else None,
                presented=p,
            )
            for d, p in zip(decisions, presented, strict=False)
        ]
        if single:
            doc = results[0]
        else:
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


@dataclasses.dataclass(frozen=True)
class _Created:
    """A JSON answer with a status other than 200 and headers (a submitted access request)."""

    doc: dict[str, Any]
    status: int
    headers: dict[str, str]


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
