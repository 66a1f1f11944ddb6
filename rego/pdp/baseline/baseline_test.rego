package pdp.baseline_test

import data.pdp.baseline

# A registered agent reading internal CRM data in production at low risk: nothing fires.
base := {
	"request_time": "2026-11-24T10:00:00Z",
	"agent": {"id": "support-bot", "version": "1.4.1"},
	"principal": {"id": "alice@example.com", "roles": ["support_agent"]},
	"action": {"tool": "crm.lookup", "operation": "read", "arguments": {}, "destination": {"kind": "", "address": ""}},
	"resource": {
		"type": "customer_record", "id": "C-1", "classification_level": 2,
		"data_categories": [], "compartments": [],
	},
	"lineage": [],
	"environment": {"name": "production", "change_ref": ""},
	"risk": {"score": 10, "indicators": []},
	"approvals": [],
}

codes(reasons) := {r.code | some r in reasons}

denied(patch) := result if {
	result := codes(baseline.deny) with input as object.union(base, patch)
}

escalated(patch) := result if {
	result := codes(baseline.escalate) with input as object.union(base, patch)
}

obligation_types(patch) := result if {
	result := {o.type | some o in baseline.obligations} with input as object.union(base, patch)
}

test_base_nothing_fires if {
	denied({}) == set()
	escalated({}) == set()
	codes(baseline.allow) == {"tool.granted"} with input as base
}

test_agent_unregistered_fires if "agent.unregistered" in denied({"agent": {"id": "stranger"}})

test_agent_unregistered_quiet_for_registered if not "agent.unregistered" in denied({})

test_agent_disabled_fires if "agent.disabled" in denied({"agent": {"id": "retired-bot", "version": "0.9.0"}})

test_agent_disabled_quiet_for_enabled if not "agent.disabled" in denied({})

test_agent_version_not_allowed_fires if "agent.version_not_allowed" in denied({"agent": {"version": "1.3.9"}})

test_agent_version_not_allowed_quiet_for_listed if {
	not "agent.version_not_allowed" in denied({"agent": {"version": "1.4.0"}})
}

test_tool_not_granted_fires if "tool.not_granted" in denied({"action": {"tool": "payments.transfer"}})

test_tool_not_granted_quiet_for_unregistered if not "tool.not_granted" in denied({"agent": {"id": "stranger"}})

test_tool_granted_needs_enabled_agent if {
	count(baseline.allow) == 0 with input as object.union(base, {"agent": {"id": "retired-bot", "version": "0.9.0"}})
}

test_change_reference_missing_fires if {
	patch := {"agent": {"id": "release-bot", "version": "5.2.0"}, "action": {"tool": "deploy.release"}}
	"change.reference_missing" in denied(patch)
}

test_change_reference_missing_quiet_with_ref if {
	patch := {"agent": {"id": "release-bot", "version": "5.2.0"}, "action": {"tool": "deploy.release"}}
	not "change.reference_missing" in denied(object.union(patch, {"environment": {"change_ref": "CHG-1"}}))
}

test_change_reference_missing_quiet_outside_production if {
	patch := {"agent": {"id": "release-bot", "version": "5.2.0"}, "action": {"tool": "deploy.release"}}
	not "change.reference_missing" in denied(object.union(patch, {"environment": {"name": "staging"}}))
}

test_time_outside_window_fires_at_night if {
	"time.outside_window" in escalated({
		"agent": {"id": "release-bot", "version": "5.2.0"},
		"request_time": "2026-11-24T22:30:00Z",
	})
}

test_time_outside_window_fires_on_friday if {
	"time.outside_window" in escalated({
		"agent": {"id": "release-bot", "version": "5.2.0"},
		"request_time": "2026-11-27T10:00:00Z",
	})
}

test_time_outside_window_quiet_inside if {
	not "time.outside_window" in escalated({"agent": {"id": "release-bot", "version": "5.2.0"}})
}

test_time_outside_window_quiet_without_window if {
	not "time.outside_window" in escalated({"request_time": "2026-11-24T23:59:00Z"})
}

test_risk_critical_fires if "risk.critical" in denied({"risk": {"score": 90}})

test_risk_critical_quiet_below if not "risk.critical" in denied({"risk": {"score": 89.9}})

test_risk_high_fires if "risk.high" in escalated({"risk": {"score": 70}})

test_risk_high_quiet_when_critical if not "risk.high" in escalated({"risk": {"score": 95}})

test_risk_high_quiet_below if not "risk.high" in escalated({"risk": {"score": 69}})

test_risk_medium_obligations if obligation_types({"risk": {"score": 40}}) == {"sandbox", "rate_limit"}

