package pdp.packs.healthcare_test

import data.pdp.packs.healthcare

base := {
	"agent": {"id": "clinical-assistant"},
	"principal": {"id": "dr.jones@hospital.example", "roles": ["clinician"]},
	"action": {"tool": "ehr.read", "arguments": {"fields": ["diagnoses", "medications"]}},
	"resource": {"owner": "patient-4711", "data_categories": ["phi"]},
	"purpose_of_use": "treatment",
}

denied(patch) := r if {
	r := {x.code | some x in healthcare.deny} with input as object.union(base, patch)
}

escalated(patch) := r if {
	r := {x.code | some x in healthcare.escalate} with input as object.union(base, patch)
}

obligations(patch) := r if {
	r := healthcare.obligations with input as object.union(base, patch)
}

test_base_nothing_fires if {
	denied({}) == set()
	escalated({}) == set()
}

test_purpose_required_fires if "hipaa.purpose_required" in denied({"purpose_of_use": "marketing"})

test_purpose_required_fires_when_empty if "hipaa.purpose_required" in denied({"purpose_of_use": ""})

test_purpose_required_quiet_without_phi if {
	denied({"purpose_of_use": "marketing", "resource": {"data_categories": ["pii"]}}) == set()
}

test_role_not_permitted_fires if "hipaa.role_not_permitted" in denied({"principal": {"roles": ["billing"]}})

test_role_not_permitted_quiet_for_billing_payment if {
	not "hipaa.role_not_permitted" in denied({"principal": {"roles": ["billing"]}, "purpose_of_use": "payment"})
}

test_role_not_permitted_quiet_without_purpose if {
	not "hipaa.role_not_permitted" in denied({"purpose_of_use": "marketing"})
}

test_no_care_relationship_fires if {
	"hipaa.no_care_relationship" in denied({"principal": {"id": "dr.patel@hospital.example"}})
}

test_no_care_relationship_fires_for_unknown_patient if {
	"hipaa.no_care_relationship" in denied({"resource": {"owner": "patient-0"}})
}

test_no_care_relationship_quiet_for_payment if {
	patch := {"principal": {"id": "x", "roles": ["billing"]}, "purpose_of_use": "payment"}
	not "hipaa.no_care_relationship" in denied(patch)
}

test_break_glass_fires if {
	patch := {"principal": {"id": "dr.patel@hospital.example"}, "purpose_of_use": "emergency"}
	escalated(patch) == {"hipaa.break_glass"}
	denied(patch) == set()
	{"type": "flag", "params": {"tag": "break_glass", "review": "privacy_office"}} in obligations(patch)
}

test_break_glass_quiet_for_treatment if not "hipaa.break_glass" in escalated({})

test_minimum_necessary_drops_extra_fields if {
	some o in obligations({"action": {"arguments": {"fields": ["ssn", "diagnoses", "address"]}}})
	o.type == "minimum_necessary"
	o.params.drop == ["address", "ssn"]
	"diagnoses" in o.params.keep
}

test_minimum_necessary_without_field_list if {
	some o in obligations({"action": {"arguments": {}}})
	o.type == "minimum_necessary"
	o.params.drop == []
}

test_deidentify_on_export if {
	{"type": "deidentify", "params": {"method": "hipaa-safe-harbor"}} in obligations({"action": {"tool": "ehr.export"}})
}

test_deidentify_quiet_on_read if every o in obligations({}) {
	o.type != "deidentify"
}
