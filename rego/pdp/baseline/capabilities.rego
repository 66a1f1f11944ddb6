package pdp.baseline

import data.pdp.lib

# METADATA
# title: Tool not granted
# description: An agent may use only the tools its registry entry grants.
# custom:
#   code: tool.not_granted
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent
	not input.action.tool in agent.tools
	msg := sprintf("agent %q may not use tool %q", [input.agent.id, input.action.tool])
}

# METADATA
# title: Tool granted
# description: An enabled agent, at an allowed version, uses a tool its entry grants.
# custom:
#   code: tool.granted
#   severity: info
allow contains lib.reason(rego.metadata.rule(), msg) if {
	agent.enabled == true
	input.agent.version in agent.versions
	input.action.tool in agent.tools
	msg := sprintf("agent %q may use tool %q", [input.agent.id, input.action.tool])
}
