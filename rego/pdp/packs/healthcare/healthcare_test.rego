package pdp.packs.healthcare_test

import data.pdp.fixtures_test as fx
import data.pdp.packs.healthcare

base := fx.treatment

p(patch) := fx.patch(base, patch)

denied(inp) := result if {
	result := {r.code | some r in healthcare.deny} with input as inp
}

escalated(inp) := result if {
	result := {r.code | some r in healthcare.escalate} with input as inp
}

obligations(inp) := result if {
	result := healthcare.obligations with input as inp
}

# A request whose verified token carries `purpose` (and which repeats it).
for_purpose(purpose) := p({
	"verified": {"principal": {"purpose_of_use": purpose}},
	"asserted": {"purpose_of_use": purpose},
})

# The token carries no purpose of use; the caller asserts `purpose`.
asserting(purpose) := p({
	"verified": {"principal": {"purpose_of_use": ""}},
	"asserted": {"purpose_of_use": purpose},
})

emergency := p({
	"verified": {"principal": {"id": "dr.patel@hospital.example", "purpose_of_use": "emergency"}},
	"asserted": {"principal": {"id": "dr.patel@hospital.example"}, "purpose_of_use": "emergency"},
})

test_healthcare_quiet_for_treatment_on_the_care_team if {
	denied(base) == set()
	escalated(base) == set()
}

# ---- purpose_required ----

test_purpose_required_fires if "hipaa.purpose_required" in denied(for_purpose("marketing"))

test_purpose_required_fires_when_empty if {
	"hipaa.purpose_required" in denied(for_purpose(""))
	"hipaa.purpose_required" in denied(fx.without(base, ["asserted/purpose_of_use", "verified/principal/purpose_of_use"]))
}

test_purpose_required_fires_when_the_caller_drops_phi if {
	# Whether data is PHI comes from the catalogue, not from the request's categories.
	"hipaa.purpose_required" in denied(fx.patch(for_purpose("marketing"), {"asserted": {"resource": {"data_categories": []}}}))
}

test_purpose_required_fires_for_an_uncatalogued_record if {
	"hipaa.purpose_required" in denied(fx.patch(for_purpose("marketing"), {"resource": {"id": "patient-9999/summary"}}))
}

test_purpose_required_quiet_without_phi if {
	not "hipaa.purpose_required" in denied(fx.patch(for_purpose(""), {"resource": {"type": "customer_record", "id": "C-1042"}}))
}

test_purpose_required_uses_the_verified_purpose if {
	# The token's purpose decides; the request need not repeat it.
	tokened := p({"verified": {"principal": {"purpose_of_use": "treatment"}}, "asserted": {"purpose_of_use": ""}})
	denied(tokened) == set()
}

test_purpose_required_fires_for_an_asserted_purpose if {
	# By default only the token's purpose counts: a purpose the caller merely asserts is no
	# purpose at all, so asserting "treatment" cannot turn a denial into an allow.
	"hipaa.purpose_required" in denied(asserting("treatment"))
	"hipaa.purpose_required" in denied(asserting("marketing"))
}

test_asserted_treatment_does_not_allow_phi_access if {
	# The audit's case: a valid principal token without a purpose claim, the caller asserts
	# "treatment" instead of "marketing". The decision stays a denial.
	d := data.pdp.decision with input as asserting("treatment")
	d.outcome == "deny"
	"hipaa.purpose_required" in {r.code | some r in d.reasons}
	d.outcome == data.pdp.decision.outcome with input as asserting("marketing")
}

test_purpose_required_uses_an_asserted_purpose_when_a_deployment_relaxes_it if {
	# purpose_from_token_only = false is a relaxation a deployment may choose: the asserted
	# purpose then selects requirements, which still rest on verified and looked-up facts.
	denied(asserting("treatment")) == set() with data.pdp.baseline.purpose_from_token_only as false
	"hipaa.purpose_required" in denied(asserting("marketing")) with data.pdp.baseline.purpose_from_token_only as false
}

# ---- purpose_mismatch ----

test_purpose_mismatch_fires if {
	claim := p({"verified": {"principal": {"purpose_of_use": "payment"}}, "asserted": {"purpose_of_use": "treatment"}})
	"hipaa.purpose_mismatch" in denied(claim)
}

test_purpose_mismatch_fires_without_phi_too if {
	claim := p({
		"resource": {"type": "customer_record", "id": "C-1042"},
		"verified": {"principal": {"purpose_of_use": "payment"}}, "asserted": {"purpose_of_use": "treatment"},
	})
	"hipaa.purpose_mismatch" in denied(claim)
}

test_purpose_mismatch_quiet_when_equal if {
	not "hipaa.purpose_mismatch" in denied(p({"verified": {"principal": {"purpose_of_use": "treatment"}}}))
}

test_purpose_mismatch_quiet_without_a_token_purpose if not "hipaa.purpose_mismatch" in denied(asserting("treatment"))

# ---- role_not_permitted ----

test_role_not_permitted_fires if "hipaa.role_not_permitted" in denied(p({"verified": {"principal": {"roles": ["billing"]}}}))

