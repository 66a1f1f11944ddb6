package pdp.baseline_test

import data.pdp.baseline
import data.pdp.fixtures_test as fx

codes(reasons) := {r.code | some r in reasons}

denied(inp) := result if {
	result := codes(baseline.deny) with input as inp
}

escalated(inp) := result if {
	result := codes(baseline.escalate) with input as inp
}

granted(inp) := result if {
	result := codes(baseline.allow) with input as inp
}

obligation_types(inp) := result if {
	result := {o.type | some o in baseline.obligations} with input as inp
}

p(patch) := fx.patch(fx.base, patch)

test_baseline_quiet_for_an_honest_request if {
	denied(fx.base) == set()
	escalated(fx.base) == set()
	granted(fx.base) == {"tool.granted"}
}

# ---- identity ----

test_agent_unregistered_fires if "agent.unregistered" in denied(p({"agent": {"id": "stranger"}}))

test_agent_unregistered_quiet_for_registered if not "agent.unregistered" in denied(fx.base)

retired := p({"agent": {"id": "retired-bot"}, "asserted": {"agent": {"version": "0.9.0"}}})

test_agent_disabled_fires if "agent.disabled" in denied(retired)

test_agent_disabled_quiet_for_enabled if not "agent.disabled" in denied(fx.base)

test_agent_version_not_allowed_fires if {
	"agent.version_not_allowed" in denied(p({"asserted": {"agent": {"version": "1.3.9"}}}))
}

test_agent_version_not_allowed_fires_when_missing if {
	"agent.version_not_allowed" in denied(fx.without(fx.base, ["asserted/agent/version"]))
	"agent.version_not_allowed" in denied(fx.without(fx.base, ["asserted"]))
}

test_agent_version_not_allowed_quiet_for_listed if {
	not "agent.version_not_allowed" in denied(p({"asserted": {"agent": {"version": "1.4.0"}}}))
}

deploy := p({
	"agent": {"id": "release-bot"}, "action": {"tool": "deploy.release"},
	"asserted": {"agent": {"version": "5.2.0"}, "environment": {"change_ref": "CHG-2026-1187"}},
})

caller(c) := fx.patch(deploy, {"bound": {"caller": c}})

test_agent_caller_not_bound_fires_for_an_unauthenticated_caller if {
	"agent.caller_not_bound" in denied(deploy)
}

test_agent_caller_not_bound_fires_for_another_authenticated_caller if {
	"agent.caller_not_bound" in denied(caller({
		"authenticated": true, "subject": "pep-gateway",
		"sans": ["spiffe://bank.example/pep-gateway"], "uri_sans": ["spiffe://bank.example/pep-gateway"],
	}))
}

test_agent_caller_not_bound_quiet_for_the_bound_spiffe_id if {
	not "agent.caller_not_bound" in denied(caller({
		"authenticated": true, "subject": "deploy-gateway",
		"sans": ["spiffe://bank.example/deploy-gateway"], "uri_sans": ["spiffe://bank.example/deploy-gateway"],
	}))
}

test_agent_caller_not_bound_spiffe_matches_uri_sans_only if {
	# A certificate whose CN or DNS SAN spells the SPIFFE ID is not that workload.
	"agent.caller_not_bound" in denied(caller({
		"authenticated": true, "subject": "spiffe://bank.example/deploy-gateway",
		"sans": ["spiffe://bank.example/deploy-gateway"], "uri_sans": [],
	}))
}

test_agent_caller_not_bound_plain_name_matches_subject if {
	not "agent.caller_not_bound" in denied(caller({"authenticated": true, "subject": "deploy-gw", "sans": []})) with baseline.agents["release-bot"].callers as ["deploy-gw"]
}

test_agent_caller_not_bound_needs_authentication_even_for_a_matching_name if {
	"agent.caller_not_bound" in denied(caller({
		"authenticated": false, "subject": "",
		"sans": [], "uri_sans": ["spiffe://bank.example/deploy-gateway"],
	}))
}

test_agent_caller_not_bound_names_the_peer_without_subject if {
	some r in baseline.deny with input as deploy
	r.code == "agent.caller_not_bound"
	contains(r.message, "ipv4:127.0.0.1:5000")
}

