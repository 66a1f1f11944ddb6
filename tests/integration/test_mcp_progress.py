"""A `tools/call` held for approval (`--approval-wait`) tells the client that it waits: the SDK's client,
asking for progress, gets `notifications/progress` naming the escalation while the call is pending
(over stdio, and over streamable HTTP in the handshake and in the current version), and the call
completes once an approver approves it at the real PDP. The approver acts only after the client has
been told, so the order is the test's, not luck's."""

from __future__ import annotations

import threading

import anyio
import grpc
import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult
from mcp_types.version import LATEST_MODERN_VERSION

from pdp.grpc.approvals import DEV_LOGIN_METADATA
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from tests.integration.test_mcp_approval import FOR, approve, world  # noqa: F401  (world: the fixture)
from tests.integration.test_mcp_proxy import META, STEWARD, World, http_proxy  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

WAITING = (*FOR, "--approval-wait", "120")


def held_write(w: World, target: str, proxy: StdioServerParameters | str, mode: str = "auto") -> None:
    """Writes ``target`` through the proxy with a progress callback (the client in ``mode``); an approver
    approves the call's escalation once the client has been told it waits; checks what the client saw."""
    path = w.allowed / target
    told: list[tuple[float, str | None]] = []
    first_told = threading.Event()
    desk = apb_grpc.ApprovalServiceStub(grpc.insecure_channel(f"127.0.0.1:{w.pdp.port}"))

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        told.append((progress, message))
        first_told.set()

    def approver() -> tuple[str, str]:
        assert first_told.wait(timeout=60), "no progress notification while the call waited"
        assert not path.exists()  # held, not forwarded
        as_steward = ((DEV_LOGIN_METADATA, STEWARD),)
        (e,) = desk.ListEscalations(apb.ListEscalationsRequest(), metadata=as_steward, timeout=5).escalations
        return e.id, approve(w, e.id)

    async def main() -> tuple[CallToolResult, tuple[str, str]]:
        voted: list[tuple[str, str]] = []

        async def vote() -> None:
            voted.append(await anyio.to_thread.run_sync(approver))

        async with Client(proxy, read_timeout_seconds=150, mode=mode) as c, anyio.create_task_group() as tg:
            tg.start_soon(vote)
            args = {"path": str(path), "content": "told while waiting"}
            result = await c.call_tool("write_file", args, progress_callback=on_progress)
        return result, voted[0]

    result, (escalation_id, status) = anyio.run(main)

    assert status == "approved"
    assert (result.meta or {})[META]["outcome"] == "allow"
    assert path.read_text() == "told while waiting"
    assert told, "the client was told nothing"
    for _, message in told:
        assert message is not None and f"Waiting for approval of escalation {escalation_id}" in message
    progress = [p for p, _ in told]
    assert progress == sorted(set(progress))  # it only grows


def test_a_call_held_for_approval_tells_the_client_it_waits_until_approved(world: World) -> None:  # noqa: F811
    held_write(world, "over-stdio.txt", world.files(*WAITING))


@pytest.mark.parametrize("http_proxy", [WAITING], indirect=True)
@pytest.mark.parametrize("mode", ["legacy", LATEST_MODERN_VERSION], ids=["handshake", "current"])
def test_over_streamable_http_too(world: World, http_proxy: str, mode: str) -> None:  # noqa: F811
    held_write(world, "over-http.txt", http_proxy, mode)
