package pdp_test

import data.pdp
import data.pdp.fixtures_test as fx

# A high-risk transfer by the payments agent with complete lineage: escalated, not denied.
transfer := fx.patch(fx.transfer, {"verified": {"risk": {"score": 75}}})

risk_approval := {
	"approver_id": "rita.okafor@bank.example",
	"action_digest": "sha256:aa",
	"expires_at": "2026-11-24T11:00:00Z",
}

decide(patch) := d if {
	d := pdp.decision with input as fx.patch(transfer, patch)
}

approved(approval_list) := {"bound": {"approvals": approval_list}}

codes(d) := {r.code | some r in d.reasons}

test_decision_escalates_without_approval if {
	d := decide({})
	d.outcome == "require_approval"
	codes(d) == {"risk.high"}
	params := {"reason": "risk.high", "role": "risk_officer", "count": 1, "action_digest": "sha256:aa"}
	d.obligations == [{"type": "approval.required", "params": params}]
}

test_decision_reasons_hide_the_approval_requirement if {
	every r in decide({}).reasons {
		object.keys(r) == {"code", "message", "rule", "severity"}
	}
}

test_decision_allows_with_valid_approval if {
	d := decide(approved([risk_approval]))
	d.outcome == "allow"
	codes(d) == {"tool.granted", "approval.accepted"}
	{o.type | some o in d.obligations} == {"audit"}
}

test_decision_approval_for_other_action_does_not_allow if {
	d := decide(approved([object.union(risk_approval, {"action_digest": "sha256:bb"})]))
	d.outcome == "require_approval"
}

test_decision_deny_wins_over_escalation if {
	d := decide({"verified": {"lineage": []}})
	d.outcome == "deny"
	codes(d) == {"lineage.incomplete"}
	d.obligations == []
}

test_decision_deny_wins_over_valid_approval if {
	d := decide(object.union(approved([risk_approval]), {"agent": {"id": "retired-bot"}}))
	d.outcome == "deny"
	"agent.disabled" in codes(d)
}

test_decision_default_deny_without_grant if {
	decide({"verified": {"risk": {"score": 0}}}).outcome == "allow"
	d := decide({"verified": {"risk": {"score": 0}}}) with pdp.baseline.agents["payments-agent"].tools as []
	d.outcome == "deny"
	codes(d) == {"tool.not_granted"}
}

test_no_matching_allow_quiet_when_granted if {
	not "policy.no_matching_allow" in codes(decide({"verified": {"risk": {"score": 0}}}))
}

test_no_matching_allow_fires if {
	# A module that neither denies nor grants leaves the default deny, with its own reason.
	d := pdp.decision with pdp.baseline.deny as set()
		with pdp.baseline.allow as set()
		with pdp.baseline.escalate as set()
		with pdp.packs as {}
		with input as transfer
	d.outcome == "deny"
	codes(d) == {"policy.no_matching_allow"}
}

test_decision_disabled_pack_is_ignored if {
	sanctioned := object.union(approved([risk_approval]), {"action": {"arguments": {"counterparty": "Kestrel Front Ltd"}}})
	decide(sanctioned).outcome == "deny"
	d := decide(sanctioned) with pdp.packs.fintech.enabled as false
	d.outcome == "allow"
}

test_decision_pack_escalation_needs_its_approver if {
	big := {"verified": {"risk": {"score": 20}}, "action": {"arguments": {"amount": 150000}}}
	d := decide(big)
	d.outcome == "require_approval"
	codes(d) == {"fintech.dual_control"}
	decide(object.union(big, approved([risk_approval]))).outcome == "allow"
}

test_decision_allow_carries_module_obligations if {
	d := decide({"verified": {"risk": {"score": 50}}})
	d.outcome == "allow"
	{o.type | some o in d.obligations} == {"audit", "sandbox", "rate_limit"}
}

test_decision_allow_carries_pack_obligations if {
	d := pdp.decision with input as fx.treatment
	d.outcome == "allow"
	{o.type | some o in d.obligations} == {"audit", "minimum_necessary"}
}

test_decision_facts_say_what_was_looked_up if {
	d := pdp.decision with input as fx.treatment
	d.facts == {
		"catalog_revision": pdp.catalog.revision,
		"resource": {
			"classification": "restricted", "level": 4, "data_categories": ["phi"],
			"compartments": [], "owner": "patient-4711", "catalogued": true,
		},
		"environment": ["production"],
		"destination_internal": true,
	}
}

test_decision_facts_for_an_uncatalogued_resource if {
	d := decide({"resource": {"id": "ACC-404"}})
	d.facts.resource == {
		"classification": "top_secret", "level": 6, "data_categories": ["phi", "pii"],
		"compartments": ["UNCATALOGUED"], "owner": "", "catalogued": false,
	}
}

test_batch_decides_each_request_as_alone if {
	ok := fx.patch(transfer, approved([risk_approval]))
	ungranted := fx.patch(transfer, {"action": {"tool": "shell.exec"}})
	batch := pdp.decisions with input as {"requests": [transfer, ok, ungranted]}
	one := pdp.decision with input as transfer
	two := pdp.decision with input as ok
	three := pdp.decision with input as ungranted
	batch == [one, two, three]
	[d.outcome | some d in batch] == ["require_approval", "allow", "deny"]
}

test_batch_of_none_is_empty if {
	count(pdp.decisions) == 0 with input as {"requests": []}
}
