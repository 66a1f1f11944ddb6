"""Issue 15's findings, each against a real PDP and OPA: who may read and report on a decision,
ids nobody can precompute or squat, limits inside arguments, full explanations for auditors only,
the rate limit, a tampered OPA, and OPA's socket private to ``pdp dev``."""

from __future__ import annotations

import functools
import http.client
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2

from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import Pdp, dev_env, issue_cert, load_request, pem_key, start_child, wait_for

pytestmark = pytest.mark.integration

PEP_A, PEP_B = "spiffe://bank.example/pep-a", "spiffe://bank.example/pep-b"


class Mtls:
    """A PDP under mTLS with a roles file, and a channel per identity."""

    def __init__(self, pdp: Pdp, home: Path, credentials: dict[str, grpc.ChannelCredentials]) -> None:
        self.pdp, self.home, self._credentials = pdp, home, credentials
        self._channels: list[grpc.Channel] = []

    def stub(self, who: str) -> pb_grpc.DecisionServiceStub:
        channel = grpc.secure_channel(f"localhost:{self.pdp.port}", self._credentials[who])
        self._channels.append(channel)
        return pb_grpc.DecisionServiceStub(channel)

    def close(self) -> None:
        for c in self._channels:
            c.close()


@pytest.fixture
def mtls(opa: OpaSidecar, start_pdp: Callable[..., Pdp], tmp_path: Path) -> Iterator[Mtls]:
    ca = issue_cert("test-ca", [], None)
    server = issue_cert("pdp", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ca)
    people = {
        "a": issue_cert("pep-a", [x509.UniformResourceIdentifier(PEP_A)], ca),
        "b": issue_cert("pep-b", [x509.UniformResourceIdentifier(PEP_B)], ca),
        "auditor": issue_cert("audit-desk", [], ca),
        # Claims pep-a's SPIFFE id as its CN and a DNS SAN: not a URI SAN, so not pep-a.
        "impostor": issue_cert(PEP_A, [x509.DNSName("pep-a.bank.example")], ca),
    }
    ca_pem = ca[0].public_bytes(serialization.Encoding.PEM)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    (tmp_path / "server.pem").write_bytes(server[0].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(pem_key(server[1]))
    roles = {PEP_A: ["pep"], PEP_B: ["pep"], "audit-desk": ["auditor", "pep"]}
    (tmp_path / "roles.json").write_text(json.dumps({"roles": roles}))
    pdp = start_pdp(
        opa.url,
        tls_cert_file=tmp_path / "server.pem",
        tls_key_file=tmp_path / "server.key",
        tls_client_ca_file=tmp_path / "ca.pem",
        roles_file=tmp_path / "roles.json",
    )
    credentials = {
        who: grpc.ssl_channel_credentials(ca_pem, pem_key(key), cert.public_bytes(serialization.Encoding.PEM))
        for who, (cert, key) in people.items()
    }
    m = Mtls(pdp, tmp_path, credentials)
    yield m
    m.close()


def code_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), e.value.details() or ""


