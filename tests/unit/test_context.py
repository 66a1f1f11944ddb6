from __future__ import annotations

import pytest
from google.protobuf import json_format

from pdp.context import Caller, build_input
from pdp.errors import InvalidArgument
from pdp.v1 import decision_pb2 as pb

CALLER = Caller(authenticated=True, peer="ipv4:127.0.0.1:5000", subject="pep-1", sans=("spiffe://bank/pep-1",))


def build(context: dict, **request: object) -> dict:
    req = json_format.ParseDict({"context": context, **request}, pb.DecideRequest())
    return build_input(req, caller=CALLER, request_time="2026-11-24T12:00:00.000000Z", max_depth=4)


def test_builds_the_documented_input_shape() -> None:
    doc = build(
        {
            "agent": {"id": "payments-agent", "version": "2.0.3"},
            "principal": {"id": "bob", "roles": ["trader"]},
            "action": {"tool": "payments.transfer", "arguments": {"amount": 10}},
            "resource": {"classification": "CLASSIFICATION_RESTRICTED", "dataCategories": ["pci"]},
            "lineage": [{"source": "core-banking", "quality": 0.99, "verified": True}],
            "risk": {"score": 42.5},
        },
        requestId="req-1",
    )
    bound = doc["bound"]
    assert bound["request_id"] == "req-1"
    assert bound["caller"] == {
        "authenticated": True,
        "peer": "ipv4:127.0.0.1:5000",
        "subject": "pep-1",
        "sans": ["spiffe://bank/pep-1"],
        "uri_sans": [],
    }
    assert bound["time"] == "2026-11-24T12:00:00.000000Z"
    assert bound["action_digest"].startswith("sha256:")
    assert bound["approvals"] == [] and bound["usage"] == {}  # nothing the caller says is bound
    # The question: what is asked, covered by the action digest.
    assert doc["agent"] == {"id": "payments-agent"}
    assert doc["action"]["arguments"] == {"amount": 10}
    assert doc["resource"] == {"type": "", "id": ""}
    # No token forwarded: nothing is verified.
    assert doc["verified"] == {"lineage": []}
    # Everything else is the caller's word.
    asserted = doc["asserted"]
    assert asserted["agent"]["version"] == "2.0.3"
    assert asserted["principal"]["id"] == "bob"
    assert asserted["resource"]["classification"] == "restricted"
    assert asserted["resource"]["classification_level"] == 4
    assert asserted["resource"]["data_categories"] == ["pci"]
    assert asserted["lineage"] == [{"source": "core-banking", "kind": "", "quality": 0.99, "verified": True}]
    assert doc["bound"]["approvals"] == [] and "approvals" not in asserted  # only verified tokens, bound later
    assert asserted["risk"]["score"] == 42.5
    assert set(doc) == {"bound", "agent", "action", "resource", "verified", "asserted"}


def test_unset_parts_are_present_and_empty() -> None:
    doc = build({"agent": {"id": "a"}, "action": {"tool": "t"}})
    asserted = doc["asserted"]
    assert asserted["resource"]["classification"] == "unspecified"
    assert asserted["lineage"] == [] and asserted["attributes"] == {}
    assert asserted["environment"]["name"] == "" and asserted["destination"] == {"kind": ""}


@pytest.mark.parametrize(
    ("context", "field"),
    [
        (
            {"agent": {"id": "a"}, "action": {"tool": "t", "arguments": {"a": {"b": {"c": {"d": 1}}}}}},
            "context.action.arguments.a.b.c.d",
        ),
        (
            {"agent": {"id": "a"}, "action": {"tool": "t"}, "principal": {"roles": ["r"] * 65}},
            "context.principal.roles",
        ),
        ({"agent": {"id": "a"}, "action": {"tool": "t"}, "purposeOfUse": "x" * 2000}, "context.purpose_of_use"),
        ({"agent": {"id": "-leading-dash"}, "action": {"tool": "t"}}, "context.agent.id"),
        ({"agent": {"id": "a"}, "action": {"tool": "t/../../etc"}}, None),  # allowed: ids may hold / and .
    ],
)
def test_limits(context: dict, field: str | None) -> None:
    if field is None:
        build(context)
        return
    with pytest.raises(InvalidArgument) as e:
        build(context)
    assert e.value.field == field


def test_request_id_must_be_printable() -> None:
    with pytest.raises(InvalidArgument, match=r"^request_id"):
        build({"agent": {"id": "a"}, "action": {"tool": "t"}}, requestId="has space")