test_risk_low_no_obligations if obligation_types({"risk": {"score": 39}}) == set()

test_clearance_exceeded_fires if "data.clearance_exceeded" in denied({"resource": {"classification_level": 4}})

test_clearance_exceeded_quiet_at_clearance if {
	not "data.clearance_exceeded" in denied({"resource": {"classification_level": 3}})
}

test_clearance_exceeded_unlabelled_counts_as_internal if {
	baseline.resource_level == 2 with input as object.union(base, {"resource": {"classification_level": 0}})
}

external_pii := {
	"action": {"tool": "email.send", "destination": {"kind": "email", "address": "someone@gmail.example"}},
	"resource": {"data_categories": ["pii", "marketing"]},
}

test_sensitive_egress_fires if "data.sensitive_egress" in denied(external_pii)

test_sensitive_egress_quiet_internal_destination if {
	not "data.sensitive_egress" in denied(object.union(external_pii, {"action": {"destination": {"kind": "internal"}}}))
}

test_sensitive_egress_processor_redacts if {
	patch := object.union(external_pii, {"action": {"destination": {"address": "mail.relay.example"}}})
	not "data.sensitive_egress" in denied(patch)
	"redact" in obligation_types(patch)
}

test_sensitive_egress_processor_not_covering_phi if {
	patch := object.union(external_pii, {
		"action": {"destination": {"address": "mail.relay.example"}},
		"resource": {"data_categories": ["phi"]},
	})
	"data.sensitive_egress" in denied(patch)
}

good_lineage := [{"source": "core-banking", "kind": "ledger", "quality": 0.99, "verified": true}]

test_lineage_incomplete_fires_without_lineage if "lineage.incomplete" in denied({"risk": {"score": 75}})

test_lineage_incomplete_fires_for_unknown_source if {
	entry := {"source": "pastebin", "quality": 1, "verified": true}
	"lineage.incomplete" in denied({"risk": {"score": 75}, "lineage": [entry]})
}

test_lineage_incomplete_fires_for_unverified if {
	entry := {"source": "crm", "quality": 1, "verified": false}
	"lineage.incomplete" in denied({"risk": {"score": 75}, "lineage": [entry]})
}

test_lineage_incomplete_fires_for_low_quality if {
	entry := {"source": "crm", "quality": 0.5, "verified": true}
	"lineage.incomplete" in denied({"risk": {"score": 75}, "lineage": [entry]})
}

test_lineage_incomplete_fires_for_payment_class if {
	patch := {"agent": {"id": "payments-agent", "version": "2.0.3"}, "action": {"tool": "payments.transfer"}}
	"lineage.incomplete" in denied(patch)
}

test_lineage_incomplete_quiet_with_good_lineage if {
	not "lineage.incomplete" in denied({"risk": {"score": 75}, "lineage": good_lineage})
}

test_lineage_incomplete_quiet_for_low_risk_reads if not "lineage.incomplete" in denied({})

deploy := {"agent": {"id": "release-bot", "version": "5.2.0"}, "action": {"tool": "deploy.release"}}

test_agent_caller_not_bound_fires_for_an_unauthenticated_caller if {
	"agent.caller_not_bound" in denied(object.union(deploy, {"caller": {
		"authenticated": false, "peer": "ipv4:10.0.0.9:5000",
		"subject": "", "sans": [],
	}}))
}

test_agent_caller_not_bound_fires_for_another_authenticated_caller if {
	"agent.caller_not_bound" in denied(object.union(deploy, {"caller": {
		"authenticated": true, "peer": "ipv4:10.0.0.9:5000",
		"subject": "pep-gateway", "sans": ["spiffe://bank.example/pep-gateway"],
	}}))
}

test_agent_caller_not_bound_quiet_for_the_bound_spiffe_id if {
	not "agent.caller_not_bound" in denied(object.union(deploy, {"caller": {
		"authenticated": true, "peer": "ipv4:10.0.0.7:5000",
		"subject": "deploy-gateway", "sans": ["spiffe://bank.example/deploy-gateway"],
	}}))
}

test_agent_caller_not_bound_needs_authentication_even_for_a_matching_name if {
	"agent.caller_not_bound" in denied(object.union(deploy, {"caller": {
		"authenticated": false, "peer": "ipv4:10.0.0.7:5000",
		"subject": "", "sans": ["spiffe://bank.example/deploy-gateway"],
	}}))
}

test_agent_caller_not_bound_quiet_for_agents_without_callers if {
	not "agent.caller_not_bound" in denied({"caller": {"authenticated": false, "peer": "ipv4:10.0.0.9:5000"}})
}