test_agent_caller_not_bound_quiet_for_agents_without_callers if not "agent.caller_not_bound" in denied(fx.base)

# ---- capabilities ----

test_tool_not_granted_fires if "tool.not_granted" in denied(p({"action": {"tool": "payments.transfer"}}))

test_tool_not_granted_quiet_for_unregistered if not "tool.not_granted" in denied(p({"agent": {"id": "stranger"}}))

test_tool_granted_fires if granted(fx.base) == {"tool.granted"}

test_tool_granted_quiet_for_a_disabled_agent if granted(retired) == set()

test_tool_granted_quiet_for_an_ungranted_tool if granted(p({"action": {"tool": "payments.transfer"}})) == set()

test_tool_granted_ignores_the_asserted_version if {
	# The version can only deny; the grant rests on the registry alone.
	granted(p({"asserted": {"agent": {"version": "1.3.9"}}})) == {"tool.granted"}
}

test_resource_required_fires_without_resource if {
	"resource.required" in denied(p({"resource": {"type": "", "id": ""}}))
	"resource.required" in denied(fx.without(fx.base, ["resource"]))
	"resource.required" in denied(p({"resource": {"id": ""}}))
}

test_resource_required_quiet_with_resource if not "resource.required" in denied(fx.base)

test_resource_required_quiet_for_tools_without_resources if {
	not "resource.required" in denied(p({"action": {"tool": "email.send"}, "resource": {"type": "", "id": ""}}))
}

# ---- environment ----

test_change_reference_missing_fires if {
	"change.reference_missing" in denied(p({
		"agent": {"id": "release-bot"}, "action": {"tool": "deploy.release"},
		"asserted": {"agent": {"version": "5.2.0"}},
	}))
}

test_change_reference_missing_quiet_with_approved_change if not "change.reference_missing" in denied(deploy)

test_change_reference_missing_fires_for_made_up_reference if {
	"change.reference_missing" in denied(fx.patch(deploy, {"asserted": {"environment": {"change_ref": "CHG-1"}}}))
}

test_change_reference_missing_fires_for_rejected_change if {
	"change.reference_missing" in denied(fx.patch(deploy, {"asserted": {"environment": {"change_ref": "CHG-2026-0999"}}}))
}

test_change_reference_missing_fires_for_other_agents_change if {
	change := {"status": "approved", "agents": ["other-bot"], "from": "2026-01-01T00:00:00Z", "to": "2030-01-01T00:00:00Z"}
	"change.reference_missing" in denied(deploy) with data.pdp.catalog.changes["CHG-2026-1187"] as change
}

test_change_reference_missing_fires_outside_change_window if {
	late := fx.patch(deploy, {"bound": {"time": "2031-01-01T10:00:00Z"}})
	"change.reference_missing" in denied(late)
}

test_change_reference_missing_quiet_for_a_staging_pep if {
	staging := fx.patch(deploy, {
		"bound": {"caller": {"authenticated": true, "subject": "pep-staging"}},
		"asserted": {"environment": {"name": "staging", "change_ref": ""}},
	})
	not "change.reference_missing" in denied(staging)
}

test_change_reference_missing_fires_when_the_caller_claims_staging if {
	# The environment comes from the PEP registry: an unknown PEP is production.
	claim := fx.patch(deploy, {"asserted": {"environment": {"name": "staging", "change_ref": ""}}})
	"change.reference_missing" in denied(claim)
}

test_change_reference_missing_fires_for_a_staging_pep_claiming_production if {
	claim := fx.patch(deploy, {
		"bound": {"caller": {"authenticated": true, "subject": "pep-staging"}},
		"asserted": {"environment": {"name": "production", "change_ref": ""}},
	})
	"change.reference_missing" in denied(claim)
}

test_time_outside_window_fires_at_night if {
	"time.outside_window" in escalated(fx.patch(deploy, {"bound": {"time": "2026-11-24T22:30:00Z"}}))
}

test_time_outside_window_fires_on_friday if {
	"time.outside_window" in escalated(fx.patch(deploy, {"bound": {"time": "2026-11-27T10:00:00Z"}}))
}

test_time_outside_window_quiet_inside if not "time.outside_window" in escalated(deploy)

test_time_outside_window_quiet_without_window if {
	not "time.outside_window" in escalated(p({"bound": {"time": "2026-11-24T23:59:00Z"}}))
}

