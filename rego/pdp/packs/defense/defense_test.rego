package pdp.packs.defense_test

import data.pdp.packs.defense

base := {
	"agent": {"id": "intel-analyst"},
	"principal": {"id": "col.diaz@army.example"},
	"action": {"tool": "intel.read", "destination": {"kind": "", "address": ""}},
	"resource": {"classification_level": 5, "compartments": ["SI"]},
}

denied(patch) := r if {
	r := {x.code | some x in defense.deny} with input as object.union(base, patch)
}

escalated(patch) := r if {
	r := {x.code | some x in defense.escalate} with input as object.union(base, patch)
}

test_base_nothing_fires if {
	denied({}) == set()
	escalated({}) == set()
}

test_need_to_know_fires_for_agent if "defense.need_to_know" in denied({"resource": {"compartments": ["HCS"]}})

test_need_to_know_fires_for_principal if {
	"defense.need_to_know" in denied({"principal": {"id": "maj.lee@army.example"}, "resource": {"compartments": ["TK"]}})
}

test_need_to_know_fires_for_unknown_person if {
	"defense.need_to_know" in denied({"principal": {"id": "contractor@example.com"}})
}

test_need_to_know_quiet_without_compartments if {
	denied({"principal": {"id": "contractor@example.com"}, "resource": {"compartments": []}}) == set()
}

test_cross_domain_fires_for_unaccredited if {
	"defense.cross_domain" in denied({"action": {"destination": {"kind": "external", "address": "partner.example"}}})
}

test_cross_domain_quiet_high_side if {
	not "defense.cross_domain" in denied({"action": {"destination": {"address": "jwics-share"}}})
}

test_cross_domain_quiet_unclassified if {
	not "defense.cross_domain" in denied({
		"action": {"destination": {"address": "partner.example"}},
		"resource": {"classification_level": 3, "compartments": []},
	})
}

test_write_down_fires if {
	patch := {"action": {"destination": {"address": "siprnet-share"}}, "resource": {"classification_level": 6}}
	"defense.write_down" in denied(patch)
}

test_write_down_quiet_same_level if {
	not "defense.write_down" in denied({"action": {"destination": {"address": "siprnet-share"}}})
}

test_two_person_rule_fires if "defense.two_person_rule" in escalated({"action": {"tool": "intel.purge"}})

test_two_person_rule_needs_two if {
	some e in defense.escalate with input as object.union(base, {"action": {"tool": "intel.purge"}})
	e.approval == {"role": "security_officer", "count": 2}
}

test_two_person_rule_quiet_for_reads if escalated({}) == set()

test_cross_domain_fires_for_compartmented_below_secret if {
	"defense.cross_domain" in denied({
		"action": {"destination": {"address": "partner.example"}},
		"resource": {"classification_level": 3},
	})
}
