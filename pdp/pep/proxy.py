"""The MCP proxy: relays JSON-RPC messages between a client and a server, gating tool calls.

It works on the wire messages of the official SDK's transports, so whatever protocol version the
two ends negotiate passes through; only ``tools/call`` (decided before it is forwarded) and the
answer to ``tools/list`` (filtered) are touched. Every other message goes through unchanged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCMessage, JSONRPCRequest, JSONRPCResponse, RequestId
from opentelemetry import propagate, trace

from pdp.pep.gate import Gate, Permit, Refusal

log = logging.getLogger("pdp.pep")
T = TypeVar("T")
Answer = Callable[[JSONRPCResponse | JSONRPCError], Awaitable[JSONRPCMessage]]


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
            try:
                permit = await _in_thread(gate.authorize, tool, arguments)
            except Refusal as r:
                span.set_attribute("pdp.refused", r.code)
                await client_write.send(SessionMessage(_error(msg.id, r)))
                return
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
