package pdp.baseline

import data.pdp.lib
import data.pdp.trust

# METADATA
# title: Change reference missing
# description: |
#   Changes in a controlled environment (by the PEP registry; an unknown PEP counts as
#   production) must cite a change record the catalogue holds as approved, for this agent,
#   valid at the PDP's clock.
# custom:
#   code: change.reference_missing
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	action_class in data.pdp.baseline.change_control.classes
	ref := trust.asserted(["environment", "change_ref"], "")
	not _approved_change(ref)
	some env in trust.environments
	env in data.pdp.baseline.change_control.environments
	msg := sprintf("%s in %s needs an approved change reference (got %q)", [trust.tool, env, ref])
}

# METADATA
# title: Outside time window
# description: An agent with a time window that acts outside it needs a duty manager's approval.
# custom:
#   code: time.outside_window
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, "duty_manager", 1) if {
	window := agent.window
	not lib.within_window(input.bound.time, window)
	msg := sprintf("outside the agent's window %v %s-%s UTC", [window.days, window.from, window.to])
}

# A change record the catalogue holds as approved, covering this agent, at the PDP's clock.
_approved_change(ref) if {
	change := data.pdp.catalog.changes[ref]
	change.status == "approved"
	input.agent.id in change.agents
	now := time.parse_rfc3339_ns(input.bound.time)
	now >= time.parse_rfc3339_ns(change.from)
	now < time.parse_rfc3339_ns(change.to)
}
