"""`pdp mcp-proxy` meets the approval flow: a write that needs approval is held, an approver approves
its escalation at the real PDP, and the client's retry of the same call goes through; the approval
does not stretch to another write. The PDP runs the approvals desk in its development login (loopback,
no mTLS), so the approver is named with `pdp approvals --dev-as`, and the proxy (an unauthenticated
loopback caller, like the decision that opened the escalation) may fetch the tokens."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest
from google.protobuf import json_format
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult

from pdp.grpc.approvals import DEV_LOGIN_METADATA
from pdp.sidecar import OpaSidecar
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from tests.helpers import ROOT, Pdp, wait_for
from tests.integration.test_mcp_proxy import (
    META,
    PDP_CMD,
    STEWARD,
    World,
    audit_verify,
    log_claims,
    make_world,
    outcome_reports,
    refused,
    session,
)

pytestmark = pytest.mark.integration

# The proxy acts for a (named) principal: the PDP's approval tokens carry one.
FOR = ("--principal", "ops@corp.example")


@pytest.fixture
def world(tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]) -> World:
    return make_world(tmp_path, start_opa, start_pdp, approvals_dev_login=True)


def approve(w: World, escalation_id: str, vote: str = "approve") -> str:
    """The steward approves (or rejects) with the CLI; returns the escalation's status after the vote."""
    done = subprocess.run(
        [*PDP_CMD, "approvals", vote, escalation_id, "--comment", "checked", "--dev-as", STEWARD,
         "--addr", f"127.0.0.1:{w.pdp.port}"],
        cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    return str(answer.get("escalation", answer)["status"])


def test_an_approved_write_goes_through_on_retry_and_the_approval_does_not_cover_another(world: World) -> None:
    target = world.allowed / "report.txt"
    write = {"path": str(target), "content": "approved text"}

    async def calls(c: Client) -> dict[str, Any]:
        held = await refused(c, "write_file", write)
        eid = held.data["approval"]["escalation_id"]
        assert held.code == -32001 and held.data["outcome"] == "require_approval"
        assert f"Escalation {eid} is open" in held.message and "retry the same call" in held.message
        assert f"`pdp approvals approve {eid}`" in held.message
        assert held.data["approval"]["approve_with"] == f"pdp approvals approve {eid}"
        assert not target.exists()

        still = await refused(c, "write_file", write)  # not approved yet: refused again, same escalation
        assert still.code == -32001 and "Still waiting for approval" in still.message
        assert (still.data["approval"]["escalation_id"], still.data["approval"]["status"]) == (eid, "open")
        assert not target.exists()

        assert await anyio.to_thread.run_sync(approve, world, eid) == "approved"
        done = await c.call_tool("write_file", write)
        assert target.read_text() == "approved text"

        # Another write, or the same one again (single use): a new escalation each, nothing written.
        for args in ({"path": str(target), "content": "something else"}, write):
            again = await refused(c, "write_file", args)
            assert again.code == -32001 and again.data["outcome"] == "require_approval"
            assert again.data["approval"]["escalation_id"] not in ("", None, eid)
        assert target.read_text() == "approved text"
        return dict((done.meta or {})[META])

    decision = session(world.files(*FOR), calls)

    assert decision["outcome"] == "allow"
    record = log_claims(world.log_dir)[decision["log_index"]]
    assert "approval.accepted" in record["pdp"]["reasons"]
    assert record["pdp"]["approvals"]["consumed"] is True
    assert [a["approver_id"] for a in record["input"]["bound"]["approvals"]] == [STEWARD]
    # One report, on the approved ALLOW; none on the REQUIRE_APPROVALs (their records are the trace).
    assert outcome_reports(world.log_dir) == {decision["decision_id"]: "executed"}
    assert "OK:" in audit_verify(world)


def test_with_approval_wait_the_call_stays_pending_until_the_approver_approves(world: World) -> None:
    target = world.allowed / "waited.txt"
    desk = apb_grpc.ApprovalServiceStub(grpc.insecure_channel(f"127.0.0.1:{world.pdp.port}"))
    as_steward = ((DEV_LOGIN_METADATA, STEWARD),)

    def approver() -> str:
        def pending() -> list[apb.Escalation]:
            return list(desk.ListEscalations(apb.ListEscalationsRequest(), metadata=as_steward, timeout=5).escalations)

        wait_for(lambda: bool(pending()), timeout_s=30, what="the proxy's escalation to open")
        (e,) = pending()
        assert not target.exists()  # held while the approver looks at it
        assert json_format.MessageToDict(e.context)["arguments"]["content"] == "waited for"
        return approve(world, e.id)

    async def calls(c: Client) -> tuple[CallToolResult, str]:
        async with anyio.create_task_group() as tg:
            voted: list[str] = []

            async def vote() -> None:
                voted.append(await anyio.to_thread.run_sync(approver))

            tg.start_soon(vote)
            result = await c.call_tool("write_file", {"path": str(target), "content": "waited for"})
        return result, voted[0]

    result, status = session(world.files(*FOR, "--approval-wait", "30"), calls)

    assert status == "approved"
    decision = (result.meta or {})[META]
    assert decision["outcome"] == "allow"
    assert target.read_text() == "waited for"
    # The REQUIRE_APPROVAL that waited gets no report; the fresh ALLOW after the approval does.
    assert outcome_reports(world.log_dir) == {decision["decision_id"]: "executed"}


def test_a_rejected_write_is_refused_on_retry_naming_the_rejection(world: World) -> None:
    target = world.allowed / "rejected.txt"
    write = {"path": str(target), "content": "no"}

    async def calls(c: Client) -> MCPError:
        held = await refused(c, "write_file", write)
        eid = held.data["approval"]["escalation_id"]
        assert await anyio.to_thread.run_sync(approve, world, eid, "reject") == "rejected"
        return await refused(c, "write_file", write)

    err = session(world.files(*FOR), calls)

    assert err.code == -32001 and "An approver rejected this call" in err.message
    assert err.data["approval"]["status"] == "rejected"
    assert not target.exists()
