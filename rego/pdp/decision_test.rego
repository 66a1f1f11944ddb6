package pdp_test

import data.pdp

# A high-risk transfer by the payments agent with complete lineage: escalated, not denied.
transfer := {
	"request_time": "2026-11-24T10:00:00Z",
	"agent": {"id": "payments-agent", "version": "2.0.3"},
	"principal": {"id": "bob@bank.example", "roles": ["treasurer"]},
	"action": {
		"tool": "payments.transfer", "operation": "execute",
		"arguments": {"amount": 25000, "currency": "USD", "beneficiary": "DE89370400440532013000"},
		"destination": {"kind": "", "address": ""},
	},
	"resource": {"type": "account", "id": "ACC-1", "classification_level": 3, "data_categories": [], "compartments": []},
	"lineage": [{"source": "core-banking", "kind": "ledger", "quality": 0.99, "verified": true}],
	"environment": {"name": "production", "change_ref": ""},
	"risk": {"score": 75, "indicators": []},
	"approvals": [],
	"purpose_of_use": "",
	"action_digest": "sha256:aa",
}

risk_approval := {
	"approver_id": "rita.okafor@bank.example",
	"action_digest": "sha256:aa",
	"expires_at": "2026-11-24T11:00:00Z",
}

decide(patch) := d if {
	d := pdp.decision with input as object.union(transfer, patch)
}

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
	d := decide({"approvals": [risk_approval]})
	d.outcome == "allow"
	codes(d) == {"tool.granted", "approval.accepted"}
	{o.type | some o in d.obligations} == {"audit"}
}

test_decision_approval_for_other_action_does_not_allow if {
	d := decide({"approvals": [object.union(risk_approval, {"action_digest": "sha256:bb"})]})
	d.outcome == "require_approval"
}

test_decision_deny_wins_over_escalation if {
	d := decide({"risk": {"score": 75}, "lineage": []})
	d.outcome == "deny"
	codes(d) == {"lineage.incomplete"}
	d.obligations == []
}

test_decision_deny_wins_over_valid_approval if {
	d := decide({"agent": {"id": "retired-bot", "version": "0.9.0"}, "approvals": [risk_approval]})
	d.outcome == "deny"
	"agent.disabled" in codes(d)
}

test_decision_default_deny_without_grant if {
	lookup := {"agent": {"id": "support-bot", "version": "1.4.1"}, "action": {"tool": "crm.lookup"}}
	d := decide(object.union(lookup, {"risk": {"score": 0}}))
	d.outcome == "allow"
	d2 := decide({"risk": {"score": 0}}) with pdp.baseline.agents["payments-agent"].tools as []
	d2.outcome == "deny"
	codes(d2) == {"tool.not_granted"}
}

test_decision_no_matching_allow_reason if {
	# A module that neither denies nor grants leaves the default deny, with its own reason.
	d := pdp.decision with pdp.baseline.deny as set()
		with pdp.baseline.allow as set()
		with pdp.baseline.escalate as set()
		with pdp.packs as {}
	d.outcome == "deny"
	codes(d) == {"policy.no_matching_allow"}
}

test_decision_disabled_pack_is_ignored if {
	sanctioned := {"action": {"arguments": {"counterparty": "Kestrel Front Ltd"}}, "approvals": [risk_approval]}
	decide(sanctioned).outcome == "deny"
	d := decide(sanctioned) with pdp.packs.fintech.enabled as false
	d.outcome == "allow"
}

test_decision_pack_escalation_needs_its_approver if {
	d := decide({"risk": {"score": 20}, "action": {"arguments": {"amount": 150000}}})
	d.outcome == "require_approval"
	codes(d) == {"fintech.dual_control"}
	d2 := decide({"risk": {"score": 20}, "action": {"arguments": {"amount": 150000}}, "approvals": [risk_approval]})
	d2.outcome == "allow"
}

test_decision_allow_carries_module_obligations if {
	d := decide({"risk": {"score": 50}})
	d.outcome == "allow"
	{o.type | some o in d.obligations} == {"audit", "sandbox", "rate_limit"}
}

test_decision_allow_carries_pack_obligations if {
	d := decide({
		"agent": {"id": "clinical-assistant", "version": "1.0.2"},
		"principal": {"id": "dr.jones@hospital.example", "roles": ["clinician"]},
		"action": {"tool": "ehr.read", "arguments": {"fields": ["diagnoses"]}},
		"resource": {"owner": "patient-4711", "data_categories": ["phi"]},
		"purpose_of_use": "treatment",
		"risk": {"score": 5},
	})
	d.outcome == "allow"
	{o.type | some o in d.obligations} == {"audit", "minimum_necessary"}
}

test_batch_decides_each_request_as_alone if {
	approved := object.union(transfer, {"approvals": [risk_approval]})
	ungranted := object.union(transfer, {"action": {"tool": "shell.exec"}})
	batch := pdp.decisions with input as {"requests": [transfer, approved, ungranted]}
	one := pdp.decision with input as transfer
	two := pdp.decision with input as approved
	three := pdp.decision with input as ungranted
	batch == [one, two, three]
	[d.outcome | some d in batch] == ["require_approval", "allow", "deny"]
}

test_batch_of_none_is_empty if {
	count(pdp.decisions) == 0 with input as {"requests": []}
}
