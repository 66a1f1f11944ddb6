package pdp.baseline

import data.pdp.lib

# METADATA
# title: Change reference missing
# description: Changes in a controlled environment must cite an approved change record.
# custom:
#   code: change.reference_missing
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	input.environment.name in data.pdp.baseline.change_control.environments
	action_class in data.pdp.baseline.change_control.classes
	input.environment.change_ref == ""
	msg := sprintf("%s in %s needs a change reference", [input.action.tool, input.environment.name])
}

# METADATA
# title: Outside time window
# description: An agent with a time window that acts outside it needs a duty manager's approval.
# custom:
#   code: time.outside_window
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, "duty_manager", 1) if {
	window := agent.window
	not lib.within_window(input.request_time, window)
	msg := sprintf("outside the agent's window %v %s-%s UTC", [window.days, window.from, window.to])
}
