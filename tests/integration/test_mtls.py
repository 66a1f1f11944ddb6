"""Under mTLS the caller's identity comes from its certificate, and only from there."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pdp.records import unverified_claims as claims_of
from pdp.sidecar import OpaSidecar
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import ROOT, Pdp, request
from tests.helpers import issue_cert as _issue
from tests.helpers import pem_key as _pem_key

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, bytes]:
    ca = _issue("test-ca", [], None)
    server = _issue("pdp", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ca)
    client = _issue("pep-gateway", [x509.UniformResourceIdentifier("spiffe://bank.example/pep-gateway")], ca)
    deployer = _issue("deploy-gateway", [x509.UniformResourceIdentifier("spiffe://bank.example/deploy-gateway")], ca)
    files = {
        "ca": ca[0].public_bytes(serialization.Encoding.PEM),
        "server_cert": server[0].public_bytes(serialization.Encoding.PEM),
        "server_key": _pem_key(server[1]),
        "client_cert": client[0].public_bytes(serialization.Encoding.PEM),
        "client_key": _pem_key(client[1]),
        "deployer_cert": deployer[0].public_bytes(serialization.Encoding.PEM),
        "deployer_key": _pem_key(deployer[1]),
    }
    for name, data in files.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    return files


def test_caller_identity_comes_from_the_client_certificate(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], pki: dict[str, bytes], tmp_path: Path
) -> None:
    opa = start_opa(bundle=ROOT / "tests/data/bundles/echo")
    pdp = start_pdp(
        opa.url,
        tls_cert_file=tmp_path / "server_cert.pem",
        tls_key_file=tmp_path / "server_key.pem",
        tls_client_ca_file=tmp_path / "ca.pem",
    )
    creds = grpc.ssl_channel_credentials(pki["ca"], pki["client_key"], pki["client_cert"])
    req = request(
        agent={"id": "support-bot"},
        action={"tool": "crm.lookup"},
        attributes={"caller": {"subject": "someone-else"}},
    )
    with grpc.secure_channel(f"localhost:{pdp.port}", creds) as channel:
        resp = pb_grpc.DecisionServiceStub(channel).Decide(req, timeout=5)
    caller = json.loads(resp.reasons[0].message)["caller"]
    assert caller["authenticated"] is True
    assert caller["subject"] == "pep-gateway"
    assert "spiffe://bank.example/pep-gateway" in caller["sans"]
    assert caller["uri_sans"] == ["spiffe://bank.example/pep-gateway"]
    # The record is made for this PEP (its SPIFFE ID), and says so.
    assert claims_of(resp.record.encode())["pdp"]["aud"] == "spiffe://bank.example/pep-gateway"

    # A caller without a client certificate does not get an answer at all.
    no_cert = grpc.ssl_channel_credentials(pki["ca"])
    with grpc.secure_channel(f"localhost:{pdp.port}", no_cert) as channel, pytest.raises(grpc.RpcError) as e:
        pb_grpc.DecisionServiceStub(channel).Decide(req, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_only_the_callers_an_agent_is_bound_to_may_speak_for_it(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], pki: dict[str, bytes], tmp_path: Path
) -> None:
    # release-bot's registry entry binds it to spiffe://bank.example/deploy-gateway.
    pdp = start_pdp(
        start_opa().url,
        tls_cert_file=tmp_path / "server_cert.pem",
        tls_key_file=tmp_path / "server_key.pem",
        tls_client_ca_file=tmp_path / "ca.pem",
    )
    req = request(
        agent={"id": "release-bot", "version": "5.2.0"},
        action={"tool": "deploy.release", "operation": "execute"},
        environment={"name": "staging"},
    )

    def decide_as(cert: str, key: str) -> tuple[str, set[str]]:
        creds = grpc.ssl_channel_credentials(pki["ca"], pki[key], pki[cert])
        with grpc.secure_channel(f"localhost:{pdp.port}", creds) as channel:
            resp = pb_grpc.DecisionServiceStub(channel).Decide(req, timeout=5)
        return pb.Outcome.Name(resp.outcome), {r.code for r in resp.reasons}

    outcome, unbound = decide_as("client_cert", "client_key")  # pep-gateway
    # Both gateways are production PEPs in the catalogue (the environment is looked up, not asserted),
    # so other reasons may stand; the binding must be the only difference between them.
    assert outcome == "OUTCOME_DENY" and "agent.caller_not_bound" in unbound
    _, bound = decide_as("deployer_cert", "deployer_key")  # the bound gateway
    assert bound == unbound - {"agent.caller_not_bound"}
