"""Invariants of the policy bundle, checked through the real PDP and OPA on synthetic contexts.

Each property is adversarial: the generated requests carry approval tokens signed with the PDP's own
key that are otherwise valid (registered, unexpired approvers with every role, bound to the right
action; no approved escalation behind them, so an ALLOW would still be refused), so the only thing
standing between the request and an ALLOW is the invariant under test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pdp import client
from pdp.v1 import decision_pb2 as pb
from tests.approving import mint
from tests.helpers import BUNDLE, Pdp

pytestmark = pytest.mark.integration

_BASELINE = json.loads((BUNDLE / "pdp/baseline/data.json").read_text())
_APPROVERS = json.loads((BUNDLE / "pdp/approvals/data.json").read_text())["approvers"]
AGENTS = sorted(_BASELINE["agents"])
TOOLS = sorted(_BASELINE["tools"])
ACTIVE_APPROVERS = sorted(a for a, v in _APPROVERS.items() if v["active"])

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-._", min_size=1, max_size=12)
_json_scalar = st.one_of(st.integers(-(10**9), 10**9), st.booleans(), _text)


@st.composite
def contexts(draw: st.DrawFn, *, agent: str | None = None, risk: tuple[float, float] = (0, 100)) -> dict[str, Any]:
    """A proto3-JSON ActionContext built from the registry's agents and tools."""
    agent_id = agent or draw(st.sampled_from(AGENTS))
    versions = _BASELINE["agents"][agent_id]["versions"]
    return {
        "agent": {"id": agent_id, "version": draw(st.sampled_from([*versions, "0.0.1"]))},
        "principal": {
            "id": draw(st.sampled_from(["bob@bank.example", "dr.jones@hospital.example", "col.diaz@army.example"])),
            "roles": draw(st.lists(st.sampled_from(["clinician", "billing", "treasurer", "analyst"]), max_size=2)),
        },
        "action": {
            "tool": draw(st.sampled_from(TOOLS)),
            "operation": draw(st.sampled_from(["read", "execute", "delete", "export"])),
            "arguments": draw(
                st.dictionaries(
                    st.sampled_from(["amount", "currency", "beneficiary", "fields"]), _json_scalar, max_size=3
                )
            ),
        },
        "resource": {
            "type": "record",
            "id": draw(_text),
            "classification": draw(st.sampled_from(pb.Classification.keys())),
            "dataCategories": draw(st.lists(st.sampled_from(["pii", "phi", "financial"]), max_size=2)),
        },
        "lineage": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "source": st.sampled_from(["core-banking", "crm", "pastebin"]),
                        "quality": st.floats(0, 1),
                        "verified": st.booleans(),
                    }
                ),
                max_size=2,
            )
        ),
        "environment": {
            "name": draw(st.sampled_from(["production", "staging"])),
            "changeRef": draw(st.sampled_from(["", "CHG-1"])),
        },
        "risk": {"score": draw(st.floats(*risk))},
        "purposeOfUse": draw(st.sampled_from(["", "treatment", "payment", "emergency"])),
    }


def to_request(context: dict[str, Any]) -> pb.DecideRequest:
    return json_format.ParseDict({"context": context}, pb.DecideRequest())


def approve_all(pdp: Pdp, req: pb.DecideRequest, *, digest: str) -> None:
    """Every active approver approves, for the given action digest, unexpired (tokens signed by the PDP's key)."""
    req.approval_tokens.extend(mint(pdp.server.recorder.ring, req, a, digest=digest) for a in ACTIVE_APPROVERS)


def digest_of(req: pb.DecideRequest) -> str:
    return client.digest_of(req.context)


@SETTINGS
@given(context=contexts(agent="retired-bot"))
def test_disabled_agent_is_never_allowed(pdp: Pdp, context: dict[str, Any]) -> None:
    req = to_request(context)
    approve_all(pdp, req, digest=digest_of(req))
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == pb.OUTCOME_DENY
    assert "agent.disabled" in {r.code for r in resp.reasons}


@SETTINGS
@given(context=contexts(risk=(90, 100)))
def test_critical_risk_is_never_allowed(pdp: Pdp, context: dict[str, Any]) -> None:
    req = to_request(context)
    approve_all(pdp, req, digest=digest_of(req))
    assert pdp.stub.Decide(req, timeout=5).outcome == pb.OUTCOME_DENY


@SETTINGS
@given(context=contexts(risk=(70, 89.9)), other_amount=st.integers(1, 10**7))
def test_approval_for_another_action_never_allows(pdp: Pdp, context: dict[str, Any], other_amount: int) -> None:
    req = to_request(context)
    other = to_request(context)
    other.context.action.arguments["amount"] = other_amount
    if digest_of(other) == digest_of(req):
        other.context.resource.id += "-other"
    approve_all(pdp, req, digest=digest_of(other))
    assert pdp.stub.Decide(req, timeout=5).outcome != pb.OUTCOME_ALLOW


def _answer(resp: pb.DecideResponse) -> tuple[int, list[str], list[dict[str, Any]]]:
    return resp.outcome, [r.code for r in resp.reasons], [json_format.MessageToDict(o) for o in resp.obligations]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(st.tuples(contexts(), st.booleans()), min_size=1, max_size=6))
def test_a_batch_answers_each_request_exactly_as_decide(pdp: Pdp, batch: list[tuple[dict[str, Any], bool]]) -> None:
    requests = []
    for context, approved in batch:
        req = to_request(context)
        if approved:  # reach the allow and obligation paths too, not only denials
            approve_all(pdp, req, digest=digest_of(req))
        requests.append(req)
    together = pdp.stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=10).responses
    for req in requests:  # fresh tokens: an ALLOW resting on tokens consumes them (here: DENY, no escalation)
        if req.approval_tokens:
            del req.approval_tokens[:]
            approve_all(pdp, req, digest=digest_of(req))
    alone = [pdp.stub.Decide(req, timeout=5) for req in requests]
    for r in together:
        event(pb.Outcome.Name(r.outcome))
    assert [_answer(r) for r in together] == [_answer(r) for r in alone]
