package pdp.packs.defense_test

import data.pdp.fixtures_test as fx
import data.pdp.packs.defense

base := fx.intel

p(patch) := fx.patch(base, patch)

denied(inp) := result if {
	result := {r.code | some r in defense.deny} with input as inp
}

escalated(inp) := result if {
	result := {r.code | some r in defense.escalate} with input as inp
}

share(address) := p({"action": {"tool": "intel.share", "destination": {"address": address}}})

test_defense_quiet_for_a_read_in_analyst if {
	denied(base) == set()
	escalated(base) == set()
}

# ---- need_to_know ----

test_need_to_know_fires_for_agent if {
	"defense.need_to_know" in denied(p({"asserted": {"resource": {"compartments": ["HCS"]}}}))
}

test_need_to_know_fires_for_principal if {
	"defense.need_to_know" in denied(p({"verified": {"principal": {"id": "maj.lee@army.example"}}, "asserted": {"resource": {"compartments": ["TK"]}}}))
}

test_need_to_know_fires_for_unknown_person if {
	"defense.need_to_know" in denied(p({"verified": {"principal": {"id": "pvt.nobody@army.example"}}}))
}

test_need_to_know_fires_when_the_caller_drops_compartments if {
	# Issue 13's attack: claim ["SI"] for a report the catalogue files under SI and HCS.
	top := p({"resource": {"id": "RPT-2026-0502"}, "asserted": {"resource": {"compartments": ["SI"]}}})
	"defense.need_to_know" in denied(top)
}

test_need_to_know_fires_without_verified_principal if {
	"defense.need_to_know" in denied(fx.without(base, ["verified/principal"]))
}

test_need_to_know_fires_for_the_asserted_principal_too if {
	"defense.need_to_know" in denied(p({"asserted": {"principal": {"id": "pvt.nobody@army.example"}}}))
}

test_need_to_know_fires_for_an_uncatalogued_report if {
	"defense.need_to_know" in denied(p({"resource": {"id": "RPT-1999-0001"}}))
}

test_need_to_know_quiet_without_compartments if {
	not "defense.need_to_know" in denied(p({"resource": {"type": "customer_record", "id": "C-1042"}}))
}

test_need_to_know_quiet_when_read_in if not "defense.need_to_know" in denied(base)

# ---- cross_domain ----

test_cross_domain_fires_for_unaccredited if "defense.cross_domain" in denied(share("ops@army.example"))

test_cross_domain_fires_for_empty_destination if {
	# Issue 15: an egress with no address goes to the low side, not past the rule.
	"defense.cross_domain" in denied(share(""))
	"defense.cross_domain" in denied(fx.without(share(""), ["action/destination"]))
}

test_cross_domain_fires_when_the_caller_says_external if {
	"defense.cross_domain" in denied(p({"asserted": {"destination": {"kind": "external"}}}))
}

test_cross_domain_quiet_high_side if not "defense.cross_domain" in denied(share("jwics-share"))

test_cross_domain_quiet_without_egress if not "defense.cross_domain" in denied(base)

test_cross_domain_quiet_unclassified if {
	not "defense.cross_domain" in denied(fx.patch(share("ops@army.example"), {"resource": {"type": "mcp.file", "id": "/tmp/x"}}))
}

test_cross_domain_fires_when_the_caller_claims_public if {
	claim := fx.patch(share("ops@army.example"), {"asserted": {"resource": {"classification": "public", "classification_level": 1, "compartments": []}}})
	"defense.cross_domain" in denied(claim)
}

# ---- write_down ----

test_write_down_fires if {
	top := fx.patch(share("siprnet-share"), {"resource": {"id": "RPT-2026-0502"}})
	"defense.write_down" in denied(top)
}

test_write_down_fires_for_empty_or_unknown_destination if {
	"defense.write_down" in denied(share(""))
	"defense.write_down" in denied(share("usb-stick"))
}

test_write_down_quiet_same_level if not "defense.write_down" in denied(share("siprnet-share"))

# ---- two_person_rule ----

purge := p({"action": {"tool": "intel.purge"}})

test_two_person_rule_fires if "defense.two_person_rule" in escalated(purge)

test_two_person_rule_fires_when_the_caller_claims_public if {
	claim := fx.patch(purge, {"asserted": {"resource": {"classification": "public", "classification_level": 1, "compartments": []}}})
	"defense.two_person_rule" in escalated(claim)
}

test_two_person_rule_needs_two if {
	some e in defense.escalate with input as purge
	e.approval == {"role": "security_officer", "count": 2}
}

test_two_person_rule_quiet_for_reads if escalated(base) == set()

test_need_to_know_fires_for_compartmented_below_secret if {
	# Any compartment makes data classified, whatever its level.
	doc := p({"resource": {"type": "customer_record", "id": "C-1042"}, "asserted": {"resource": {"compartments": ["HCS"]}}})
	"defense.need_to_know" in denied(doc)
}
