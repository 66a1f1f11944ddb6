"""Decision → DecideResponse (pdp.grpc.convert), without a server."""

from __future__ import annotations

from pdp.decision import Decision
from pdp.grpc.convert import to_proto
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Obligation, Outcome, Reason, Verdict

HUGE = 10**400  # what OPA's arbitrary-precision arithmetic hands back for round(1e308 * 100) and the like


def test_integers_a_struct_cannot_hold_travel_as_their_digits() -> None:
    decision = Decision(
        decision_id="d",
        request_id="r",
        verdict=Verdict(
            outcome=Outcome.ALLOW,
            reasons=(Reason(code="ok"),),
            obligations=(Obligation(type="cap", params={"limit": HUGE, "small": 7, "nested": [{"n": -HUGE}]}),),
        ),
        agent_id="a",
        tool="t",
        decision_path="pdp/decision",
        explain=pb.EXPLAIN_LEVEL_FULL,
        explanation=[{"op": "eval", "locals": [{"value": {"amount": HUGE, "flag": True}}]}],
    )
    resp = to_proto(decision)
    params = resp.obligations[0].params
    assert params["limit"] == str(HUGE) and params["small"] == 7 and params["nested"][0]["n"] == str(-HUGE)
    event = resp.explanation.events[0]
    assert event["locals"][0]["value"]["amount"] == str(HUGE)
    assert event["locals"][0]["value"]["flag"] is True
