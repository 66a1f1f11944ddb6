"""The MCP proxy: relays JSON-RPC messages between a client and a server, gating tool calls.

:func:`relay` works on the wire messages of the official SDK's transports, so whatever protocol
version the two ends negotiate passes through; only ``tools/call`` (decided before it is forwarded)
and the answer to ``tools/list`` (filtered) are touched. Every other message goes through unchanged.
:func:`stateless_server` is the same gate for the 2026-07-28 requests the SDK serves one at a time
over streamable HTTP: a lowlevel SDK ``Server`` whose handlers forward each request upstream.

While a ``tools/call`` is held for approval (``approval_wait_s``) and its request carried a
``params._meta.progressToken``, the client gets ``notifications/progress`` for it: one when the wait
starts, then one every :data:`PROGRESS_EVERY_S` seconds until the approvers decide or the wait ends.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
import mcp_types as types
from mcp import Client
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    INTERNAL_ERROR,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    ProgressToken,
    RequestId,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from opentelemetry import propagate, trace
from pydantic import BaseModel, RootModel

from pdp.pep.gate import Gate, Permit, Refusal

log = logging.getLogger("pdp.pep")
T = TypeVar("T")
Answer = Callable[[JSONRPCResponse | JSONRPCError], Awaitable[JSONRPCMessage]]
Progress = Callable[[str, float], Awaitable[bool]]  # (escalation id, seconds waited) -> still deliverable
PROGRESS_EVERY_S = 5.0  # between progress notifications while a call waits for its approvers


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    # The PDP client is synchronous: run it off the event loop, in the caller's trace context.
    return await anyio.to_thread.run_sync(contextvars.copy_context().run, fn, *args)


def _error(request_id: RequestId, refusal: Refusal) -> JSONRPCError:
    return JSONRPCError.model_validate({"jsonrpc": "2.0", "id": request_id, "error": refusal.error()})


async def relay(
    gate: Gate,
    *,
    client_read: Any,
    client_write: Any,
    server_read: Any,
    server_write: Any,
    tracer: trace.Tracer | None = None,
) -> None:
    """Relays one session until either side closes.

    Args:
        gate: decides and reports.
        client_read: messages from the MCP client (SDK transport stream of SessionMessage).
        client_write: to the MCP client.
        server_read: messages from the MCP server.
        server_write: to the MCP server.
        tracer: spans for the gated calls.
    """
    tracer = tracer or trace.get_tracer("pdp.pep")
    pending: dict[RequestId, Answer] = {}

    async def call(item: SessionMessage, msg: JSONRPCRequest) -> None:
        params = msg.params or {}
        progress = _progress_sender(client_write, msg.id, _progress_token(params))
        got = await _decide(gate, tracer, params, _headers(item), progress)
        if isinstance(got, Refusal):
            await client_write.send(SessionMessage(_error(msg.id, got)))
            return
        pending[msg.id] = _finisher(gate, got)
        await server_write.send(item)

    async def listed(answer: JSONRPCResponse | JSONRPCError) -> JSONRPCMessage:
        if isinstance(answer, JSONRPCError):
            return answer
        try:
            return JSONRPCResponse(jsonrpc="2.0", id=answer.id, result=await _visible(gate, answer.result))
        except Refusal as r:
            return _error(answer.id, r)

    async def answer(handler: Answer, item: SessionMessage, msg: JSONRPCResponse | JSONRPCError) -> None:
        await client_write.send(SessionMessage(await handler(msg), metadata=item.metadata))

    async with anyio.create_task_group() as tg:

        def from_client(item: SessionMessage) -> bool:
            msg = item.message
            if isinstance(msg, JSONRPCRequest) and msg.method == "tools/call":
                tg.start_soon(call, item, msg)
                return True
            if isinstance(msg, JSONRPCRequest) and msg.method == "tools/list":
                pending[msg.id] = listed
            return False

        def from_server(item: SessionMessage) -> bool:
            msg = item.message
            if isinstance(msg, JSONRPCResponse | JSONRPCError) and msg.id in pending:
                tg.start_soon(answer, pending.pop(msg.id), item, msg)
                return True
            return False

        async def pump(source: Any, sink: Any, handled: Callable[[SessionMessage], bool], side: str) -> None:
            # Relays every message the handler does not take; the session ends when either side closes.
            async for item in source:
                if isinstance(item, Exception):
                    log.warning("unreadable message from the %s: %s", side, item)
                elif not handled(item):
                    await sink.send(item)
            tg.cancel_scope.cancel()

        tg.start_soon(pump, client_read, server_write, from_client, "client")
        tg.start_soon(pump, server_read, client_write, from_server, "server")


async def _decide(
    gate: Gate, tracer: trace.Tracer, params: Mapping[str, Any], headers: Mapping[str, str], progress: Progress | None
) -> Permit | Refusal:
    """The gate's answer to one ``tools/call`` (its params), in a span under the client's trace context
    (from ``params._meta``, else from the HTTP request's headers)."""
    tool = str(params.get("name", ""))
    arguments = params.get("arguments") or {}
    parent = propagate.extract({**headers, **(params.get("_meta") or {})})
    with tracer.start_as_current_span(f"mcp tools/call {tool}", context=parent) as span:
        span.set_attribute("mcp.tool", tool)
        got = await _authorize(gate, tool, arguments, progress)
        if isinstance(got, Refusal):
            span.set_attribute("pdp.refused", got.code)
        else:
            span.set_attribute("pdp.decision_id", got.decision.decision_id)
        return got


async def _visible(gate: Gate, listing: dict[str, Any]) -> dict[str, Any]:
    """A ``tools/list`` result with only the tools the agent may use (Refusal: no list at all)."""
    return {**listing, "tools": await _in_thread(gate.visible, list(listing.get("tools", [])))}


async def _authorize(gate: Gate, tool: str, arguments: dict[str, Any], progress: Progress | None) -> Permit | Refusal:
    """The gate's answer to a call; while the gate waits for approvers, ``progress`` is told."""

    def decided(waiting: Callable[[str], None] | None) -> Permit | Refusal:
        try:
            return gate.authorize(tool, arguments, waiting=waiting)
        except Refusal as r:
            return r

    if progress is None:
        return await _in_thread(decided, None)
    told = _Told(progress=progress, start=anyio.current_time())
    async with anyio.create_task_group() as ticks:

        def waiting(escalation_id: str) -> None:
            # In the gate's thread: returns once the client's notification is on its way.
            told.escalations.append(escalation_id)
            if anyio.from_thread.run(told.tell) and len(told.escalations) == 1:
                anyio.from_thread.run_sync(ticks.start_soon, told.every)

        got = await _in_thread(decided, waiting)
        ticks.cancel_scope.cancel()
    return got


class _Told:
    """What one held call's client is told: the escalation it waits for now (a call needing several
    approvals waits for each in turn), at once and then every :data:`PROGRESS_EVERY_S` seconds, with
    the seconds waited as its ever-growing ``progress``."""

    def __init__(self, *, progress: Progress, start: float) -> None:
        self.progress = progress
        self.start = start
        self.escalations: list[str] = []
        self.sent = -0.1

    async def tell(self) -> bool:
        """Sends one notification; False when the client can no longer be told."""
        self.sent = max(round(anyio.current_time() - self.start, 1), round(self.sent + 0.1, 1))
        return await self.progress(self.escalations[-1], self.sent)

    async def every(self) -> None:
        """Tells the client every :data:`PROGRESS_EVERY_S` seconds until cancelled (the wait is over)."""
        while True:
            await anyio.sleep(PROGRESS_EVERY_S)
            if not await self.tell():
                return


def _progress_token(params: Mapping[str, Any]) -> ProgressToken | None:
    token = (params.get("_meta") or {}).get("progressToken")
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def _progress_sender(client_write: Any, request_id: RequestId, token: ProgressToken | None) -> Progress | None:
    """What sends ``notifications/progress`` for the request (None: it asked for none)."""
    if token is None:
        return None

    async def send(escalation_id: str, waited_s: float) -> bool:
        note = JSONRPCNotification(
            jsonrpc="2.0",
            method="notifications/progress",
            params={"progressToken": token, "progress": waited_s, "message": _waiting(escalation_id)},
        )
        try:  # over HTTP, on the request's own stream
            await client_write.send(SessionMessage(note, metadata=ServerMessageMetadata(related_request_id=request_id)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False  # the client has gone; the wait itself goes on to its end
        return True

    return send


def _waiting(escalation_id: str) -> str:
    return (
        f"Waiting for approval of escalation {escalation_id} (an approver approves it with "
        f"`pdp approvals approve {escalation_id}` or in the approver console); the call is held, not forwarded."
    )


def _finisher(gate: Gate, permit: Permit) -> Answer:
    async def finish(answer: JSONRPCResponse | JSONRPCError) -> JSONRPCMessage:
        if isinstance(answer, JSONRPCError):
            await _in_thread(gate.finish, permit, None, answer.error.model_dump(exclude_none=True))
            return answer
        result = await _in_thread(gate.finish, permit, answer.result, None)
        return JSONRPCResponse(jsonrpc="2.0", id=answer.id, result=result)

    return finish


def _headers(item: SessionMessage) -> dict[str, str]:
    # Over HTTP the trace context may come in the request's headers rather than in ``_meta``.
    request = getattr(item.metadata, "request_context", None)
    headers = getattr(request, "headers", None)
    return dict(headers) if headers is not None else {}


# ---- the 2026-07-28 requests, one at a time (streamable HTTP) -------------------------------

_Handler = Callable[[ServerRequestContext[Any], Any], Awaitable[dict[str, Any]]]


class _Result(RootModel[dict[str, Any]]):
    """An upstream result as it came (the SDK's client checks it against the method's result type)."""


# The per-request envelope is the client's to the proxy; the proxy's own client stamps its own upstream.
_ENVELOPE = (PROTOCOL_VERSION_META_KEY, CLIENT_INFO_META_KEY, CLIENT_CAPABILITIES_META_KEY, LOG_LEVEL_META_KEY)
# Forwarded unchanged besides tools/list and tools/call (the methods a 2026-07-28 client sends a tool server).
_PASSED: tuple[tuple[str, type[BaseModel]], ...] = (
    ("resources/list", types.PaginatedRequestParams),
    ("resources/templates/list", types.PaginatedRequestParams),
    ("resources/read", types.ReadResourceRequestParams),
    ("prompts/list", types.PaginatedRequestParams),
    ("prompts/get", types.GetPromptRequestParams),
    ("completion/complete", types.CompleteRequestParams),
)


def stateless_server(gate: Gate, connect: Callable[[], Client], tracer: trace.Tracer | None = None) -> Server[Any]:
    """The SDK server (lowlevel) for 2026-07-28 requests: each is forwarded over its own upstream
    connection (``connect()``, in whatever version the upstream server speaks), ``tools/call`` decided
    by ``gate`` first and its answer finished by it (obligations, outcome report), ``tools/list``
    answered with the visible tools only. ``server/discover`` names the upstream server's features.

    Serve it with the SDK's ``StreamableHTTPSessionManager``, which routes the requests that name a
    2026-07-28 version to it one at a time (no session, no handshake).
    """
    tracer = tracer or trace.get_tracer("pdp.pep")

    async def forward(ctx: ServerRequestContext[Any]) -> dict[str, Any]:
        params = dict(ctx.params or {})
        meta = {k: v for k, v in (params.pop("_meta", None) or {}).items() if k not in _ENVELOPE}
        if meta:
            params["_meta"] = meta
        # Upstream progress goes to the client, under the token it gave (the SDK's client stamps its own).
        told = ctx.session.report_progress if _progress_token(ctx.params or {}) is not None else None
        request = types.Request[dict[str, Any], str](method=ctx.method, params=params)
        async with connect() as upstream:
            return (await upstream.session.send_request(request, _Result, progress_callback=told)).root

    async def passed(ctx: ServerRequestContext[Any], _: BaseModel) -> dict[str, Any]:
        return await forward(ctx)

    async def list_tools(ctx: ServerRequestContext[Any], _: BaseModel) -> dict[str, Any]:
        try:
            return await _visible(gate, await forward(ctx))
        except Refusal as r:
            raise MCPError(r.code, r.message, r.data) from None

    async def call_tool(ctx: ServerRequestContext[Any], _: BaseModel) -> dict[str, Any]:
        params = ctx.params or {}
        headers = getattr(ctx.request, "headers", None)
        got = await _decide(gate, tracer, params, dict(headers or {}), _reporter(ctx, _progress_token(params)))
        if isinstance(got, Refusal):
            raise MCPError(got.code, got.message, got.data)
        try:
            result = await forward(ctx)
        except Exception as e:
            error = (
                e.error
                if isinstance(e, MCPError)
                else ErrorData(code=INTERNAL_ERROR, message=f"the upstream server failed ({type(e).__name__})")
            )
            await _in_thread(gate.finish, got, None, error.model_dump(exclude_none=True))
            raise
        return await _in_thread(gate.finish, got, result, None)

    async def discover(ctx: ServerRequestContext[Any], _: BaseModel) -> types.DiscoverResult:
        async with connect() as upstream:
            theirs, instructions, info = upstream.server_capabilities, upstream.instructions, upstream.server_info
        # What a client may ask of the upstream server through the proxy; no change notifications
        # (they come on `subscriptions/listen`, which the proxy does not serve).
        ours = types.ServerCapabilities(
            tools=types.ToolsCapability() if theirs.tools else None,
            resources=types.ResourcesCapability() if theirs.resources else None,
            prompts=types.PromptsCapability() if theirs.prompts else None,
            completions=theirs.completions,
        )
        named = {SERVER_INFO_META_KEY: info.model_dump(by_alias=True, mode="json", exclude_none=True)} if info else None
        return types.DiscoverResult(  # named as the upstream server, as the handshake's answer is
            supported_versions=list(MODERN_PROTOCOL_VERSIONS), capabilities=ours, instructions=instructions, _meta=named
        )

    # The tool's schema is the upstream server's to check: no tools/list before each call.
    server: Server[Any] = Server("pdp-mcp-proxy", get_tool_input_schema=lambda _name: None)
    handlers: list[tuple[str, type[BaseModel], _Handler]] = [
        ("tools/list", types.PaginatedRequestParams, list_tools),
        ("tools/call", types.CallToolRequestParams, call_tool),
        *((method, params_type, passed) for method, params_type in _PASSED),
    ]
    for method, params_type, handler in handlers:
        server.add_request_handler(method, params_type, handler)
    server.add_request_handler("server/discover", types.RequestParams, discover)
    return server


def _reporter(ctx: ServerRequestContext[Any], token: ProgressToken | None) -> Progress | None:
    """What tells a waiting 2026-07-28 request's client (None: it asked for no progress)."""
    if token is None:
        return None

    async def send(escalation_id: str, waited_s: float) -> bool:
        await ctx.session.report_progress(waited_s, None, _waiting(escalation_id))  # dropped once it has gone
        return True

    return send
