"""Approvals cannot be forged: the issue's attack and every variant of it never answer ALLOW.

Through a real PDP gRPC server in front of a real OPA with the project's bundle; tokens are either
obtained the real way (an escalation approved on the PDP's desk) or minted with the PDP's own key
(what only a bug or a stolen key could make), so each test isolates one check.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import timestamp_pb2

from pdp import devissuer, keys
from pdp.approvals.desk import ApprovalRefused
from pdp.client import Client, MemoryReplayCache, digest_of, verify
from pdp.errors import VerificationError
from pdp.sidecar import OpaSidecar
from pdp.state import EscalationError
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb
from tests.approving import approved_through_the_desk, mint
from tests.helpers import Pdp, claims_of, dev_issuers, issue_cert, load_request, pem_key, wait_for

pytestmark = pytest.mark.integration

EXAMPLE = "fintech-require-approval-new-beneficiary.json"  # payments_approver x1
APPROVER = "dan.meyer@bank.example"


def rejected(resp: pb.DecideResponse) -> list[dict[str, Any]]:
    """The approval tokens the PDP ignored, as its signed record says."""
    result: list[dict[str, Any]] = claims_of(resp.record)["pdp"].get("approvals", {}).get("rejected", [])
    return result


def test_the_issues_forged_approval_is_not_even_read(pdp: Pdp) -> None:
    # The attack from the issue: context.approvals (field 8) naming a registered approver, the
    # action digest and a future expiry. A client built from the old proto still sends those bytes;
    # the field is reserved now, so the PDP never reads them.
    req = load_request(EXAMPLE)
    expires = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600).SerializeToString()
    approval = (
        _field(2, APPROVER.encode()) + _field(4, digest_of(req.context).encode()) + _field(5, expires)
    )  # Approval{approver_id, action_digest, expires_at}
    context = req.context.SerializeToString() + _field(8, approval)
    raw = _field(1, req.request_id.encode()) + _field(2, context)
    decide = pdp.channel.unary_unary(
        "/pdp.v1.DecisionService/Decide", request_serializer=None, response_deserializer=pb.DecideResponse.FromString
    )
    resp = decide(raw, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert claims_of(resp.record)["input"]["bound"]["approvals"] == []


def test_wrong_action_digest_is_ignored(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    req.approval_tokens.append(mint(pdp.server.recorder.ring, req, APPROVER, digest="sha256:" + "0" * 64))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert [r["check"] for r in rejected(resp)] == ["action_digest"]


def test_arguments_changed_after_approval_is_a_new_action(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    tokens = approved_through_the_desk(pdp, req, [APPROVER])
    req.context.action.arguments["amount"] = 250000  # the approved transfer, ten times bigger
    req.approval_tokens.extend(tokens)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome != pb.OUTCOME_ALLOW
    assert [r["check"] for r in rejected(resp)] == ["action_digest"]


def test_expired_token_is_ignored(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    req.approval_tokens.append(mint(pdp.server.recorder.ring, req, APPROVER, now=int(time.time()) - 600, ttl_s=60))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert [r["check"] for r in rejected(resp)] == ["expired"]


def test_unknown_approver_counts_for_nothing(pdp: Pdp) -> None:
    # Even a token signed with the PDP's own key: the policy's registry check is the second line.
    req = load_request(EXAMPLE)
    mallory = mint(pdp.server.recorder.ring, req, "mallory@bank.example", roles=("payments_approver",))
    req.approval_tokens.append(mallory)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert rejected(resp) == []  # verified as a token, refused by the policy


def test_inactive_approver_is_refused_by_the_desk(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    first = pdp.stub.Decide(req, timeout=5)
    desk = pdp.server.desk
    assert desk is not None
    with pytest.raises(ApprovalRefused) as e:
        desk.approve(first.escalation_id, desk.approver("li.chen@bank.example"), comment="", now=int(time.time()))
    assert e.value.reason == "inactive"


def test_self_approval_is_refused_by_the_desk_and_ignored_by_the_pdp(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    req.context.agent.owner = APPROVER  # the approver owns the agent asking
    first = pdp.stub.Decide(req, timeout=5)
    assert first.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    desk = pdp.server.desk
    assert desk is not None
    with pytest.raises(ApprovalRefused) as e:
        desk.approve(first.escalation_id, desk.approver(APPROVER), comment="", now=int(time.time()))
    assert e.value.reason == "self_approval"
    req.request_id += "-retry"
    ring = pdp.server.recorder.ring
    req.approval_tokens.extend([mint(ring, req, APPROVER), mint(ring, req, req.context.principal.id)])
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert [r["check"] for r in rejected(resp)] == ["self_approval", "self_approval"]


def test_reused_token_is_deny_approval_reused(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    tokens = approved_through_the_desk(pdp, req, [APPROVER])
    req.approval_tokens.extend(tokens)
    assert pdp.stub.Decide(req, timeout=5).outcome == pb.OUTCOME_ALLOW
    req.request_id += "-again"
    again = pdp.stub.Decide(req, timeout=5)
    assert again.outcome == pb.OUTCOME_DENY
    assert [r.code for r in again.reasons] == ["approval.reused"]


def test_token_for_another_agent_is_ignored(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    req.approval_tokens.append(mint(pdp.server.recorder.ring, req, APPROVER, agent="support-bot"))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert [r["check"] for r in rejected(resp)] == ["agent_id"]


def test_token_for_another_principal_is_ignored(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    tokens = approved_through_the_desk(pdp, req, [APPROVER])  # approved for bob
    req.context.principal.id = "carol@bank.example"
    req.context.principal_token = ""
    devissuer.forward_tokens(req, dev_issuers())  # carol's own principal token
    req.approval_tokens.extend(tokens)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome != pb.OUTCOME_ALLOW
    assert [r["check"] for r in rejected(resp)] == ["principal_id"]


def test_token_signed_by_another_key_is_ignored(pdp: Pdp, tmp_path: Path) -> None:
    req = load_request(EXAMPLE)
    req.approval_tokens.append(mint(keys.ensure(tmp_path / "rogue"), req, APPROVER))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert [r["check"] for r in rejected(resp)] == ["jws"]


def test_token_without_an_approved_escalation_does_not_allow(pdp: Pdp) -> None:
    # A valid-looking token minted with the PDP's key but no approved escalation behind it.
    req = load_request(EXAMPLE)
    req.approval_tokens.append(mint(pdp.server.recorder.ring, req, APPROVER, roles=("payments_approver",)))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_DENY
    assert [r.code for r in resp.reasons] == ["approval.incomplete"]


def test_approving_a_decided_or_expired_escalation_says_why(pdp: Pdp) -> None:
    desk = pdp.server.desk
    assert desk is not None
    first = pdp.stub.Decide(load_request(EXAMPLE), timeout=5)
    now = int(time.time())
    desk.approve(first.escalation_id, desk.approver(APPROVER), comment="", now=now)
    with pytest.raises(EscalationError) as decided:
        desk.approve(first.escalation_id, desk.approver("rita.okafor@bank.example"), comment="", now=now)
    assert decided.value.reason == "decided"
    other = pdp.stub.Decide(load_request(EXAMPLE), timeout=5)
    with pytest.raises(EscalationError) as expired:
        desk.approve(other.escalation_id, desk.approver(APPROVER), comment="", now=other.escalation_expires_at + 1)
    assert expired.value.reason == "expired"
    assert desk.escalation(other.escalation_id).status == "expired"


def test_the_approvals_service_refuses_callers_without_a_certificate(pdp: Pdp) -> None:
    first = pdp.stub.Decide(load_request(EXAMPLE), timeout=5)
    stub = apb_grpc.ApprovalServiceStub(pdp.channel)
    for call in (
        lambda: stub.ListEscalations(apb.ListEscalationsRequest(), timeout=5),
        lambda: stub.Approve(apb.ApproveRequest(escalation_id=first.escalation_id), timeout=5),
        lambda: stub.Approve(
            apb.ApproveRequest(escalation_id=first.escalation_id),
            metadata=[("pdp-approver", APPROVER)],  # the dev login is off: metadata names nobody
            timeout=5,
        ),
        lambda: stub.GetApprovalTokens(apb.GetApprovalTokensRequest(escalation_id=first.escalation_id), timeout=5),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def test_a_retried_request_gets_the_escalation_its_first_answer_opened(pdp: Pdp) -> None:
    req = load_request(EXAMPLE)
    first = pdp.stub.Decide(req, timeout=5)
    again = pdp.stub.Decide(req, timeout=5)  # same request id: the same record, and the same escalation
    assert again.record == first.record
    assert (again.escalation_id, again.escalation_expires_at) == (first.escalation_id, first.escalation_expires_at)


def test_waiters_never_take_the_threads_decide_needs(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]
) -> None:
    pdp = start_pdp(start_opa().url, workers=4, approvals_dev_login=True)  # room for one waiter
    first = pdp.stub.Decide(load_request(EXAMPLE), timeout=5)
    stub = apb_grpc.ApprovalServiceStub(pdp.channel)
    wait = apb.WaitEscalationRequest(escalation_id=first.escalation_id, timeout_seconds=30)
    waiting = stub.WaitEscalation(wait, timeout=30)
    assert next(waiting).status == "open"  # the dev login: a loopback caller of a decision made without a cert
    with pytest.raises(grpc.RpcError) as e:
        next(stub.WaitEscalation(wait, timeout=30))
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert pdp.stub.Decide(load_request(EXAMPLE), timeout=5).outcome == pb.OUTCOME_REQUIRE_APPROVAL
    waiting.cancel()


def test_an_escalation_expires_on_time_with_no_desk_call(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> None:
    pdp = start_pdp(opa.url, escalation_ttl_s=1, escalation_sweep_s=0.1)
    held = pdp.stub.Decide(load_request(EXAMPLE), timeout=5)
    assert held.outcome == pb.OUTCOME_REQUIRE_APPROVAL

    def steps() -> list[tuple[str, str]]:
        return [
            (claims["pdp"]["step"], claims["decision_id"])
            for _, entry in pdp.server.recorder.log.entries()
            if (claims := claims_of(entry.decode()))["pdp"]["type"] == "escalation"
        ]

    wait_for(lambda: len(steps()) == 2, what="the sweep to log the expiry")
    assert steps() == [("opened", held.decision_id), ("expired", held.decision_id)]
    # Read from the store: a desk call would expire it by itself.
    assert pdp.server.store.get_escalation(held.escalation_id).status == "expired"


# ---- who the requester is: the caller's identity_of (SPIFFE ID first), opened and fetched alike ----

SPIFFE_ONLY = "spiffe://bank.example/pep-spiffe-only"
SHARED_CN = "pep-gateway"  # two PEPs whose certificates share a CN, told apart by their SPIFFE ids
PEP_A, PEP_B = "spiffe://bank.example/pep-a", "spiffe://bank.example/pep-b"


def _spiffe_only_cert(
    uri: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A workload certificate as SPIFFE issues it: an empty subject (no CN), the SPIFFE id as its
    only name, a URI SAN (critical, as RFC 5280 wants with an empty subject)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca[0].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
        .sign(ca[1], hashes.SHA256())
    )
    return cert, key


class Peps:
    """A PDP under mTLS (no roles file: every certificate holder is a PEP), and a channel per PEP."""

    def __init__(self, pdp: Pdp, credentials: dict[str, grpc.ChannelCredentials]) -> None:
        self.pdp, self._credentials = pdp, credentials
        self._channels: list[grpc.Channel] = []

    def channel(self, who: str) -> grpc.Channel:
        channel = grpc.secure_channel(f"localhost:{self.pdp.port}", self._credentials[who])
        self._channels.append(channel)
        return channel

    def close(self) -> None:
        for c in self._channels:
            c.close()


@pytest.fixture
def peps(opa: OpaSidecar, start_pdp: Callable[..., Pdp], tmp_path: Path) -> Iterator[Peps]:
    ca = issue_cert("test-ca", [], None)
    server = issue_cert("pdp", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ca)
    certs = {
        "spiffe-only": _spiffe_only_cert(SPIFFE_ONLY, ca),
        "a": issue_cert(SHARED_CN, [x509.UniformResourceIdentifier(PEP_A)], ca),
        "b": issue_cert(SHARED_CN, [x509.UniformResourceIdentifier(PEP_B)], ca),
    }
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "server.pem").write_bytes(server[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(pem_key(server[1]))
    pdp = start_pdp(
        opa.url,
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
    )
    credentials = {
        who: grpc.ssl_channel_credentials(ca_pem, pem_key(key), cert.public_bytes(serialization.Encoding.PEM))
        for who, (cert, key) in certs.items()
    }
    p = Peps(pdp, credentials)
    yield p
    p.close()


def _approve_when_opened(pdp: Pdp) -> threading.Thread:
    """Approves, on the PDP's desk, the first escalation that opens (in the background)."""
    desk = pdp.server.desk
    assert desk is not None

    def approve() -> None:
        opened: list[str] = []

        def found() -> bool:
            opened.extend(e.id for e in pdp.server.store.list_escalations(status="open", now=int(time.time())))
            return bool(opened)

        wait_for(found, what="the PEP's decision to open an escalation")
        desk.approve(opened[0], desk.approver(APPROVER), comment="ok", now=int(time.time()))

    approver = threading.Thread(target=approve, daemon=True)
    approver.start()
    return approver


