"""AuthZEN ↔ DecideRequest / Decision (pdp.http.authzen), without a server."""

from __future__ import annotations

from typing import Any

import pytest

from pdp.decide import Decision
from pdp.errors import InvalidArgument
from pdp.http import authzen
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Obligation, Outcome, Reason, Verdict

MAPPING = authzen.Mapping.default()


def _decision(outcome: Outcome, *, record: str = "x.e30.y", indeterminate: bool = False) -> Decision:
    code = "pdp.opa_unavailable" if indeterminate else f"test.{outcome.value}"
    return Decision(
        decision_id=f"id-{outcome.value}",
        request_id="",
        verdict=Verdict(
            outcome=outcome,
            reasons=(Reason(code=code, message="because", rule="Rule"),),
            obligations=(Obligation(type="audit"),) if outcome is Outcome.ALLOW else (),
            indeterminate=indeterminate,
            error_code=code if indeterminate else "",
        ),
        agent_id="authzen",
        tool="read",
        decision_path="pdp/decision",
        record=record,
        log_index=7,
    )


def _evaluation(**extra: Any) -> dict[str, Any]:
    return {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "read"},
        "resource": {"type": "doc", "id": "1"},
        **extra,
    }


def test_the_default_mapping_fills_the_request_and_keeps_only_the_rest() -> None:
    ev = _evaluation(
        resource={"type": "doc", "id": "1", "properties": {"classification": "SECRET", "ownerID": "bob"}},
        context={"risk": {"score": 3}, "ip": "10.0.0.1"},
    )
    req = MAPPING.to_request(ev)
    assert req.context.principal.id == "alice"
    assert req.context.action.tool == "read"
    assert req.context.resource.classification == pb.CLASSIFICATION_SECRET
    assert req.context.risk.score == 3
    assert req.context.agent.id == "authzen"
    assert dict(req.context.attributes["authzen"]) == {
        "resource": {"properties": {"ownerID": "bob"}},
        "context": {"ip": "10.0.0.1"},
    }
    # The caller's evaluation is not changed by the mapping.
    assert ev["resource"]["properties"] == {"classification": "SECRET", "ownerID": "bob"}


def test_the_default_mapping_forwards_the_tokens_and_keeps_them_out_of_the_attributes() -> None:
    ev = _evaluation(
        subject={"type": "user", "id": "alice", "properties": {"token": "h.p.s"}},
        context={"risk_assertion": "r.r.r", "lineage_attestations": ["l.l.1", "l.l.2"]},
    )
    ctx = MAPPING.to_request(ev).context
    assert (ctx.principal_token, ctx.risk_assertion, list(ctx.lineage_attestations)) == (
        "h.p.s",
        "r.r.r",
        ["l.l.1", "l.l.2"],
    )
    assert ctx.principal.id == "alice"  # the subject's word, beside the token the PDP verifies
    assert not ctx.HasField("attributes")


def test_nothing_unmapped_means_no_attributes() -> None:
    assert not MAPPING.to_request(_evaluation()).context.HasField("attributes")


@pytest.mark.parametrize(
    ("semantic", "outcomes", "decided"),
    [
        ("deny_on_first_deny", [Outcome.ALLOW, Outcome.REQUIRE_APPROVAL, Outcome.ALLOW], 2),
        ("deny_on_first_deny", [Outcome.ALLOW, Outcome.ALLOW], 2),
        ("permit_on_first_permit", [Outcome.DENY, Outcome.ALLOW, Outcome.DENY], 2),
        ("permit_on_first_permit", [Outcome.DENY, Outcome.DENY], 2),
    ],
)
def test_short_circuits_decide_nothing_after_the_cut(semantic: str, outcomes: list[Outcome], decided: int) -> None:
    asked: list[int] = []

    def decide(i: int) -> Decision:
        asked.append(i)
        return _decision(outcomes[i])

    assert len(authzen.decide_in_order(decide, range(len(outcomes)), semantic)) == decided
    assert asked == list(range(decided)), "an entry after the cut was decided"


def test_an_allow_without_a_record_is_false() -> None:
    assert authzen.permitted(_decision(Outcome.ALLOW))
    assert not authzen.permitted(_decision(Outcome.ALLOW, record=""))


def test_results_say_why() -> None:
    allow = authzen.to_result(_decision(Outcome.ALLOW))
    assert allow["decision"] is True
    assert allow["context"]["reason_admin"] == {"test.allow": "because"}
    assert allow["context"]["log_index"] == "7"
    assert "reason_user" not in allow["context"]
    failed = authzen.to_result(_decision(Outcome.DENY, indeterminate=True))
    assert failed["decision"] is False
    assert failed["context"]["error"] == {"status": 503, "code": "pdp.opa_unavailable", "message": "because"}
    assert authzen.to_result(_decision(Outcome.ALLOW), with_context=False) == {"decision": True}


def test_evaluations_merge_defaults_and_name_the_entry() -> None:
    body = {**_evaluation(), "evaluations": [{}, {"action": {"name": "write"}}]}
    merged, semantic, single = authzen.evaluations_of(body)
    assert [e["action"]["name"] for e in merged] == ["read", "write"]
    assert (semantic, single) == ("execute_all", False)
    with pytest.raises(InvalidArgument) as e:
        authzen.evaluations_of({"evaluations": [_evaluation(), {"subject": {"type": "user"}}]})
    assert e.value.field == "evaluations[1].subject.id"


@pytest.mark.parametrize(
    ("field", "batch", "named"),
    [
        ("context.agent.id", False, "subject.properties.agent_id"),
        ("requests[3].context.action.arguments", True, "evaluations[3].action.properties.arguments"),
        ("requests[0].context.attributes", True, "evaluations[0].request"),
        ("request_id", False, "X-Request-ID"),
        ("requests", True, "evaluations"),
    ],
)
def test_errors_name_the_authzen_field(field: str, batch: bool, named: str) -> None:
    assert authzen.name_field(InvalidArgument(field, "bad"), MAPPING, batch=batch) == named