# ---- risk ----

test_risk_critical_fires if "risk.critical" in denied(p({"verified": {"risk": {"score": 90}}}))

test_risk_critical_quiet_below if not "risk.critical" in denied(p({"verified": {"risk": {"score": 89.9}}}))

test_risk_critical_fires_on_an_asserted_score if {
	# An asserted score can only raise the verified one.
	"risk.critical" in denied(p({"asserted": {"risk": {"score": 95}}}))
}

test_risk_high_fires if "risk.high" in escalated(p({"verified": {"risk": {"score": 70}}}))

test_risk_high_quiet_when_critical if not "risk.high" in escalated(p({"verified": {"risk": {"score": 95}}}))

test_risk_high_quiet_below if not "risk.high" in escalated(p({"verified": {"risk": {"score": 69}}}))

test_risk_high_lowered_asserted_score_does_not_lower_verified if {
	"risk.high" in escalated(p({"verified": {"risk": {"score": 75}}, "asserted": {"risk": {"score": 0}}}))
}

test_risk_high_fires_for_a_payment_without_verified_risk if {
	unverified := fx.without(fx.transfer, ["verified/risk"])
	"risk.high" in escalated(fx.patch(unverified, {"asserted": {"risk": {"score": 0}}}))
	"risk.high" in escalated(fx.without(unverified, ["asserted/risk"]))
}

test_risk_high_quiet_for_a_read_without_verified_risk if {
	not "risk.high" in escalated(fx.without(fx.base, ["verified/risk"]))
}

test_risk_medium_obligations if {
	obligation_types(p({"verified": {"risk": {"score": 40}}})) == {"sandbox", "rate_limit"}
}

test_risk_low_no_obligations if obligation_types(p({"verified": {"risk": {"score": 39}}})) == set()

test_risk_asserted_non_number_counts_as_nothing if {
	obligation_types(p({"asserted": {"risk": {"score": "99"}}})) == set()
}

# ---- data protection ----

test_clearance_exceeded_fires if {
	"data.clearance_exceeded" in denied(p({"asserted": {"resource": {"classification_level": 4}}}))
}

test_clearance_exceeded_fires_for_an_asserted_name if {
	"data.clearance_exceeded" in denied(p({"asserted": {"resource": {"classification": "secret"}}}))
}

test_clearance_exceeded_quiet_at_clearance if {
	not "data.clearance_exceeded" in denied(p({"asserted": {"resource": {"classification_level": 3}}}))
}

test_clearance_exceeded_fires_for_uncatalogued_resource if {
	# An unknown resource is top secret, whatever the caller says.
	"data.clearance_exceeded" in denied(p({
		"resource": {"type": "customer_vault", "id": "V-1"},
		"asserted": {"resource": {"classification": "public", "classification_level": 1}},
	}))
}

test_clearance_exceeded_quiet_for_a_type_default if {
	not "data.clearance_exceeded" in denied(p({"resource": {"id": "C-9999"}}))
}

test_clearance_exceeded_catalogue_beats_a_lower_claim if {
	secret := p({
		"agent": {"id": "payments-agent"}, "asserted": {"agent": {"version": "2.0.3"}, "resource": {"classification_level": 1}},
		"resource": {"type": "intel_report", "id": "RPT-2026-0419"},
	})
	"data.clearance_exceeded" in denied(secret)
}

email := p({
	"action": {"tool": "email.send", "destination": {"address": "someone@gmail.example"}},
	"resource": {"type": "customer_record", "id": "C-1042"},
})

test_sensitive_egress_fires if "data.sensitive_egress" in denied(email)

test_sensitive_egress_fires_when_the_caller_says_internal if {
	"data.sensitive_egress" in denied(fx.patch(email, {"asserted": {"destination": {"kind": "internal"}}}))
}

test_sensitive_egress_fires_when_the_caller_drops_pii if {
	"data.sensitive_egress" in denied(fx.patch(email, {"asserted": {"resource": {"data_categories": []}}}))
}

test_sensitive_egress_fires_for_an_empty_address_on_an_egress_tool if {
	"data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": ""}}}))
	"data.sensitive_egress" in denied(fx.without(email, ["action/destination"]))
}

