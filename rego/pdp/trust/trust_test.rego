package pdp.trust_test

import data.pdp.fixtures_test as fx
import data.pdp.trust

p(patch) := fx.patch(fx.base, patch)

# ---- asserted values of the wrong type count as not said ----

test_asserted_wrong_types_are_ignored if {
	odd := p({"asserted": {"resource": {"data_categories": "pii", "classification": 4, "classification_level": "9"}, "lineage": {}}})
	trust.data_categories == {"pii"} with input as odd
	trust.resource_level == 2 with input as odd
	trust.asserted_lineage == [] with input as odd
}

test_asserted_missing_subtree_is_empty if {
	trust.asserted(["agent", "version"], "none") == "none" with input as fx.without(fx.base, ["asserted"])
}

# ---- the question ----

test_question_fields_of_the_wrong_type_are_empty if {
	odd := p({"action": {"tool": 7}, "resource": {"type": ["x"], "id": null}})
	trust.tool == "" with input as odd
	trust.resource_type == "" with input as odd
	trust.resource_id == "" with input as odd
}

# ---- resource labels ----

test_catalogued_by_entry if {
	trust.catalogued with input as fx.base
	trust.resource_owner == "customer-care" with input as fx.base
}

test_catalogued_by_type_default if {
	doc := p({"resource": {"id": "C-7"}})
	trust.catalogued with input as doc
	trust.resource_level == 3 with input as doc
	trust.data_categories == {"pii"} with input as doc
	trust.resource_owner == "" with input as doc
}

test_uncatalogued_type_is_most_restrictive if {
	doc := p({"resource": {"type": "vault", "id": "V-1"}})
	not trust.catalogued with input as doc
	trust.resource_level == 6 with input as doc
	trust.data_categories == {"pii", "phi"} with input as doc
	trust.compartments == {"UNCATALOGUED"} with input as doc
}

test_type_without_id_is_most_restrictive if {
	trust.resource_level == 6 with input as p({"resource": {"id": ""}})
}

test_no_resource_is_the_unlabelled_default if {
	doc := p({"resource": {"type": "", "id": ""}})
	trust.resource_level == 2 with input as doc
	trust.resource_classification == "internal" with input as doc
	trust.data_categories == set() with input as doc
}

test_catalogue_entry_without_classification_is_most_restrictive if {
	doc := p({"resource": {"type": "vault", "id": "V-1"}})
	trust.catalogued with input as doc with data.pdp.catalog.resource_types.vault as {"owner": "x"}
	trust.resource_level == 6 with input as doc with data.pdp.catalog.resource_types.vault as {"owner": "x"}
}

test_asserted_labels_only_add if {
	doc := p({"asserted": {"resource": {
		"classification": "public", "classification_level": 1,
		"data_categories": ["marketing"], "compartments": ["TK"], "owner": "someone-else",
	}}})
	trust.resource_level == 2 with input as doc
	trust.data_categories == {"pii", "marketing"} with input as doc
	trust.compartments == {"TK"} with input as doc
	trust.resource_owner == "customer-care" with input as doc
}

test_resource_classification_names_an_out_of_range_level if {
	trust.resource_classification == "level-9" with input as p({"asserted": {"resource": {"classification_level": 9}}})
}

# ---- principal and purpose ----

test_no_verified_principal_has_no_roles if {
	doc := fx.without(fx.base, ["verified/principal"])
	trust.verified_principal_id == "" with input as doc
	trust.verified_roles == set() with input as doc
	trust.principal_ids == {"", "alice@example.com"} with input as doc
}

test_principal_token_without_subject_is_no_principal if {
	trust.verified_roles == set() with input as p({"verified": {"principal": {"id": ""}}})
}

test_purpose_prefers_the_token if {
	doc := p({"verified": {"principal": {"purpose_of_use": "payment"}}, "asserted": {"purpose_of_use": "treatment"}})
	trust.purpose == "payment" with input as doc
	trust.purpose_mismatch with input as doc
}

test_purpose_ignores_an_asserted_purpose_without_a_token_one if {
	# By default only the token's purpose counts: an asserted one may not relax a decision.
	doc := p({"verified": {"principal": {"purpose_of_use": ""}}, "asserted": {"purpose_of_use": "treatment"}})
	trust.purpose == "" with input as doc
	not trust.purpose_mismatch with input as doc
	trust.purpose == "treatment" with input as doc with data.pdp.baseline.purpose_from_token_only as false
}

