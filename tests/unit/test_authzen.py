"""AuthZEN ↔ DecideRequest / Decision (pdp.http.authzen), without a server."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pdp.approvals.binding import REUSED
from pdp.decide import Decision
from pdp.errors import InvalidArgument
from pdp.http import authzen
from pdp.state import Escalation, Vote
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


# ---- the Access Request and Approval Profile's shapes --------------------------------------


def _escalation(status: str = "open", votes: tuple[Vote, ...] = (), count: int = 2) -> Escalation:
    return Escalation(
        id="task-1",
        decision_id="dec-1",
        action_digest="sha256:" + "0" * 64,
        agent_id="payments-agent",
        principal_id="bob",
        reasons=["payments.new_beneficiary"],
        role="treasury_approver",
        count=count,
        created_at=1_000,
        expires_at=4_600,
        status=status,
        votes=list(votes),
        context={"caller": "", "principals": ["bob"]},
    )


def _vote(who: str, at: int, *, approve: bool = True, role: str = "treasury_approver") -> Vote:
    return Vote(approver=who, roles=[role], approve=approve, at=at)


def test_the_approval_reference_is_taken_out_of_the_evaluation() -> None:
    plain = _evaluation(context={"ip": "10.0.0.1"})
    assert authzen.approval_of(plain) == (plain, None)
    ev = _evaluation(context={"ip": "10.0.0.1", "approval": {"id": "task-1", "state": "x", "approved_until": "…"}})
    stripped, approval_id = authzen.approval_of(ev)
    assert approval_id == "task-1" and stripped["context"] == {"ip": "10.0.0.1"}
    assert "approval" in ev["context"]  # the caller's evaluation is not changed
    assert "approval" not in str(MAPPING.to_request(stripped).context.attributes)  # never authorization input
    for bad, field in (
        ("task-1", "evaluations[2].context.approval"),
        ({"tokens": ["a.b.c"]}, "evaluations[2].context.approval.id"),
        ({"id": ""}, "evaluations[2].context.approval.id"),
    ):
        with pytest.raises(InvalidArgument) as e:
            authzen.approval_of(_evaluation(context={"approval": bad}), "evaluations[2].")
        assert e.value.field == field


def test_a_submission_needs_the_denial_and_one_action() -> None:
    denial = {"binding_token": "h.p.s", "expires_at": "2026-06-11T17:34:52Z", "evaluation_id": "dec-1"}
    evaluation, got = authzen.submission_of({**_evaluation(), "denial": denial, "requested_access": {}})
    assert got == denial and set(evaluation) == {"subject", "action", "resource"}
    for body, field in (
        ({**_evaluation(), "denial": denial, "items": []}, "items"),
        (_evaluation(), "denial"),
        ({**_evaluation(), "denial": {"expires_at": "2026-06-11T17:34:52Z"}}, "denial.binding_token"),
        ({**_evaluation(), "denial": {"binding_token": "h.p.s"}}, "denial.expires_at"),
        ({**_evaluation(), "denial": {**denial, "evaluation_id": 7}}, "denial.evaluation_id"),
        ({"denial": denial}, "subject"),
    ):
        with pytest.raises(InvalidArgument) as e:
            authzen.submission_of(body)
        assert e.value.field == field


def test_timestamps_are_rfc3339() -> None:
    assert authzen.rfc3339(1_781_199_292) == "2026-06-11T17:34:52Z"
    assert authzen.timestamp("2026-06-11T17:34:52Z") == authzen.timestamp("2026-06-11T19:34:52+02:00") == 1_781_199_292
    for bad in ("2026-06-11", "2026-06-11T17:34:52", "soon"):
        with pytest.raises(ValueError, match=r"."):
            authzen.timestamp(bad)


@pytest.mark.parametrize(
    ("status", "votes", "expected"),
    [
        ("open", (), "pending"),
        ("approved", (_vote("dan", 2_000), _vote("rita", 2_100)), "approved"),
        ("consumed", (_vote("dan", 2_000), _vote("rita", 2_100)), "approved"),  # terminal: single use is the PDP's
        ("rejected", (_vote("dan", 2_000, approve=False),), "denied"),
        ("rejected", (), "cancelled"),  # closed by the kill switch, not by an approver
        ("expired", (), "expired"),
    ],
)
def test_task_statuses_are_the_drafts(status: str, votes: tuple[Vote, ...], expected: str) -> None:
    assert authzen.task_status(_escalation(status, votes)) == expected


def test_the_task_and_its_reevaluate_result() -> None:
    url = "https://pdp.example/access/v1/access_requests/task-1"
    pending = authzen.task(_escalation("open", (_vote("dan", 2_000),)), status_endpoint=url, approval_ttl_s=900)
    assert pending == {
        "task": {
            "id": "task-1",
            "status": "pending",
            "status_endpoint": url,
            "expires_at": authzen.rfc3339(4_600 + 900),
            "progress": {"current_step": 2, "total_steps": 2, "step_name": "treasury_approver"},
        }
    }
    # A vote by someone without the role does not count towards the approval.
    votes = (_vote("dan", 2_000), _vote("eve", 2_050, role="other"), _vote("rita", 2_100))
    done = authzen.task(_escalation("approved", votes), status_endpoint=url, approval_ttl_s=900)
    assert done["task"]["status"] == "approved" and "progress" not in done["task"]
    assert done["result"] == {
        "mode": "reevaluate",
        "approval": {
            "id": "task-1",
            "approved_at": authzen.rfc3339(2_100),
            "approved_until": authzen.rfc3339(2_000 + 900),  # the first token to expire
        },
    }
    denied = authzen.task(
        _escalation("rejected", (_vote("dan", 2_000, approve=False),)), status_endpoint=url, approval_ttl_s=9
    )
    assert "result" not in denied


def _require_approval(**changes: Any) -> Decision:
    return dataclasses.replace(
        _decision(Outcome.REQUIRE_APPROVAL), escalation_id="task-2", escalation_expires_at=4_600, **changes
    )


def test_a_requestable_denial_carries_the_access_request() -> None:
    d = _require_approval()
    request = authzen.access_request(d, binding_token="b.t.s", endpoint="https://pdp.example/access/v1/access_requests")
    assert request == {
        "endpoint": "https://pdp.example/access/v1/access_requests",
        "expires_at": authzen.rfc3339(4_600),
        "binding_token": "b.t.s",
    }
    ctx = authzen.to_result(d, access_request=request)["context"]
    assert ctx["access_request"] == request
    assert (ctx["evaluation_id"], ctx["reason"]) == (d.decision_id, "approval_required")
    # No escalation opened (no store, or a bare answer): no access request.
    assert (
        "access_request"
        not in authzen.to_result(_decision(Outcome.REQUIRE_APPROVAL), access_request=request)["context"]
    )
    binding = authzen.binding_of(d)
    assert (
        binding["escalation_id"] == "task-2" and binding["evaluation_id"] == d.decision_id and binding["exp"] == 4_600
    )
    assert authzen.binding_of(_decision(Outcome.REQUIRE_APPROVAL)) == {}


@pytest.mark.parametrize(
    ("decision", "presented", "expected"),
    [
        (
            _decision(Outcome.DENY),
            authzen.Presented(id="task-1", problem=authzen.APPROVAL_UNVERIFIABLE),
            ("approval_unverifiable", "none"),
        ),
        (
            dataclasses.replace(
                _decision(Outcome.DENY), verdict=Verdict(outcome=Outcome.DENY, reasons=(Reason(code=REUSED),))
            ),
            authzen.Presented(id="task-1", tokens=("t",), approved_until=2_900),
            ("approval_expired", "none"),
        ),
        (
            dataclasses.replace(
                _decision(Outcome.DENY), approvals={"rejected": [{"token": 0, "check": "action_digest"}]}
            ),
            authzen.Presented(id="task-1", tokens=("t",), approved_until=2_900),
            ("out_of_scope", "none"),
        ),
        (
            dataclasses.replace(_decision(Outcome.DENY), approvals={"rejected": [{"token": 0, "check": "expired"}]}),
            authzen.Presented(id="task-1", tokens=("t",), approved_until=2_900),
            ("approval_expired", "none"),
        ),
        (
            _decision(Outcome.DENY),
            authzen.Presented(id="task-1", tokens=("t",), approved_until=2_900),
            ("policy_denied", "none"),
        ),
    ],
)
def test_a_denied_reevaluation_says_why_and_what_next(
    decision: Decision, presented: authzen.Presented, expected: tuple[str, str]
) -> None:
    ctx = authzen.to_result(decision, presented=presented)["context"]
    assert (ctx["reason"], ctx["next_action"]) == expected
    assert "approval" not in ctx


def test_a_reevaluation_that_needs_another_approval_or_no_decision() -> None:
    presented = authzen.Presented(id="task-1", problem=authzen.APPROVAL_UNVERIFIABLE)
    again = authzen.to_result(_require_approval(), access_request={"binding_token": "b"}, presented=presented)
    assert (again["context"]["reason"], again["context"]["next_action"]) == ("approval_unverifiable", "request")
    failed = authzen.to_result(_decision(Outcome.DENY, indeterminate=True), presented=presented)["context"]
    assert failed["next_action"] == "retry" and "reason" not in failed


def test_a_permit_that_used_the_approval_echoes_it() -> None:
    presented = authzen.Presented(id="task-1", tokens=("t",), approved_until=2_900)
    used = dataclasses.replace(_decision(Outcome.ALLOW), approvals={"verified": [{}], "consumed": True})
    ctx = authzen.to_result(used, presented=presented)["context"]
    assert ctx["approval"] == {"id": "task-1", "approved_until": authzen.rfc3339(2_900)}
    assert "reason" not in ctx and "next_action" not in ctx
    assert "approval" not in authzen.to_result(_decision(Outcome.ALLOW), presented=presented)["context"]


def test_problems_are_rfc9457_with_the_drafts_types() -> None:
    assert authzen.problem("expired_denial", "too late") == (
        410,
        {
            "type": "urn:openid:authzen:access-request:error:expired_denial",
            "title": "The requestable denial has expired",
            "status": 410,
            "detail": "too late",
        },
    )
    assert authzen.problem("unknown_task", "x")[0] == 404
    assert authzen.problem("invalid_denial_binding", "x")[0] == 400
    status, doc = authzen.problem("", "Content-Type: text/plain is not application/json", status=415)
    assert status == 415 and doc["type"] == "about:blank" and doc["title"] == "Unsupported Media Type"
