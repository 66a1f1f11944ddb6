package pdp.baseline

import data.pdp.lib
import data.pdp.trust

# METADATA
# title: Tool not granted
# description: An agent may use only the tools its registry entry grants.
# custom:
#   code: tool.not_granted
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent
	not trust.tool in agent.tools
	msg := sprintf("agent %q may not use tool %q", [input.agent.id, trust.tool])
}

# METADATA
# title: Resource required
# description: |
#   A tool whose registry entry says `resource_required` acts on a named resource: without
#   a resource type and id nothing could be looked up in the catalogue, so it is refused.
# custom:
#   code: resource.required
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	data.pdp.baseline.tools[trust.tool].resource_required == true
	"" in {trust.resource_type, trust.resource_id}
	msg := sprintf("tool %q needs a resource type and id", [trust.tool])
}

# METADATA
# title: Tool granted
# description: |
#   An enabled agent uses a tool its entry grants. Only the question and the registry
#   decide; the asserted version can only deny (agent.version_not_allowed).
# custom:
#   code: tool.granted
#   severity: info
allow contains lib.reason(rego.metadata.rule(), msg) if {
	agent.enabled == true
	trust.tool in agent.tools
	msg := sprintf("agent %q may use tool %q", [input.agent.id, trust.tool])
}
