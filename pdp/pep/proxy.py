"""The MCP proxy: relays JSON-RPC messages between a client and a server, gating tool calls.

It works on the wire messages of the official SDK's transports, so whatever protocol version the
two ends negotiate passes through; only ``tools/call`` (decided before it is forwarded) and the
answer to ``tools/list`` (filtered) are touched. Every other message goes through unchanged.

While a ``tools/call`` is held for approval (``approval_wait_s``) and its request carried a
``params._meta.progressToken``, the client gets ``notifications/progress`` for it: one when the wait
starts, then one every :data:`PROGRESS_EVERY_S` seconds until the approvers decide or the wait ends.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import (
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    ProgressToken,
    RequestId,
)
from opentelemetry import propagate, trace

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
        tool = str(params.get("name", ""))
        arguments = params.get("arguments") or {}
        parent = propagate.extract(params.get("_meta") or _headers(item))
        with tracer.start_as_current_span(f"mcp tools/call {tool}", context=parent) as span:
            span.set_attribute("mcp.tool", tool)
            progress = _progress_sender(client_write, msg.id, _progress_token(params))
            got = await _authorize(gate, tool, arguments, progress)
            if isinstance(got, Refusal):
                span.set_attribute("pdp.refused", got.code)
                await client_write.send(SessionMessage(_error(msg.id, got)))
                return
            permit = got
            span.set_attribute("pdp.decision_id", permit.decision.decision_id)
        pending[msg.id] = _finisher(gate, permit)
        await server_write.send(item)

    async def listed(answer: JSONRPCResponse | JSONRPCError) -> JSONRPCMessage:
        if isinstance(answer, JSONRPCError):
            return answer
        try:
            tools = await _in_thread(gate.visible, list(answer.result.get("tools", [])))
        except Refusal as r:
            return _error(answer.id, r)
        return JSONRPCResponse(jsonrpc="2.0", id=answer.id, result={**answer.result, "tools": tools})

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


def _progress_token(params: dict[str, Any]) -> ProgressToken | None:
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
            params={
                "progressToken": token,
                "progress": waited_s,
                "message": f"Waiting for approval of escalation {escalation_id} (an approver approves it with "
                f"`pdp approvals approve {escalation_id}` or in the approver console); the call is held, "
                "not forwarded.",
            },
        )
        try:  # over HTTP, on the request's own stream
            await client_write.send(SessionMessage(note, metadata=ServerMessageMetadata(related_request_id=request_id)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False  # the client has gone; the wait itself goes on to its end
        return True

    return send


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