def test_a_pep_with_only_a_spiffe_id_waits_for_and_gets_its_tokens(peps: Peps) -> None:
    # The certificate has no CN: the PEP is its SPIFFE id, for its decision and for its escalation.
    approver = _approve_when_opened(peps.pdp)
    pep = Client(peps.channel("spiffe-only"))
    resp, decision = pep.decide_with_approval(load_request(EXAMPLE), wait=20, audience=SPIFFE_ONLY)
    approver.join(timeout=20)
    assert resp.outcome == pb.OUTCOME_ALLOW and decision.outcome == "allow", resp.reasons
    # The record was verified for the whole retried request, and for this PEP: it is not another's.
    with pytest.raises(VerificationError, match="made for"):
        verify(
            resp.record,
            pep.jwks(),
            action=load_request(EXAMPLE).context,
            audience="spiffe://x/other",
            replay=MemoryReplayCache(),
        )
    # The requester the desk recorded when the decision opened the escalation is that identity.
    desk = peps.pdp.server.desk
    assert desk is not None
    (escalation,) = peps.pdp.server.store.list_escalations(status="consumed", now=int(time.time()))
    assert escalation.context["caller"] == SPIFFE_ONLY
    opened = [
        c["pdp"]["actor"]
        for _, entry in peps.pdp.server.recorder.log.entries()
        if (c := claims_of(entry.decode()))["pdp"]["type"] == "escalation" and c["pdp"]["step"] == "opened"
    ]
    assert opened == [SPIFFE_ONLY]
    stub = apb_grpc.ApprovalServiceStub(peps.channel("spiffe-only"))
    got = stub.GetApprovalTokens(apb.GetApprovalTokensRequest(escalation_id=escalation.id), timeout=5)
    assert got.status == "consumed" and len(got.approval_tokens) == 1