test_purpose_ignores_an_asserted_purpose_unless_explicitly_relaxed if {
	# Only an explicit `false` relaxes it: a malformed (or missing) setting keeps the default.
	doc := p({"verified": {"principal": {"purpose_of_use": ""}}, "asserted": {"purpose_of_use": "treatment"}})
	trust.purpose == "" with input as doc with data.pdp.baseline.purpose_from_token_only as "false"
	trust.purpose == "" with input as doc with data.pdp.baseline.purpose_from_token_only as null
}

# ---- environment ----

test_environment_unknown_pep_is_production if trust.environments == {"production"} with input as fx.base

test_environment_from_the_pep_registry if {
	staging := {"authenticated": true, "subject": "", "uri_sans": ["spiffe://bank.example/staging-gateway"]}
	trust.environments == {"staging"} with input as p({"bound": {"caller": staging}, "asserted": {"environment": {"name": ""}}})
}

test_environment_unauthenticated_names_are_not_looked_up if {
	claim := {"authenticated": false, "subject": "pep-staging", "uri_sans": []}
	trust.environments == {"production"} with input as p({"bound": {"caller": claim}, "asserted": {"environment": {"name": ""}}})
}

env_of(caller) := envs if {
	envs := trust.environments with input as p({"bound": {"caller": caller}, "asserted": {"environment": {"name": ""}}})
}

test_environment_spiffe_id_in_subject_does_not_match if {
	env_of({"authenticated": true, "subject": "spiffe://bank.example/staging-gateway", "sans": [], "uri_sans": []}) == {"production"}
}

test_environment_spiffe_id_in_dns_san_does_not_match if {
	env_of({"authenticated": true, "subject": "", "sans": ["spiffe://bank.example/staging-gateway"], "uri_sans": []}) == {"production"}
}

test_environment_spiffe_id_in_uri_san_matches if {
	env_of({"authenticated": true, "subject": "spiffe://bank.example/deploy-gateway", "sans": [], "uri_sans": ["spiffe://bank.example/staging-gateway"]}) == {"staging"}
}

test_environment_plain_name_matches_the_subject if {
	env_of({"authenticated": true, "subject": "pep-staging", "sans": [], "uri_sans": []}) == {"staging"}
}

test_environment_plain_name_in_a_uri_san_does_not_match if {
	env_of({"authenticated": true, "subject": "", "sans": [], "uri_sans": ["pep-staging"]}) == {"production"}
}

test_environment_empty_subject_matches_no_empty_registry_name if {
	caller := {"authenticated": true, "subject": "", "sans": [], "uri_sans": []}
	env_of(caller) == {"production"} with data.pdp.catalog.peps[""] as {"environment": "staging"}
}

test_environment_asserted_name_adds if {
	trust.environments == {"production", "dev"} with input as p({"asserted": {"environment": {"name": "dev"}}})
}

# ---- destination ----

host(address) := h if {
	h := trust.destination_host with input as p({"action": {"destination": {"address": address}}})
}

test_destination_host_forms if {
	host("Someone@Gmail.Example") == "gmail.example"
	host("https://user@api.corp.example:8443/x?y") == "api.corp.example"
	host("http://[fd00::1]:80/") == "fd00::1"
	host("relay.corp.example.") == "relay.corp.example"
	host("relay.corp.example:25") == "relay.corp.example"
	host("share/path") == "share"
	host("") == ""
}

test_destination_internal_fact if {
	trust.destination_internal with input as fx.base
	not trust.destination_internal with input as p({"action": {"destination": {"address": "x@gmail.example"}}})
}

test_egress_for_an_address_on_any_tool if {
	trust.egress with input as p({"action": {"destination": {"address": "ops@corp.example"}}})
	not trust.leaves_organisation with input as p({"action": {"destination": {"address": "ops@corp.example"}}})
}

# ---- risk ----

test_risk_verified_score if trust.risk_score == 10 with input as fx.base

test_risk_asserted_raises if trust.risk_score == 50 with input as p({"asserted": {"risk": {"score": 50}}})

test_risk_unverified_read_is_asserted_or_zero if {
	trust.risk_score == 0 with input as fx.without(fx.base, ["verified/risk", "asserted/risk"])
}

test_risk_unverified_payment_is_high if {
	trust.risk_score == data.pdp.baseline.risk.unverified_score with input as fx.without(fx.transfer, ["verified/risk"])
}

test_risk_unverified_non_number_is_not_verified if {
	not trust.risk_verified with input as p({"verified": {"risk": {"score": "5"}}})
}

# ---- lineage ----

test_verified_lineage_of_the_wrong_type_is_none if {
	trust.verified_lineage == [] with input as p({"verified": {"lineage": "core-banking"}})
}