test_sensitive_egress_quiet_internal_address if {
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "ops@corp.example"}}}))
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "Ops@Mail.Corp.Example."}}}))
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "https://api.corp.example:8443/hook"}}}))
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "10.1.2.3"}}}))
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "http://[fd00::5]/x"}}}))
	not "data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "files.corp.example:2049/share"}}}))
}

test_sensitive_egress_fires_for_look_alike_internal_domains if {
	"data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "x@evilcorp.example"}}}))
	"data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "x@corp.example.evil.example"}}}))
	"data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "https://corp.example@evil.example/"}}}))
	"data.sensitive_egress" in denied(fx.patch(email, {"action": {"destination": {"address": "8.8.8.8"}}}))
}

test_sensitive_egress_fires_when_the_caller_says_external if {
	ops := fx.patch(email, {"action": {"destination": {"address": "ops@corp.example"}}})
	"data.sensitive_egress" in denied(fx.patch(ops, {"asserted": {"destination": {"kind": "external"}}}))
}

test_sensitive_egress_quiet_without_egress if not "data.sensitive_egress" in denied(fx.base)

test_sensitive_egress_processor_redacts if {
	relay := fx.patch(email, {"action": {"destination": {"address": "mail.relay.example"}}})
	not "data.sensitive_egress" in denied(relay)
	"redact" in obligation_types(relay)
}

test_sensitive_egress_processor_not_covering_phi if {
	relay := fx.patch(email, {
		"action": {"destination": {"address": "mail.relay.example"}},
		"asserted": {"resource": {"data_categories": ["phi"]}},
	})
	"data.sensitive_egress" in denied(relay)
}

payment := fx.transfer

test_lineage_incomplete_quiet_with_good_lineage if not "lineage.incomplete" in denied(payment)

test_lineage_incomplete_fires_without_verified_lineage if {
	"lineage.incomplete" in denied(fx.patch(payment, {"verified": {"lineage": []}}))
	"lineage.incomplete" in denied(fx.without(payment, ["verified/lineage"]))
}

test_lineage_incomplete_fires_for_made_up_verified_assertion if {
	# A caller's "verified": true is only a claim: without an attestation there is no lineage.
	claim := [{"source": "core-banking", "kind": "ledger", "quality": 1, "verified": true}]
	"lineage.incomplete" in denied(fx.patch(payment, {"verified": {"lineage": []}, "asserted": {"lineage": claim}}))
}

test_lineage_incomplete_fires_for_unknown_verified_source if {
	entry := {"source": "pastebin", "quality": 1, "issuer": "x"}
	"lineage.incomplete" in denied(fx.patch(payment, {"verified": {"lineage": [entry]}}))
}

test_lineage_incomplete_fires_for_low_verified_quality if {
	entry := {"source": "crm", "quality": 0.5, "issuer": "x"}
	"lineage.incomplete" in denied(fx.patch(payment, {"verified": {"lineage": [entry]}}))
}

test_lineage_incomplete_fires_for_asserted_problems if {
	unverified := {"source": "crm", "kind": "", "quality": 1, "verified": false}
	unknown := {"source": "pastebin", "kind": "", "quality": 1, "verified": true}
	low := {"source": "crm", "kind": "", "quality": 0.1, "verified": true}
	garbage := "crm"
	fired := [entry |
		some entry in [unverified, unknown, low, garbage]
		"lineage.incomplete" in denied(fx.patch(payment, {"asserted": {"lineage": [entry]}}))
	]
	count(fired) == 4
}

test_lineage_incomplete_quiet_with_a_good_asserted_entry if {
	entry := {"source": "crm", "kind": "", "quality": 1, "verified": true}
	not "lineage.incomplete" in denied(fx.patch(payment, {"asserted": {"lineage": [entry]}}))
}

test_lineage_incomplete_fires_for_high_risk if {
	"lineage.incomplete" in denied(p({"verified": {"risk": {"score": 75}}}))
}

test_lineage_incomplete_quiet_for_low_risk_reads if not "lineage.incomplete" in denied(fx.base)

test_clearance_exceeded_fires_for_an_agent_without_clearance if {
	"data.clearance_exceeded" in denied(fx.base) with baseline.agents["support-bot"] as {"enabled": true, "tools": ["crm.lookup"]}
}
