"""The proxy's two faces: stdio (it launches the server) and streamable HTTP (it forwards to a URL)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from opentelemetry import trace

from pdp.pep.gate import Gate
from pdp.pep.proxy import relay, stateless_server

log = logging.getLogger("pdp.pep")


async def serve_stdio(gate: Gate, command: list[str], tracer: trace.Tracer) -> None:
    """Speaks MCP on this process's stdin/stdout and relays to the launched server command."""
    server = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_server() as (client_read, client_write), stdio_client(server) as (server_read, server_write):
        await relay(
            gate,
            client_read=client_read,
            client_write=client_write,
            server_read=server_read,
            server_write=server_write,
            tracer=tracer,
        )


class HttpFront:
    """An ASGI app serving MCP over streamable HTTP in both eras the SDK serves.

    The initialize-handshake versions: one MCP session per client, each relayed to its own upstream
    session. A request that names another version (2026-07-28: no handshake, no session, each request
    on its own) goes to the SDK's session manager (``stateless``, which answers a version it does not
    serve itself), serving :func:`~pdp.pep.proxy.stateless_server`: each request forwarded over an
    upstream connection of its own. Run the app inside ``stateless.run()``.
    """

    def __init__(self, gate: Gate, upstream: str, tracer: trace.Tracer, tg: TaskGroup) -> None:
        self._gate = gate
        self._upstream = upstream
        self._tracer = tracer
        self._tg = tg
        self._sessions: dict[str, StreamableHTTPServerTransport] = {}
        self.stateless = StreamableHTTPSessionManager(
            stateless_server(gate, lambda: Client(upstream, cache=None), tracer), stateless=True
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
            await self.stateless.handle_request(scope, receive, send)
            return
        sid = headers.get("mcp-session-id")
        if sid is not None:
            transport = self._sessions.get(sid)
            if transport is None:
                await _json(send, 404, "Session not found")
                return
            await transport.handle_request(scope, receive, send)
            return
        transport = StreamableHTTPServerTransport(mcp_session_id=uuid.uuid4().hex)
        assert transport.mcp_session_id is not None
        self._sessions[transport.mcp_session_id] = transport
        await self._tg.start(self._session, transport)
        await transport.handle_request(scope, receive, send)

    async def _session(
        self, transport: StreamableHTTPServerTransport, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with (
                transport.connect() as (client_read, client_write),
                streamable_http_client(self._upstream) as (server_read, server_write),
            ):
                task_status.started()
                await relay(
                    self._gate,
                    client_read=client_read,
                    client_write=client_write,
                    server_read=server_read,
                    server_write=server_write,
                    tracer=self._tracer,
                )
        except Exception:
            log.exception("session %s ended with an error", transport.mcp_session_id)
        finally:
            self._sessions.pop(transport.mcp_session_id or "", None)


async def _json(send: Any, status: int, message: str) -> None:
    import json

    body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def serve_http(gate: Gate, host: str, port: int, upstream: str, tracer: trace.Tracer) -> None:
    """Listens for streamable HTTP MCP clients at ``http://host:port/`` (any path) until stopped."""
    import uvicorn

    async with anyio.create_task_group() as tg:
        app = HttpFront(gate, upstream, tracer, tg)
        async with app.stateless.run():
            config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
            await uvicorn.Server(config).serve()
        tg.cancel_scope.cancel()
