"""The whole approval loop through the real gRPC server under real mTLS: REQUIRE_APPROVAL opens an
escalation, two distinct authenticated approvers approve it (two-person rule), the agent's retry with
the PDP-signed tokens is ALLOW, the same tokens again are not, and `pdp audit verify` shows each step;
`pdp approvals list|show` show an approver what waits, and every refusal is one line."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pdp.client import Client
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb
from tests.helpers import PDP_COMMAND, ROOT, Pdp, claims_of, load_request, wait_for
from tests.integration.test_mtls import _issue, _pem_key

pytestmark = pytest.mark.integration

PEOPLE = ("pep-gateway", "sgt.ray@army.example", "capt.ng@army.example", "col.diaz@army.example")
"""The agent's PEP, the two security officers, and the principal the agent acts for."""


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """A CA, the PDP's server certificate, and a client certificate (CN = identity) for each of PEOPLE."""
    ca = _issue("test-ca", [], None)
    (tmp_path / "ca.pem").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    made: dict[str, tuple[Path, Path]] = {}
    for name in ("localhost", *PEOPLE):
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")] if name == "localhost" else []
        cert, key = _issue(name, sans, ca)
        made[name] = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        made[name][0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made[name][1].write_bytes(_pem_key(key))
    return made


@dataclasses.dataclass
class MtlsPdp:
    """A PDP requiring client certificates from the test CA; ``channel(who)`` speaks as ``who``."""

    pdp: Pdp
    certs: dict[str, tuple[Path, Path]]
    ca: Path

    def channel(self, who: str) -> grpc.Channel:
        cert, key = self.certs[who]
        creds = grpc.ssl_channel_credentials(self.ca.read_bytes(), key.read_bytes(), cert.read_bytes())
        return grpc.secure_channel(f"localhost:{self.pdp.port}", creds)


@pytest.fixture
def mtls(
    start_opa: Callable[..., OpaSidecar],
    start_pdp: Callable[..., Pdp],
    certs: dict[str, tuple[Path, Path]],
    tmp_path: Path,
) -> MtlsPdp:
    ca = tmp_path / "ca.pem"
    pdp = start_pdp(
        start_opa().url,
        tls_cert_file=certs["localhost"][0],
        tls_key_file=certs["localhost"][1],
        tls_client_ca_file=ca,
    )
    return MtlsPdp(pdp, certs, ca)


def test_two_person_rule_through_mtls_end_to_end(
    mtls: MtlsPdp, certs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    pdp, channel = mtls.pdp, mtls.channel

    desks = {who: apb_grpc.ApprovalServiceStub(channel(who)) for who in PEOPLE}
    agent = Client(channel("pep-gateway"))
    req = load_request("defense-require-approval-two-person.json")  # 2 x security_officer

    # The agent asks and waits (the SDK opens/awaits the escalation and retries with the tokens).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(agent.decide_with_approval, req, wait=60)

        def pending(who: str) -> list[apb.Escalation]:
            return list(desks[who].ListEscalations(apb.ListEscalationsRequest(), timeout=5).escalations)

        wait_for(lambda: bool(pending("sgt.ray@army.example")), what="the escalation to open")
        (e,) = pending("sgt.ray@army.example")
        assert (e.role, e.count, e.status) == ("security_officer", 2, "open")
        assert e.context["tool"] == "intel.purge" and e.context["arguments"]["report"] == "RPT-2026-0419"
        assert pending("col.diaz@army.example") == []  # the principal is no approver of their own action

        first = desks["sgt.ray@army.example"].Approve(apb.ApproveRequest(escalation_id=e.id, comment="ok"), timeout=5)
        assert first.escalation.status == "open" and first.approval_token
        for who, code, why in (
            ("sgt.ray@army.example", grpc.StatusCode.FAILED_PRECONDITION, "already"),  # distinct approvers
            ("col.diaz@army.example", grpc.StatusCode.PERMISSION_DENIED, "self_approval"),
            ("pep-gateway", grpc.StatusCode.PERMISSION_DENIED, "unknown_approver"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                desks[who].Approve(apb.ApproveRequest(escalation_id=e.id), timeout=5)
            assert (refused.value.code(), why in refused.value.details()) == (code, True), refused.value.details()
        with pytest.raises(grpc.RpcError) as not_theirs:  # only the agent's PEP fetches the tokens
            desks["sgt.ray@army.example"].GetApprovalTokens(apb.GetApprovalTokensRequest(escalation_id=e.id), timeout=5)
        assert not_theirs.value.code() == grpc.StatusCode.NOT_FOUND

        # The second officer approves with the CLI, authenticated by the certificate alone.
        cert, key = certs["capt.ng@army.example"]
        approve = [
            *PDP_COMMAND, "approvals", "approve", e.id, "--comment", "second person",
            "--addr", f"localhost:{pdp.port}", "--cert", str(cert), "--key", str(key), "--ca", str(tmp_path / "ca.pem"),
        ]  # fmt: skip
        done = subprocess.run(approve, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["escalation"]["status"] == "approved"

        response, decision = waiting.result(timeout=60)
    assert decision.outcome == "allow"
    assert "approval.accepted" in decision.reasons
    assert claims_of(response.record)["pdp"]["approvals"]["consumed"] is True
    approvers = {a["approver_id"] for a in claims_of(response.record)["input"]["bound"]["approvals"]}
    assert approvers == {"sgt.ray@army.example", "capt.ng@army.example"}

    # The same tokens again (a new request) are not an ALLOW.
    tokens = desks["pep-gateway"].GetApprovalTokens(apb.GetApprovalTokensRequest(escalation_id=e.id), timeout=5)
    assert tokens.status == "consumed" and len(tokens.approval_tokens) == 2
    again = load_request("defense-require-approval-two-person.json")
    again.approval_tokens.extend(tokens.approval_tokens)
    replayed = agent.decide(again, timeout_s=5)
    assert replayed.outcome == pb.OUTCOME_DENY
    assert [r.code for r in replayed.reasons] == ["approval.reused"]

    # The log shows every step, signed, linked to the decision.
    pdp.server.stop(1)
    log_dir = Path(pdp.server.recorder.log.directory)
    key_dir = log_dir.parent / "keys"  # start_pdp puts both under one home
    audit = [*PDP_COMMAND, "audit", "verify", str(log_dir), "--jwks", str(key_dir / "jwks.json"), "--steps"]
    out = subprocess.run(audit, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK: ") and "4 escalation steps" in out.stdout.splitlines()[0]
    lines = [line for line in out.stdout.splitlines()[1:] if e.id in line]
    assert [line.split()[4] for line in lines] == ["opened", "approved", "approved", "consumed"]
    assert "by pep-gateway" in lines[0]
    assert "by sgt.ray@army.example" in lines[1] and "by capt.ng@army.example" in lines[2]
    assert f"consumed by decision {decision.decision_id}" in lines[3]


def test_approvals_cli_lists_and_shows_and_refuses_in_one_line(
    mtls: MtlsPdp, certs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    pdp = mtls.pdp
    held = Client(mtls.channel("pep-gateway")).decide(
        load_request("defense-require-approval-two-person.json"), timeout_s=5
    )
    assert held.outcome == pb.OUTCOME_REQUIRE_APPROVAL and held.escalation_id

    def cli(
        action: str, *args: str, who: str = "sgt.ray@army.example", addr: str = ""
    ) -> subprocess.CompletedProcess[str]:
        cert, key = certs[who]
        command = [
            *PDP_COMMAND, "approvals", action, *args, "--addr", addr or f"localhost:{pdp.port}",
            "--cert", str(cert), "--key", str(key), "--ca", str(tmp_path / "ca.pem"), "--timeout", "5",
        ]  # fmt: skip
        return subprocess.run(command, cwd=ROOT, env=os.environ, capture_output=True, text=True, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    (e,) = json.loads(listed.stdout)["escalations"]
    assert (e["id"], e["role"], e["count"], e["agentId"], e["principalId"], e["status"]) == (
        held.escalation_id,
        "security_officer",
        2,
        "intel-analyst",
        "col.diaz@army.example",
        "open",
    )
    mine = cli("list", who="col.diaz@army.example")  # the principal: nothing waits for them
    assert mine.returncode == 0, mine.stderr
    assert json.loads(mine.stdout).get("escalations", []) == []

    shown = cli("show", held.escalation_id)
    assert shown.returncode == 0, shown.stderr
    e = json.loads(shown.stdout)
    assert (e["id"], e["decisionId"], e["status"]) == (held.escalation_id, held.decision_id, "open")
    assert e["context"]["tool"] == "intel.purge"
    assert e["context"]["arguments"] == {"report": "RPT-2026-0419"}
    assert e["context"]["agent"]["id"] == "intel-analyst"

    unknown = str(uuid.uuid4())
    for done, begins in (
        (cli("show", unknown), f"pdp approvals show: NOT_FOUND: no escalation {unknown} "),
        (cli("approve", unknown), f"pdp approvals approve: FAILED_PRECONDITION: escalation {unknown}: "),
        (cli("list", addr=f"localhost:{free_port()}"), "pdp approvals list: UNAVAILABLE: "),  # no PDP there
    ):
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(begins), done.stderr
