"""Property: what a caller asserts, or forwards unverifiably, never turns a non-ALLOW answer into ALLOW.

Requests are the examples and generated ones (registry agents and tools, random labels), each with
the right tokens for what it asserts (as a PEP forwards them). When the answer is not ALLOW,
hypothesis applies several adversarial changes to asserted fields at once (tokens unchanged), or
replaces a token by a forged, expired, wrong-issuer, wrong-audience or wrong-action one carrying
the most favourable claims, through the real PDP and OPA.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pdp import devissuer
from pdp.v1 import decision_pb2 as pb
from tests.helpers import EXAMPLES, Pdp, dev_issuers
from tests.mutations import mutated, mutations, token_attacks
from tests.property.test_policy_invariants import contexts

pytestmark = pytest.mark.integration

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EXAMPLE_CONTEXTS = [json_format.Parse(p.read_text(), pb.DecideRequest()) for p in sorted(EXAMPLES.glob("*.json"))]


# The start moves only what the forwarded tokens then bind (who the principal is, their roles, purpose,
# risk, lineage), and adds no source to the lineage. A start that asserted a restriction (an extra
# compartment, a source the policy distrusts) would be one the liar may lift again: asserted facts can
# only make a decision stricter, so lifting one's own gives the honest answer, which may be ALLOW. The
# lies below still range over every asserted field.
_TOKEN_BOUND = ("principal", "purposeOfUse", "risk", "lineage")


def _start(name: str) -> bool:
    return name.startswith(_TOKEN_BOUND) and not name.startswith("lineage +")


@st.composite
def requests(draw: st.DrawFn) -> pb.DecideRequest:
    """An example or a generated request, maybe already changed, with the right tokens for it."""
    if draw(st.booleans()):
        req = pb.DecideRequest()
        req.CopyFrom(draw(st.sampled_from(EXAMPLE_CONTEXTS)))
        req.request_id = ""
    else:
        req = json_format.ParseDict({"context": draw(contexts())}, pb.DecideRequest())
    bound = [m for m in mutations(json_format.MessageToDict(req)["context"]) if _start(m[0])]
    for m in draw(st.lists(st.sampled_from(bound), max_size=2)):  # a start away from the examples
        req = mutated(req, m)
    devissuer.forward_tokens(req, dev_issuers())
    return req


def _baseline(pdp: Pdp, req: pb.DecideRequest) -> int:
    outcome = pdp.stub.Decide(req, timeout=5).outcome
    event(f"baseline {pb.Outcome.Name(outcome)}")
    return int(outcome)


@SETTINGS
@given(req=requests(), data=st.data())
def test_lies_about_asserted_fields_never_allow(pdp: Pdp, req: pb.DecideRequest, data: Any) -> None:
    if _baseline(pdp, req) == pb.OUTCOME_ALLOW:
        return
    changes = mutations(json_format.MessageToDict(req)["context"])
    lies = data.draw(st.lists(st.sampled_from(changes), min_size=1, max_size=4), label="lies")
    lied = req
    for lie in lies:
        lied = mutated(lied, lie)
    resp = pdp.stub.Decide(lied, timeout=5)
    assert resp.outcome != pb.OUTCOME_ALLOW, [name for name, _ in lies]


@SETTINGS
@given(req=requests(), data=st.data())
def test_bad_tokens_never_allow(pdp: Pdp, req: pb.DecideRequest, data: Any) -> None:
    if _baseline(pdp, req) == pb.OUTCOME_ALLOW:
        return
    name, attacked = data.draw(st.sampled_from(token_attacks(req, dev_issuers())), label="attack")
    resp = pdp.stub.Decide(attacked, timeout=5)
    assert resp.outcome != pb.OUTCOME_ALLOW, name
