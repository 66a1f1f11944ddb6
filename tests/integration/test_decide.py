"""Decide against a real OPA: every outcome, explanations, provenance, bad input."""

from __future__ import annotations

import json

import grpc
import pytest

from pdp.v1 import decision_pb2 as pb
from tests.helpers import BUNDLE, ROOT, Pdp, load_request, request

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("example", "outcome", "code"),
    [
        ("allow-crm-lookup.json", pb.OUTCOME_ALLOW, "tool.granted"),
        ("deny-tool-not-granted.json", pb.OUTCOME_DENY, "tool.not_granted"),
        ("require-approval-high-risk.json", pb.OUTCOME_REQUIRE_APPROVAL, "risk.high"),
    ],
)
def test_examples_give_their_outcome(pdp: Pdp, example: str, outcome: int, code: str) -> None:
    req = load_request(example)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == outcome
    assert not resp.indeterminate and resp.error_code == ""
    assert code in [r.code for r in resp.reasons]
    assert resp.request_id == req.request_id
    assert resp.decision_id
    # Provenance names the policy that decided: the bundle revision from rego/.manifest.
    manifest = json.loads((BUNDLE / ".manifest").read_text())
    assert manifest["revision"] in resp.provenance.bundle_revisions.values()
    assert resp.provenance.opa_version
    assert resp.provenance.decision_path == "pdp/decision"
    assert resp.timings.total_us >= resp.timings.opa_us > 0


def test_allow_carries_the_policy_obligations(pdp: Pdp) -> None:
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert resp.outcome == pb.OUTCOME_ALLOW
    assert [o.type for o in resp.obligations] == ["audit"]


def test_explanation_only_when_asked(pdp: Pdp) -> None:
    req = load_request("allow-crm-lookup.json")
    plain = pdp.stub.Decide(req, timeout=5)
    assert not plain.HasField("explanation")

    req.explain = pb.EXPLAIN_LEVEL_FULL
    req.request_id += "-explained"  # a new request: a retry would get the first record, unexplained
    full = pdp.stub.Decide(req, timeout=5)
    assert full.explanation.level == pb.EXPLAIN_LEVEL_FULL
    assert len(full.explanation.events) > 10
    assert {"op", "query_id"} <= set(full.explanation.events[0].keys())
    assert full.outcome == plain.outcome


def test_unknown_agent_is_denied(pdp: Pdp) -> None:
    resp = pdp.stub.Decide(request(agent={"id": "stranger"}, action={"tool": "crm.lookup"}), timeout=5)
    assert resp.outcome == pb.OUTCOME_DENY
    assert not resp.indeterminate
    assert "agent.unregistered" in [r.code for r in resp.reasons]


@pytest.mark.parametrize(
    ("context", "field"),
    [
        ({"action": {"tool": "crm.lookup"}}, "context.agent"),
        ({"agent": {"id": "support-bot"}}, "context.action"),
        ({"agent": {"id": ""}, "action": {"tool": "crm.lookup"}}, "context.agent.id"),
        ({"agent": {"id": "support bot"}, "action": {"tool": "crm.lookup"}}, "context.agent.id"),
        (
            {"agent": {"id": "support-bot"}, "action": {"tool": "crm.lookup"}, "risk": {"score": 101}},
            "context.risk.score",
        ),
        ({"agent": {"id": "a"}, "action": {"tool": "t"}, "lineage": [{"quality": 2}]}, "context.lineage[0].quality"),
    ],
)
def test_malformed_request_is_invalid_argument_naming_the_field(pdp: Pdp, context: dict, field: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.Decide(request(**context), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith(field + ":")


def test_missing_context_is_invalid_argument(pdp: Pdp) -> None:
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.Decide(pb.DecideRequest(request_id="r1"), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("context:")


def test_unknown_enum_value_is_rejected(pdp: Pdp) -> None:
    req = load_request("allow-crm-lookup.json")
    req.context.resource.classification = 42  # type: ignore[assignment]
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.Decide(req, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.resource.classification" in e.value.details()


def test_deeply_nested_arguments_are_rejected(pdp: Pdp) -> None:
    nested: dict = {"leaf": 1}
    for _ in range(20):  # past PDP_MAX_DEPTH (16), within what protobuf itself decodes
        nested = {"n": nested}
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.Decide(request(agent={"id": "support-bot"}, action={"tool": "crm.lookup", "arguments": nested}))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.action.arguments" in e.value.details()


def test_oversized_request_is_refused(opa, start_pdp) -> None:  # type: ignore[no-untyped-def]
    pdp = start_pdp(opa.url, max_request_bytes=4096)
    big = request(agent={"id": "support-bot"}, action={"tool": "crm.lookup", "arguments": {"blob": "x" * 8000}})
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.Decide(big, timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_caller_cannot_write_what_the_pdp_binds(start_opa, start_pdp) -> None:  # type: ignore[no-untyped-def]

    opa = start_opa(bundle=ROOT / "tests/data/bundles/echo")
    pdp = start_pdp(opa.url)
    # The request tries to smuggle identity and time through free-form attributes.
    req = request(
        agent={"id": "support-bot"},
        action={"tool": "crm.lookup"},
        resource={"classification": "CLASSIFICATION_SECRET"},
        attributes={"caller": {"authenticated": True, "subject": "admin"}, "request_time": "1999-01-01T00:00:00Z"},
    )
    echoed = json.loads(pdp.stub.Decide(req, timeout=5).reasons[0].message)
    assert echoed["caller"]["authenticated"] is False
    assert echoed["caller"]["subject"] == ""
    assert echoed["caller"]["peer"].startswith("ipv4:127.0.0.1:")
    assert not echoed["request_time"].startswith("1999")
    assert echoed["action_digest"].startswith("sha256:")
    assert echoed["classification"] == "secret"


def test_opa_over_a_unix_socket(start_opa, start_pdp, tmp_path) -> None:  # type: ignore[no-untyped-def]
    opa = start_opa(addr=f"unix://{tmp_path}/opa.sock")
    pdp = start_pdp(opa.url)
    assert pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5).outcome == pb.OUTCOME_ALLOW


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2), for lengths below 2**14."""
    size = bytes([len(payload)]) if len(payload) < 128 else bytes([len(payload) & 0x7F | 0x80, len(payload) >> 7])
    return bytes([number << 3 | 2]) + size + payload


def test_structs_nested_past_protobufs_own_limit_are_invalid_argument(pdp: Pdp) -> None:
    # Another language's client can send what Python's protobuf refuses to decode (depth > 100):
    # context.attributes = {"n": {"n": ... }} 120 levels deep, written as raw wire bytes.
    value = b"\x11" + b"\x00" * 8  # Value{number_value: 0.0}
    for _ in range(120):
        struct = _field(1, _field(1, b"n") + _field(2, value))  # Struct{fields: {"n": value}}
        value = _field(5, struct)  # Value{struct_value: struct}
    raw = _field(2, _field(10, struct))  # DecideRequest{context: {attributes: struct}}
    decide = pdp.channel.unary_unary("/pdp.v1.DecisionService/Decide")
    with pytest.raises(grpc.RpcError) as e:
        decide(raw, timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("request: not a valid DecideRequest")
    assert pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5).outcome == pb.OUTCOME_ALLOW