def test_another_caller_cannot_read_or_report(mtls: Mtls) -> None:
    a, b, auditor = mtls.stub("a"), mtls.stub("b"), mtls.stub("auditor")
    decided = a.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert decided.outcome == pb.OUTCOME_ALLOW
    mine = pb.GetDecisionRequest(decision_id=decided.decision_id)
    assert a.GetDecision(mine, timeout=5).record == decided.record
    assert auditor.GetDecision(mine, timeout=5).record == decided.record  # auditors read every decision
    assert code_of(lambda: b.GetDecision(mine, timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    report = pb.ReportOutcomeRequest(decision_id=decided.decision_id, status=pb.ACTION_STATUS_EXECUTED)
    assert code_of(lambda: b.ReportOutcome(report, timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: auditor.ReportOutcome(report, timeout=5))[0] == grpc.StatusCode.NOT_FOUND
    assert a.ReportOutcome(report, timeout=5).record


def test_one_report_per_allow(mtls: Mtls) -> None:
    a = mtls.stub("a")
    allowed = a.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    report = pb.ReportOutcomeRequest(decision_id=allowed.decision_id, status=pb.ACTION_STATUS_EXECUTED)
    a.ReportOutcome(report, timeout=5)
    report.status = pb.ACTION_STATUS_FAILED  # a contradicting second report
    assert code_of(lambda: a.ReportOutcome(report, timeout=5))[0] == grpc.StatusCode.ALREADY_EXISTS
    blocked = a.Decide(load_request("allow-crm-lookup.json"), timeout=5)  # an ALLOW the PEP did not act on
    on_blocked = pb.ReportOutcomeRequest(decision_id=blocked.decision_id, status=pb.ACTION_STATUS_BLOCKED)
    assert a.ReportOutcome(on_blocked, timeout=5).record
    assert code_of(lambda: a.ReportOutcome(on_blocked, timeout=5))[0] == grpc.StatusCode.ALREADY_EXISTS
    fresh = a.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    big = pb.ReportOutcomeRequest(decision_id=fresh.decision_id, status=pb.ACTION_STATUS_EXECUTED)
    big.result.update({"rows": ["x" * 10_000] * 10})  # 100 kB: over PDP_MAX_OUTCOME_BYTES
    code, details = code_of(lambda: a.ReportOutcome(big, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "PDP_MAX_OUTCOME_BYTES" in details


@pytest.mark.parametrize(
    ("example", "outcome", "verdict"),
    [
        ("deny-tool-not-granted.json", pb.OUTCOME_DENY, "was DENY, not ALLOW"),
        ("require-approval-high-risk.json", pb.OUTCOME_REQUIRE_APPROVAL, "was REQUIRE_APPROVAL, not ALLOW"),
    ],
)
def test_a_pep_reports_only_on_its_own_allows(mtls: Mtls, example: str, outcome: int, verdict: str) -> None:
    a, b, auditor = mtls.stub("a"), mtls.stub("b"), mtls.stub("auditor")
    decided = a.Decide(load_request(example), timeout=5)
    assert decided.outcome == outcome
    log = mtls.pdp.server.recorder.log
    size = log.size()
    for status in (pb.ACTION_STATUS_BLOCKED, pb.ACTION_STATUS_EXECUTED, pb.ACTION_STATUS_FAILED):
        report = pb.ReportOutcomeRequest(decision_id=decided.decision_id, status=status)
        report.result.update({"blocked": "the PEP obeyed"})
        code, details = code_of(functools.partial(a.ReportOutcome, report, timeout=5))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert verdict in details and decided.decision_id in details and "nothing was logged" in details
        # Someone else's non-ALLOW stays NOT_FOUND, its verdict unsaid; auditors report on nothing of others.
        for other in (b, auditor):
            code, details = code_of(functools.partial(other.ReportOutcome, report, timeout=5))
            assert code == grpc.StatusCode.NOT_FOUND and verdict not in details
    assert log.size() == size  # nothing appended for any of them


def test_ids_cannot_be_precomputed(mtls: Mtls, opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> None:
    req = load_request("allow-crm-lookup.json")
    decided = mtls.stub("a").Decide(req, timeout=5)
    assert mtls.stub("a").Decide(req, timeout=5).decision_id == decided.decision_id  # a retry: the same
    # What anyone could compute before: uuid5 of a constant, the subject and the request id.
    space = uuid.UUID("6f1d2a52-4d0b-4e8e-9a43-3c1bd6c1a7e2")
    assert decided.decision_id not in {str(uuid.uuid5(space, f"{s}\n{req.request_id}")) for s in ("pep-a", PEP_A)}
    # The same caller and request id on another PDP (another secret): another id.
    other = start_pdp(opa.url)
    assert other.stub.Decide(req, timeout=5).decision_id != decided.decision_id
    assert len((mtls.pdp.server.recorder.log.directory.parent / "keys" / "id-secret").read_bytes()) == 32


def test_squatting_does_not_block_the_victim(mtls: Mtls) -> None:
    victim = load_request("allow-crm-lookup.json")
    squat = load_request("deny-tool-not-granted.json")
    squat.request_id = victim.request_id  # pep-b sends pep-a's next request id first
    squatted = mtls.stub("b").Decide(squat, timeout=5)
    real = mtls.stub("a").Decide(victim, timeout=5)
    assert real.outcome == pb.OUTCOME_ALLOW and real.decision_id != squatted.decision_id
    # A caller reusing its own request id for another request is still told so.
    mine = load_request("deny-tool-not-granted.json")
    mine.request_id = victim.request_id
    code, details = code_of(lambda: mtls.stub("a").Decide(mine, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("request_id:")


def test_full_explanations_are_for_auditors(mtls: Mtls) -> None:
    req = load_request("allow-crm-lookup.json")
    req.explain = pb.EXPLAIN_LEVEL_FULL
    code, details = code_of(lambda: mtls.stub("a").Decide(req, timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "auditors" in details
    assert mtls.stub("auditor").Decide(req, timeout=5).explanation.events
    req.explain = pb.EXPLAIN_LEVEL_NOTES
    req.request_id += "-notes"
    assert mtls.stub("a").Decide(req, timeout=5).outcome == pb.OUTCOME_ALLOW


def test_a_spiffe_id_in_the_cn_or_a_dns_san_is_not_the_spiffe_id(mtls: Mtls) -> None:
    code, details = code_of(lambda: mtls.stub("impostor").Decide(load_request("allow-crm-lookup.json"), timeout=5))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs the role pep" in details


def test_nested_limits_hold(pdp: Pdp) -> None:
    before = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5).log_index
    cases = {
        "context.action.arguments.payees[0].names": {"payees": [{"names": ["n"] * 60_000}]},
        "context.action.arguments.memo.text": {"memo": {"text": "m" * 1_000_000}},
    }
    for path, arguments in cases.items():
        req = load_request("allow-crm-lookup.json")
        req.context.action.arguments.update(arguments)
        code, details = code_of(lambda req=req: pdp.stub.Decide(req, timeout=10))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(f"{path}:"), details
    req = load_request("allow-crm-lookup.json")
    req.context.attributes.update({"blob": [f"{i:08d}" * 1000 for i in range(40)]})  # 320 kB in all
    code, details = code_of(lambda: pdp.stub.Decide(req, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("context.attributes: is larger than")
    after = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5).log_index
    assert after == before + 1  # nothing of the refused requests was signed into the log


def test_nan_is_invalid_argument(pdp: Pdp) -> None:
    for where, value in (("amount", float("nan")), ("limits", [1, float("inf")])):
        req = load_request("allow-crm-lookup.json")
        req.context.action.arguments.update({"nested": {where: value}})
        code, details = code_of(lambda req=req: pdp.stub.Decide(req, timeout=5))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details  # was INTERNAL with a traceback
        assert details.startswith(f"context.action.arguments.nested.{where}") and "finite" in details


def test_rate_limit(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> None:
    pdp = start_pdp(opa.url, decide_rate=1, decide_burst=3)
    for _ in range(3):
        pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    code, details = code_of(lambda: pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "PDP_DECIDE_RATE" in details


def _opa_call(opa: OpaSidecar, method: str, path: str, body: str = "") -> int:
    conn = http.client.HTTPConnection(opa.addr, timeout=5)
    try:
        conn.request(method, path, body=body.encode() if body else None)
        return conn.getresponse().status
    finally:
        conn.close()


def test_planted_module_turns_health_not_serving(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pdp.grpc.health")
    pdp = start_pdp(opa.url)
    lenient = start_pdp(opa.url, allow_opa_api_data=True)
    serving = health_pb2.HealthCheckResponse.SERVING
    assert pdp.health_status() == serving
    assert _opa_call(opa, "PUT", "/v1/policies/planted", "package planted\n\nallow := true\n") == 200
    wait_for(lambda: pdp.health_status() != serving, timeout_s=5, what="NOT_SERVING after a planted module")
    assert "pdp.opa_tampered" in caplog.text and "planted" in caplog.text
    assert lenient.health_status() == serving  # PDP_ALLOW_OPA_API_DATA=1: loaded through the API on purpose
    assert _opa_call(opa, "DELETE", "/v1/policies/planted") == 200
    wait_for(lambda: pdp.health_status() == serving, timeout_s=5, what="SERVING once the module is gone")
    assert _opa_call(opa, "PUT", "/v1/data/stash", json.dumps({"blob": "x" * 1000})) == 204
    wait_for(lambda: pdp.health_status() != serving, timeout_s=5, what="NOT_SERVING after data outside the bundle")
    assert "data at /stash" in caplog.text


def test_dev_opa_socket_is_private(opa_bin: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    process = start_child("dev", "--bundle", "rego", env=dev_env(tmp_path, port=port, opa_bin=opa_bin), log=log)
    try:
        found = re.search(r"OPA sidecar on unix://(\S+)", log.read_text())
        assert found, log.read_text()
        sock = Path(found[1])
        assert sock.is_socket() and sock.parent.stat().st_mode & 0o777 == 0o700
        assert sock.parent.stat().st_uid == os.geteuid()
        assert "NO AUTHORISATION" in log.read_text()  # without mTLS the log says everything is open
        python = shutil.which("python3", path="/usr/bin:/bin")  # one that another user may run
        if os.geteuid() == 0 and python:  # another user on the host cannot even reach the socket
            probe = "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])"
            done = subprocess.run([python, "-c", probe, str(sock)], user=65534, capture_output=True, text=True)
            assert done.returncode != 0 and "PermissionError" in done.stderr
        with socket.socket(socket.AF_UNIX) as s:  # this user can: it is the PDP's
            s.connect(str(sock))
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert not sock.parent.exists()  # removed on the way out
