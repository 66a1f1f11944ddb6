package pdp.mask_test

import data.pdp.mask

ehr := {
	"action": {"tool": "ehr.read", "arguments": {
		"patient_id": "patient-4711",
		"fields": ["diagnoses"],
		"contacts": [{"phone": "555-0100", "role": "next/of~kin"}],
		"notes": "free text",
	}},
	"resource": {"type": "patient_record", "id": "patient-4711/summary"},
	"asserted": {"resource": {"owner": "patient-4711"}},
}

ehr_decision := {
	"outcome": "allow",
	"reasons": [{"code": "hipaa.treatment"}],
	"facts": {"catalog_revision": "r1", "resource": {"classification": "restricted", "owner": "patient-4711"}},
}

payment := {
	"action": {"tool": "payments.transfer", "arguments": {"amount": 1, "beneficiary": "DE89370400440532013000"}},
	"resource": {"type": "account", "id": "ACC-1001"},
}

test_pointers_healthcare_masks_phi if {
	mask.pointers == {
		"mask": {
			"/action/arguments/patient_id", "/action/arguments/contacts/0/phone",
			"/resource/id", "/asserted/resource/owner",
		},
		"erase": {"/action/arguments/notes"},
	} with input as ehr
}

test_pointers_fintech_masks_account_numbers if {
	mask.pointers == {"mask": {"/action/arguments/beneficiary", "/resource/id"}, "erase": set()} with input as payment
}

test_pointers_other_tools_mask_nothing if {
	mask.pointers == {"mask": set(), "erase": set()} with input as {"action": {"tool": "crm.lookup", "arguments": {}}}
}

test_pointers_no_action_masks_nothing if {
	mask.pointers == {"mask": set(), "erase": set()} with input as {}
}

test_escape_json_pointer_tokens if {
	mask._escape("a/b~c") == "a~1b~0c"
	mask._escape(3) == "3"
}

test_batch_one_per_request if {
	answers := mask.batch with input as {"requests": [payment, {}]}
	count(answers) == 2
	answers[1] == {"mask": set(), "erase": set()}
}

test_answer_is_the_decision_with_its_masks if {
	a := mask.answer with input as payment with data.pdp.decision as {"outcome": "allow"}
	a.decision == {"outcome": "allow"}
	a.hide == {"mask": {"/action/arguments/beneficiary", "/resource/id"}, "erase": set()}
}

test_answers_one_per_request if {
	answers := mask.answers with input as {"requests": [payment, {}]} with data.pdp.decision as {"outcome": "deny"}
	[a.decision.outcome | some a in answers] == ["deny", "deny"]
	answers[1].hide == {"mask": set(), "erase": set()}
}

test_answer_masks_the_facts_a_rule_names if {
	a := mask.answer with input as ehr with data.pdp.decision as ehr_decision
	a.decision.facts.resource == {"classification": "restricted", "owner": "**masked**"}
	a.decision.outcome == "allow"
	a.decision.reasons == ehr_decision.reasons
	a.decision.facts.catalog_revision == "r1"
}

test_answer_without_the_named_facts_is_the_decision if {
	d := {"outcome": "deny", "reasons": [{"code": "x"}], "facts": {}}
	a := mask.answer with input as ehr with data.pdp.decision as d
	a.decision == d
}

test_answer_other_tools_keep_their_facts if {
	d := object.union(ehr_decision, {"facts": {"resource": {"owner": "bob@bank.example"}}})
	a := mask.answer with input as payment with data.pdp.decision as d
	a.decision == d
}
