"""The report's figures from claims of known content: every figure, exactly."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pdp.approvals.binding import INCOMPLETE, REUSED
from pdp.report import html
from pdp.report.entries import entry_of
from pdp.report.figures import PDP_CODES, Period, compute, percentile
from pdp.schema import ShadowRecord, SuspensionRecord

T0 = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.UTC).timestamp()


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def decision(
    did: str,
    at: float,
    outcome: str,
    reasons: list[str],
    *,
    agent: str = "a1",
    tool: str = "crm.lookup",
    error: str = "",
    eval_ns: int = 0,
    exp: int | None = None,
    masked: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "decision_id": did,
        "timestamp": _iso(at),
        "bundles": {"rego": {"revision": "r1"}},
        "metrics": {"timer_rego_query_eval_ns": eval_ns, "timer_pdp_opa_roundtrip_ns": 2 * eval_ns},
        "masked": list(masked),
        "erased": [],
        "pdp": {
            "type": "decision",
            "agent": {"id": agent},
            "tool": tool,
            "principal": "p1",
            "outcome": outcome,
            "reasons": reasons,
            "indeterminate": bool(error),
            "error_code": error,
            "opa_version": "" if error else "1.22.2",
            "iat": int(at),
            "exp": int(at) + 300 if exp is None else exp,
        },
        **extra,
    }


def outcome(did: str, at: float) -> dict[str, Any]:
    return {"decision_id": did, "outcome": {"status": "executed"}, "pdp": {"type": "outcome", "iat": int(at)}}


def escalation(eid: str, step: str, at: float) -> dict[str, Any]:
    return {"decision_id": f"d-{eid}", "pdp": {"type": "escalation", "step": step, "escalation_id": eid, "iat": at}}


def _rfc3339(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def shadow(did: str, at: float, divergence: str, *, revision: str = "c1") -> dict[str, Any]:
    """A shadow record's claims as the PDP signs them (the schema's class, written out)."""
    return (
        ShadowRecord(
            decision_id=did,
            timestamp=_rfc3339(at),
            bundles={"rego": {"revision": revision}},
            result={"outcome": "deny", "reasons": [], "obligations": [], "facts": {}},
            divergence=divergence,
            live={"outcome": "allow", "reasons": ["tool.granted"]},
            candidate={"outcome": "deny", "reasons": ["tool.not_granted"], "indeterminate": False, "error_code": ""},
            decision_log_index="0",
            decision_record_digest="sha256:00",
            iat=int(at),
            jti=f"j-{did}",
        )
        .at(1)
        .to_dict()
    )


def suspension(
    action: str, kind: str, value: str, at: float, *, until: str = "", closed: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A suspension record's claims as the kill switch signs them."""
    return (
        SuspensionRecord(
            action=action,
            kind=kind,
            value=value,
            reason=f"{action} <drill>",
            timestamp=_rfc3339(at),
            requested_by="spiffe://bank.example/ops",
            operator="alice",
            until=until,
            iat=int(at),
            jti=f"j-{action}-{at}",
            closed_escalations=closed,
            was_active=action == "resume",
        )
        .at(2)
        .to_dict()
    )


MIX = [
    decision("d1", T0, "allow", ["tool.granted"], eval_ns=100, masked=("/principal/id",)),
    decision("d2", T0 + 60, "allow", ["tool.granted"], agent="a2", tool="payments.transfer", eval_ns=300),
    decision("d3", T0 + 120, "deny", ["tool.not_granted"], agent="a2", tool="payments.transfer", eval_ns=200),
    decision("d4", T0 + 180, "require_approval", ["risk.high"], eval_ns=400),
    decision("d5", T0 + 240, "deny", ["pdp.opa_unavailable"], error="pdp.opa_unavailable"),
    decision("d6", T0 + 300, "allow", ["tool.granted", "approval.accepted"], eval_ns=500, exp=int(T0) + 9000),
    outcome("d1", T0 + 400),
    outcome("d1", T0 + 410),  # a second report about the same decision counts once
    {"decision_id": "x", "pdp": {"type": "receipt", "iat": T0 + 500}},  # a type this version does not know
    {"pdp": {"iat": T0 + 600}},  # no type at all
]