def test_a_pep_sharing_the_cn_but_not_the_spiffe_id_cannot_fetch_the_tokens(peps: Peps) -> None:
    a = peps.channel("a")
    first = Client(a).decide(load_request(EXAMPLE), timeout_s=5)
    assert first.outcome == pb.OUTCOME_REQUIRE_APPROVAL and first.escalation_id
    desk = peps.pdp.server.desk
    assert desk is not None
    assert desk.escalation(first.escalation_id).context["caller"] == PEP_A  # not the shared CN
    desk.approve(first.escalation_id, desk.approver(APPROVER), comment="ok", now=int(time.time()))
    wanted = apb.GetApprovalTokensRequest(escalation_id=first.escalation_id)
    b = apb_grpc.ApprovalServiceStub(peps.channel("b"))
    with pytest.raises(grpc.RpcError) as fetched:
        b.GetApprovalTokens(wanted, timeout=5)
    assert fetched.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as waited:
        next(b.WaitEscalation(apb.WaitEscalationRequest(escalation_id=first.escalation_id, timeout_seconds=1)))
    assert waited.value.code() == grpc.StatusCode.NOT_FOUND
    # The PEP whose decision opened it gets them.
    mine = apb_grpc.ApprovalServiceStub(a).GetApprovalTokens(wanted, timeout=5)
    assert mine.status == "approved" and len(mine.approval_tokens) == 1