test_role_not_permitted_fires_for_asserted_roles_only if {
	# Roles the caller claims grant nothing: only the token's roles count.
	claim := p({"verified": {"principal": {"roles": []}}, "asserted": {"principal": {"roles": ["clinician"]}}})
	"hipaa.role_not_permitted" in denied(claim)
}

test_role_not_permitted_fires_without_verified_principal if {
	# Without a token there is no purpose, so the request is denied for that; and even where
	# a deployment lets the asserted purpose count, the role must be a verified one.
	anonymous := fx.without(base, ["verified/principal"])
	"hipaa.purpose_required" in denied(anonymous)
	"hipaa.role_not_permitted" in denied(anonymous) with data.pdp.baseline.purpose_from_token_only as false
}

test_role_not_permitted_quiet_for_billing_payment if {
	billing := fx.patch(for_purpose("payment"), {"verified": {"principal": {"roles": ["billing"]}}})
	not "hipaa.role_not_permitted" in denied(billing)
}

test_role_not_permitted_quiet_without_purpose if {
	roleless := {"verified": {"principal": {"roles": []}}}
	not "hipaa.role_not_permitted" in denied(fx.patch(for_purpose("marketing"), roleless))
	not "hipaa.role_not_permitted" in denied(fx.patch(asserting("treatment"), roleless))
}

# ---- no_care_relationship ----

test_no_care_relationship_fires if {
	"hipaa.no_care_relationship" in denied(p({"verified": {"principal": {"id": "dr.patel@hospital.example"}}}))
}

test_no_care_relationship_fires_when_the_caller_claims_another_owner if {
	# The owner comes from the catalogue: claiming Dr Patel's patient changes nothing.
	claim := p({
		"verified": {"principal": {"id": "dr.patel@hospital.example"}},
		"asserted": {"resource": {"owner": "patient-5020"}},
	})
	"hipaa.no_care_relationship" in denied(claim)
}

test_no_care_relationship_fires_without_verified_principal if {
	# Without a token there is no purpose, so the request is denied for that; and even where
	# a deployment lets the asserted purpose count, no one is on the care team.
	anonymous := fx.without(base, ["verified/principal"])
	"hipaa.purpose_required" in denied(anonymous)
	"hipaa.no_care_relationship" in denied(anonymous) with data.pdp.baseline.purpose_from_token_only as false
}

test_no_care_relationship_fires_for_the_asserted_principal_too if {
	"hipaa.no_care_relationship" in denied(p({"asserted": {"principal": {"id": "dr.patel@hospital.example"}}}))
}

test_no_care_relationship_fires_for_unknown_patient if {
	"hipaa.no_care_relationship" in denied(p({"resource": {"id": "patient-9999/summary"}}))
}

test_no_care_relationship_quiet_on_the_care_team if not "hipaa.no_care_relationship" in denied(base)

test_no_care_relationship_quiet_for_payment if {
	billing := fx.patch(for_purpose("payment"), {"verified": {"principal": {"roles": ["billing"]}}})
	not "hipaa.no_care_relationship" in denied(billing)
}

# ---- break_glass ----

test_break_glass_fires if {
	"hipaa.break_glass" in escalated(emergency)
	denied(emergency) == set()
	some o in obligations(emergency)
	o.type == "flag"
}

test_break_glass_fires_when_the_caller_claims_treatment_of_its_own_patient if {
	# Issue 13's attack: claim treatment and an owner on one's care team. With an emergency
	# token the claimed purpose is a mismatch and break-glass (escalated) remains; with a
	# treatment token the catalogue says whose record it is, so treatment is denied.
	lie := {"asserted": {"purpose_of_use": "treatment", "resource": {"owner": "patient-5020"}}}
	claim := fx.patch(emergency, lie)
	denied(claim) == {"hipaa.purpose_mismatch"}
	"hipaa.break_glass" in escalated(claim)
	treating := fx.patch(claim, {"verified": {"principal": {"purpose_of_use": "treatment"}}})
	"hipaa.no_care_relationship" in denied(treating)

	# Without a purpose in the token, the asserted one selects nothing.
	"hipaa.purpose_required" in denied(fx.patch(claim, {"verified": {"principal": {"purpose_of_use": ""}}}))
}

test_break_glass_quiet_for_treatment if not "hipaa.break_glass" in escalated(base)

# ---- obligations ----

test_minimum_necessary_drops_extra_fields if {
	some o in obligations(base)
	o.type == "minimum_necessary"
	o.params.drop == ["ssn"]
}

test_minimum_necessary_without_field_list if {
	some o in obligations(fx.without(base, ["action/arguments/fields"]))
	o.type == "minimum_necessary"
	o.params.drop == []
}

test_deidentify_on_export if {
	export := p({"action": {"tool": "ehr.export", "destination": {"address": "research@hospital.example"}}})
	some o in obligations(export)
	o.type == "deidentify"
}

test_deidentify_quiet_on_read if {
	every o in obligations(base) {
		o.type != "deidentify"
	}
}

test_minimum_necessary_with_a_malformed_field_list if {
	# A `fields` that is not a list still gets the obligation (keep only the purpose's fields).
	some o in obligations(p({"action": {"arguments": {"fields": "everything"}}}))
	o.type == "minimum_necessary"
	o.params.drop == []
}