def figures(claims: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return compute((entry_of(i, c) for i, c in enumerate(claims)), **kw)


def fired(code: str, count: int, agents: dict[str, int], tools: dict[str, int]) -> tuple[str, dict[str, Any]]:
    """A reason code's expected figures, out of MIX's six decisions."""
    anchor = "rule-" + code.replace(".", "-").replace("_", "-")
    return code, {"count": count, "fire_rate": count / 6, "catalog": anchor, "by_agent": agents, "by_tool": tools}


def test_every_figure_of_a_known_mix() -> None:
    f = figures(
        MIX,
        catalog={
            "tool.granted": "rule-tool-granted",
            "tool.not_granted": "rule-tool-not-granted",
            "risk.high": "rule-risk-high",
            "approval.accepted": "rule-approval-accepted",
            "risk.critical": "rule-risk-critical",
        },
    )
    assert f["period"] == {
        "since": None,
        "until": None,
        "first_decision": "2026-11-24T10:00:00Z",
        "last_decision": "2026-11-24T10:05:00Z",
        "as_of": "2026-11-24T10:10:00Z",
    }
    assert f["decisions"]["total"] == 6
    assert f["decisions"]["by_outcome"] == {"allow": 3, "require_approval": 1, "deny": 1, "fail_closed": 1}
    assert f["decisions"]["over_time"] == {
        "bucket_s": 60,
        "buckets": [
            {"start": f"2026-11-24T10:0{m}:00Z", **counts}
            for m, counts in enumerate(
                [
                    {"allow": 1, "require_approval": 0, "deny": 0, "fail_closed": 0},
                    {"allow": 1, "require_approval": 0, "deny": 0, "fail_closed": 0},
                    {"allow": 0, "require_approval": 0, "deny": 1, "fail_closed": 0},
                    {"allow": 0, "require_approval": 1, "deny": 0, "fail_closed": 0},
                    {"allow": 0, "require_approval": 0, "deny": 0, "fail_closed": 1},
                    {"allow": 1, "require_approval": 0, "deny": 0, "fail_closed": 0},
                ]
            )
        ],
    }
    assert f["autonomy"] == {
        "allowed_without_human": 2,
        "allowed_after_approval": 1,
        "autonomy_rate": 2 / 6,
        "escalated": 1,
        "escalation_rate": 1 / 6,
    }
    assert f["escalations"]["source"] == "none"
    assert f["escalations"]["approval_rate"] is None and f["escalations"]["time_to_approval_s"] is None
    assert "no escalation records" in f["escalations"]["note"]
    assert f["rules"]["fired"] == dict(
        [
            fired("approval.accepted", 1, {"a1": 1}, {"crm.lookup": 1}),
            fired("risk.high", 1, {"a1": 1}, {"crm.lookup": 1}),
            fired("tool.granted", 3, {"a1": 2, "a2": 1}, {"crm.lookup": 2, "payments.transfer": 1}),
            fired("tool.not_granted", 1, {"a2": 1}, {"payments.transfer": 1}),
        ]
    )
    assert f["rules"]["never_fired"] == ["risk.critical"]
    assert f["rules"]["not_in_catalog"] == [] and f["rules"]["pdp_codes"] == []
    assert f["audit"] == {
        "allows": 3,
        "allows_with_outcome": 1,
        "outcome_coverage": 1 / 3,
        "allows_overdue": 1,  # d2 expired at T0+360, before as_of (the newest record, T0+600), unreported
        "allows_pending": 1,  # d6 expires at T0+9000
        "overdue": [{"decision_id": "d2", "agent": "a2", "tool": "payments.transfer"}],
        "fail_closed": {"total": 1, "by_code": {"pdp.opa_unavailable": 1}},
    }
    assert f["latency"] == {
        "method": "nearest rank",
        "timers": {
            "timer_pdp_opa_roundtrip_ns": {"count": 5, "p50": 600, "p90": 1000, "p99": 1000, "max": 1000},
            "timer_rego_query_eval_ns": {"count": 5, "p50": 300, "p90": 500, "p99": 500, "max": 500},
        },
    }
    assert f["denials"] == {"top_agents": [["a2", 1]], "top_tools": [["payments.transfer", 1]]}
    assert f["agents"]["a1"] == {
        "decisions": 4,
        "allow": 2,
        "require_approval": 1,
        "deny": 0,
        "fail_closed": 1,
        "tools": ["crm.lookup"],
        "first": "2026-11-24T10:00:00Z",
        "last": "2026-11-24T10:05:00Z",
    }
    assert f["agents"]["a2"]["decisions"] == 2 and f["agents"]["a2"]["deny"] == 1
    assert f["privacy"] == {"decisions_masked": 1, "decisions_erased": 0, "masked": {"/principal/id": 1}, "erased": {}}
    assert f["lineage"]["source"] == "none" and f["lineage"]["completeness"] is None
    assert "predates" in f["lineage"]["note"]
    prov = f["provenance"]
    assert prov["records"] == {"decision": 6, "outcome": 2, "receipt": 1, "unknown": 1}
    assert prov["unknown_record_types"] == {"receipt": 1, "unknown": 1} and prov["unreadable_records"] == {}
    assert f["kill_switch"]["source"] == "none" and f["kill_switch"]["changes"] == []
    assert f["kill_switch"]["denied_by_code"] == {"agent.suspended": 0, "principal.suspended": 0, "tool.suspended": 0}
    assert f["shadow"] == {
        "source": "none",
        "divergences": 0,
        "by_kind": {},
        "candidates": {},
        "note": f["shadow"]["note"],
    }
    assert "no shadow record" in f["shadow"]["note"]
    assert prov["bundles"] == {"rego": {"r1": 6}}
    assert prov["opa_versions"] == {"1.22.2": 5}


def test_the_period_keeps_decisions_in_since_until_and_their_later_outcome_reports() -> None:
    f = figures(MIX, period=Period(since=T0 + 60, until=T0 + 240))
    assert f["decisions"]["by_outcome"] == {"allow": 1, "require_approval": 1, "deny": 1, "fail_closed": 0}
    assert f["audit"]["allows"] == 1 and f["audit"]["allows_with_outcome"] == 0
    assert f["rules"]["never_fired"] is None and f["rules"]["fired"]["tool.granted"]["catalog"] is None
    f = figures(MIX, period=Period(since=T0, until=T0 + 1))
    assert f["audit"]["allows_with_outcome"] == 1  # d1's report was logged after the period ended


def test_escalation_records_give_the_approval_rate_and_time_to_approval() -> None:
    claims = [
        decision("d1", T0, "require_approval", ["risk.high"]),
        escalation("e1", "opened", T0),
        escalation("e2", "opened", T0 + 10),
        escalation("e3", "opened", T0 + 20),
        escalation("e4", "opened", T0 + 30),
        escalation("e1", "approved", T0 + 100),
        escalation("e1", "consumed", T0 + 150),  # approved, then used: still approved
        escalation("e2", "rejected", T0 + 50),
        escalation("e3", "approved", T0 + 320),
        escalation("e5", "approved", T0 + 400),  # opened before the log's first entry: not in the period
    ]
    e = figures(claims)["escalations"]
    assert e["source"] == "escalation records" and e["note"] == ""
    assert e["opened"] == 4
    assert e["by_state"] == {
        "open": 1,
        "approved": 1,
        "consumed": 1,
        "rejected": 1,
        "expired": 0,
        "closed_by_kill_switch": 0,
    }
    assert e["approval_rate"] == 2 / 3
    assert e["time_to_approval_s"] == {"count": 2, "p50": 100, "p90": 300, "p99": 300, "max": 300}


# The kill switch: agent a1 suspended at T0+100 (closing its open escalation e1; e2 was approved
# before, e3 is opened after and left open), resumed at T0+400; payments.transfer suspended at T0+500
# (past the period in the period test) with an end time.
KILL = [
    decision("d1", T0, "require_approval", ["risk.high"]),
    escalation("e1", "opened", T0),
    escalation("e2", "opened", T0 + 10),
    escalation("e2", "approved", T0 + 50),
    suspension("suspend", "agent", "a1", T0 + 100, closed=("e1",)),
    decision("d2", T0 + 120, "deny", ["agent.suspended"]),
    decision("d3", T0 + 130, "deny", ["agent.suspended", "tool.suspended"], tool="payments.transfer"),
    decision("d4", T0 + 140, "deny", ["principal.suspended"], agent="a2"),
    escalation("e3", "opened", T0 + 200),
    suspension("resume", "agent", "a1", T0 + 400),
    suspension("suspend", "tool", "payments.transfer", T0 + 500, until="2026-11-24T12:00:00Z"),
    decision("d5", T0 + 520, "deny", ["tool.suspended"], tool="payments.transfer"),
]


def test_the_kill_switch_figures_from_suspension_records_and_denials() -> None:
    f = figures(KILL)
    k = f["kill_switch"]
    assert k["source"] == "suspension records" and k["note"] == ""
    assert (k["suspended"], k["resumed"], k["escalations_closed"]) == (2, 1, 1)
    assert k["changes"] == [
        {
            "action": "suspend",
            "kind": "agent",
            "value": "a1",
            "by": "spiffe://bank.example/ops",
            "operator": "alice",
            "reason": "suspend <drill>",
            "at": "2026-11-24T10:01:40Z",
            "until": None,
            "closed_escalations": ["e1"],
            "was_active": False,
        },
        {
            "action": "resume",
            "kind": "agent",
            "value": "a1",
            "by": "spiffe://bank.example/ops",
            "operator": "alice",
            "reason": "resume <drill>",
            "at": "2026-11-24T10:06:40Z",
            "until": None,
            "closed_escalations": [],
            "was_active": True,
        },
        {
            "action": "suspend",
            "kind": "tool",
            "value": "payments.transfer",
            "by": "spiffe://bank.example/ops",
            "operator": "alice",
            "reason": "suspend <drill>",
            "at": "2026-11-24T10:08:20Z",
            "until": "2026-11-24T12:00:00Z",
            "closed_escalations": [],
            "was_active": False,
        },
    ]
    assert k["denied_by_code"] == {"agent.suspended": 2, "principal.suspended": 1, "tool.suspended": 2}
    # e1 was closed by the kill switch (no escalation step says so): closed, not open, and not approved.
    e = f["escalations"]
    assert e["by_state"] == {
        "open": 1,
        "approved": 1,
        "consumed": 0,
        "rejected": 0,
        "expired": 0,
        "closed_by_kill_switch": 1,
    }
    assert e["approval_rate"] == 1 / 2
    assert f["provenance"]["records"] == {"decision": 5, "escalation": 4, "suspension": 3}
    assert f["provenance"]["unknown_record_types"] == {} and f["provenance"]["unreadable_records"] == {}


def test_the_kill_switch_in_a_period_keeps_its_closings() -> None:
    f = figures(KILL, period=Period(since=T0 + 110, until=T0 + 450))
    k = f["kill_switch"]
    assert [(c["action"], c["value"]) for c in k["changes"]] == [("resume", "a1")]
    assert (k["suspended"], k["resumed"], k["escalations_closed"]) == (0, 1, 0)
    assert k["denied_by_code"] == {"agent.suspended": 2, "principal.suspended": 1, "tool.suspended": 1}
    # e1 (opened before the period) is out; its closing still keeps it from being counted open anywhere.
    assert figures(KILL, period=Period(since=T0, until=T0 + 1))["escalations"]["by_state"]["closed_by_kill_switch"] == 1
    # A suspension made on another replica: its denials are counted, the record is not here.
    f = figures([decision("d1", T0, "deny", ["agent.suspended"])])
    assert f["kill_switch"]["source"] == "none" and "another replica" in f["kill_switch"]["note"]
    assert f["kill_switch"]["denied_by_code"]["agent.suspended"] == 1


def test_a_rejected_step_and_the_kill_switch_closing_count_once_as_closed_by_it() -> None:
    claims = [
        escalation("e1", "opened", T0),
        escalation("e1", "rejected", T0 + 5),  # should a later version log the rejection as a step too
        suspension("suspend", "agent", "a1", T0 + 5, closed=("e1",)),
        escalation("e2", "opened", T0),
        escalation("e2", "expired", T0 + 3),
        suspension("suspend", "agent", "a2", T0 + 6, closed=("e2",)),  # not open when closed: stays expired
    ]
    assert figures(claims)["escalations"]["by_state"] == {
        "open": 0,
        "approved": 0,
        "consumed": 0,
        "rejected": 0,
        "expired": 1,
        "closed_by_kill_switch": 1,
    }


def test_the_shadow_figures_count_divergences_of_the_periods_decisions() -> None:
    claims = [
        decision("d1", T0, "allow", ["tool.granted"]),
        decision("d2", T0 + 60, "deny", ["tool.not_granted"]),
        decision("d3", T0 + 120, "allow", ["tool.granted"]),
        decision("d4", T0 + 600, "allow", ["tool.granted"]),
        shadow("d1", T0 + 1, "allow->deny"),
        shadow("d2", T0 + 61, "deny->allow", revision="c2"),
        shadow("d3", T0 + 700, "allow->deny", revision="c2"),  # logged after the period: still d3's
        shadow("d4", T0 + 601, "reasons"),  # d4 is outside the period below
    ]
    s = figures(claims)["shadow"]
    assert s == {
        "source": "shadow records",
        "divergences": 4,
        "by_kind": {"allow->deny": 2, "deny->allow": 1, "reasons": 1},
        "candidates": {"rego": {"c1": 2, "c2": 2}},
        "note": "",
    }
    s = figures(claims, period=Period(since=T0, until=T0 + 300))["shadow"]
    assert s["divergences"] == 3 and s["by_kind"] == {"allow->deny": 2, "deny->allow": 1}
    assert s["candidates"] == {"rego": {"c1": 1, "c2": 2}}
    f = figures(claims)
    assert f["provenance"]["records"] == {"decision": 4, "shadow": 4} and f["provenance"]["unknown_record_types"] == {}


def test_the_pdps_own_codes_are_listed_apart_never_as_missing_from_the_catalog() -> None:
    assert {REUSED, INCOMPLETE, "agent.suspended", "principal.suspended", "tool.suspended"} <= PDP_CODES
    claims = [
        decision("d1", T0, "deny", ["agent.suspended"]),
        decision("d2", T0, "deny", ["tool.suspended"]),
        decision("d3", T0, "deny", [REUSED]),
        decision("d4", T0, "deny", [INCOMPLETE]),
        decision("d5", T0, "deny", ["budget.exceeded"]),  # the PDP's and the budgets pack's
        decision("d6", T0, "deny", ["demo.gone"]),  # a rule the bundle no longer has
        decision("d7", T0, "deny", ["pdp.state_unavailable"], error="pdp.state_unavailable"),
    ]
    r = figures(claims, catalog={"budget.exceeded": "rule-budget-exceeded", "tool.granted": "rule-tool-granted"})[
        "rules"
    ]
    assert r["not_in_catalog"] == ["demo.gone"]
    assert r["pdp_codes"] == [
        "agent.suspended",
        "approval.incomplete",
        "approval.reused",
        "budget.exceeded",
        "tool.suspended",
    ]
    assert r["fired"]["budget.exceeded"]["catalog"] == "rule-budget-exceeded"
    assert "pdp.state_unavailable" not in r["fired"]  # fail-closed: under audit, not rules
    assert figures(claims)["rules"]["pdp_codes"] == r["pdp_codes"]  # without a catalog too


def test_the_html_shows_the_kill_switch_and_the_shadow_sections() -> None:
    f = figures([*KILL, shadow("d1", T0 + 1, "require_approval->allow", revision="cand-<7>")])
    f["provenance"] |= {
        "checkpoint": {"origin": "pdp.test/decisions", "size": 13, "root_base64": "AA==", "note": "n"},
        "log": {"entries_verified": 13, "checkpoints": 1, "entries_after_checkpoint": 0},
        "keys": {"kids": ["k1"], "note_verifier_keys": []},
    }
    page = html.render(f, catalog=None)
    for sid in ("kill-switch", "shadow"):
        assert f'<section id="{sid}">' in page and f'href="#{sid}"' in page
    kill = page.split('<section id="kill-switch">')[1].split("</section>")[0]
    assert "payments.transfer" in kill and "suspend &lt;drill&gt;" in kill and "<drill>" not in kill
    assert "2026-11-24T12:00:00Z" in kill and "until resumed" in kill and "alice" in kill
    assert kill.count('rect class="bar"') == 3  # one bar per *.suspended code
    shown = page.split('<section id="shadow">')[1].split("</section>")[0]
    assert "require_approval-&gt;allow" in shown and "cand-&lt;7&gt;" in shown
    rules = page.split('<section id="rules">')[1].split("</section>")[0]
    assert "The PDP's own reason codes" in rules and "not in the bundle" not in rules
    assert "Unknown record types" not in page and "<script" not in page


def _summarised(claims: dict[str, Any], classification: str | None, lineage: list[dict[str, str]]) -> dict[str, Any]:
    """A decision record as the PDP writes it: its trust summary, and the facts the policy looked up
    (``classification`` None: no facts, as in a fail-closed record)."""
    claims["pdp"]["trust"] = {"principal": None, "risk": None, "lineage": lineage, "rejected": []}
    if classification is not None:
        claims["pdp"]["facts"] = {"catalog_revision": "c1", "resource": {"classification": classification}}
    return claims


def test_lineage_completeness_from_the_provenance_summary() -> None:
    erp = [{"issuer": "https://lineage.example", "source": "erp"}]
    claims = [
        _summarised(decision("d1", T0, "allow", ["tool.granted"]), "confidential", erp),
        _summarised(decision("d2", T0, "deny", ["lineage.incomplete"]), "restricted", []),
        _summarised(decision("d3", T0, "allow", ["tool.granted"]), "public", erp),  # not classified
        decision("d4", T0, "allow", ["tool.granted"]),  # an older record: no summary
        _summarised(decision("d5", T0, "allow", ["tool.granted"]), "internal", erp),
        _summarised(decision("d6", T0, "deny", [], error="pdp.opa_unavailable"), None, []),  # no facts
        # Only the PDP's own claims count: a caller's word in the input or elsewhere is not a summary.
        decision("d7", T0, "allow", ["tool.granted"], facts={"resource": {"classification": "secret"}}),
        decision(
            "d8", T0, "allow", ["tool.granted"], input={"verified": {"lineage": erp}, "asserted": {"lineage": erp}}
        ),
    ]
    claims[7]["pdp"]["facts"] = {"resource": {"classification": "secret"}}  # facts without a trust summary
    lin = figures(claims)["lineage"]
    assert lin == {
        "source": "provenance summary",
        "decisions_with_summary": 5,
        "on_classified_data": 3,
        "with_verified_lineage": 2,
        "completeness": 2 / 3,
        "note": "",
    }


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"pdp": "decision"},
        {"pdp": {"type": "decision", "reasons": None, "agent": "a", "exp": "x"}},
        {"pdp": {"type": "escalation"}, "escalation": []},
        {"pdp": {"type": 7}, "timestamp": "yesterday"},
        {"pdp": {"type": "shadow", "kind": 7}, "decision_id": "d1"},
        {"pdp": {"type": "suspension"}, "suspension": {"action": "suspend", "closed_escalations": "e1"}},
    ],
)
def test_odd_records_are_counted_never_a_crash(claims: dict[str, Any]) -> None:
    f = figures([claims])
    assert sum(f["provenance"]["records"].values()) == 1


def test_a_shadow_or_suspension_record_the_schema_cannot_read_is_counted_as_unreadable() -> None:
    broken = shadow("d1", T0, "allow->deny")
    del broken["pdp"]["live"]
    switch = suspension("suspend", "agent", "a1", T0, closed=("e1",))
    switch["suspension"]["closed_escalations"] = "e1"
    f = figures([decision("d1", T0, "allow", ["tool.granted"]), broken, switch])
    assert f["provenance"]["unreadable_records"] == {"shadow": 1, "suspension": 1}
    assert f["provenance"]["unknown_record_types"] == {}
    assert f["shadow"]["divergences"] == 0 and f["kill_switch"]["changes"] == []


def test_an_empty_log_has_no_rates() -> None:
    f = figures([])
    assert f["decisions"]["total"] == 0 and f["autonomy"]["autonomy_rate"] is None
    assert f["audit"]["outcome_coverage"] is None and f["decisions"]["over_time"]["buckets"] == []


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 90, 99)] == [50, 90, 99]
    assert percentile([7], 99) == 7
