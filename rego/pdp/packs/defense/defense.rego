# METADATA
# title: Defense pack
# description: |
#   Controls for classified work (SECRET and above, or any compartment): need-to-know
#   compartments for both the agent and its principal, no write-down, no cross-domain
#   egress, and the two-person rule for destructive actions. Labels come from the
#   catalogue (asserted labels only add); the principal is the verified one (and the
#   asserted one too when named); an egress with an empty or unknown destination goes to
#   the low side.
package pdp.packs.defense

import data.pdp.lib
import data.pdp.trust

# METADATA
# title: Need to know
# description: |
#   The agent and the principal (verified; asserted too when named; none verified = read
#   into nothing) must be read into every compartment of the resource.
# custom:
#   code: defense.need_to_know
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	some who in ({input.agent.id} | trust.principal_ids)
	missing := trust.compartments - _compartments(who)
	count(missing) > 0
	msg := sprintf("%q is not read into %v", [who, sort(missing)])
}

# METADATA
# title: Cross-domain egress
# description: |
#   Classified data goes only to destinations accredited on the high side; an egress with
#   an empty or unknown destination is the low side.
# custom:
#   code: defense.cross_domain
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_classified
	trust.egress
	object.get(_cfg.destinations, [trust.address, "domain"], "") != "high"
	msg := sprintf("%q is not an accredited high-side destination", [trust.address])
}

# METADATA
# title: Write-down
# description: |
#   No writing classified data to a destination accredited at a lower level; an empty or
#   unknown destination is accredited at no level.
# custom:
#   code: defense.write_down
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_classified
	trust.egress
	level := object.get(_cfg.destinations, [trust.address, "level"], 0)
	level < trust.resource_level
	msg := sprintf("destination accredited to level %d, below the data's level", [level])
}

# METADATA
# title: Two-person rule
# description: Destructive actions on classified resources need two security officers.
# custom:
#   code: defense.two_person_rule
#   severity: high
escalate contains lib.escalation(rego.metadata.rule(), msg, rule.role, rule.count) if {
	_classified
	rule := _cfg.two_person
	data.pdp.baseline.action_class in rule.classes
	msg := sprintf("%s on classified data needs %d %s approvals", [trust.tool, rule.count, rule.role])
}

_cfg := data.pdp.packs.defense.config

_classified if trust.resource_level >= _cfg.applies_from_level

_classified if count(trust.compartments) > 0

_compartments(who) := {c | some c in _cfg.personnel[who].compartments}

_compartments(who) := set() if not _cfg.personnel[who]
