# METADATA
# title: Baseline agent governance
# description: |
#   Rules every deployment runs: identity and registration, capabilities, environment,
#   risk tiers, data protection and lineage. Each file holds one concern; all yield into
#   the same deny / escalate / allow / obligations sets that pdp.decision combines.
#   Facts come from pdp.trust, which gives each its provenance (docs/trust-model.md).
package pdp.baseline

import data.pdp.lib
import data.pdp.trust

# The registry entry of the acting agent (undefined when it is not registered).
agent := data.pdp.baseline.agents[input.agent.id]

# The action class of the tool; an unknown tool is treated as a write (fail safe).
action_class := object.get(data.pdp.baseline.tools, [trust.tool, "class"], "write")

# METADATA
# title: Unregistered agent
# description: Only agents in the registry may act.
# custom:
#   code: agent.unregistered
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	not agent
	msg := sprintf("agent %q is not registered", [input.agent.id])
}

# METADATA
# title: Disabled agent
# description: The kill switch; a disabled agent may do nothing.
# custom:
#   code: agent.disabled
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent.enabled != true
	msg := sprintf("agent %q is disabled", [input.agent.id])
}

# METADATA
# title: Caller not bound to the agent
# description: |
#   An agent whose registry entry lists `callers` may be acted for only by an enforcement
#   point that authenticated (mTLS) as one of them, as the PDP bound it in input.bound.caller:
#   a `spiffe://` name matches only the certificate's URI SANs; any other name matches its
#   subject or SANs. Anyone else claiming to speak for the agent is refused. Without
#   `callers`, any caller may name the agent.
# custom:
#   code: agent.caller_not_bound
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent.callers
	not _caller_bound
	msg := sprintf("caller %q may not act for agent %q", [_caller_name, input.agent.id])
}

# METADATA
# title: Agent version not allowed
# description: |
#   Only the agent versions its registry entry lists may act. The version is asserted (no
#   one vouches for it), so it can only deny: an unlisted or missing version is refused.
# custom:
#   code: agent.version_not_allowed
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent
	version := trust.asserted(["agent", "version"], "")
	not version in agent.versions
	msg := sprintf("agent %q version %q is not an allowed version", [input.agent.id, version])
}

_caller := object.get(input.bound, "caller", {})

_caller_names(name) := object.get(_caller, "uri_sans", []) if startswith(name, "spiffe://")

_caller_names(name) := array.concat([object.get(_caller, "subject", "")], object.get(_caller, "sans", [])) if {
	not startswith(name, "spiffe://")
}

# The caller is one the agent's registry entry binds it to (authenticated by mTLS).
_caller_bound if {
	_caller.authenticated == true
	some name in agent.callers
	name in _caller_names(name)
}

_caller_name := name if {
	name := _caller.subject
	name != ""
} else := object.get(_caller, "peer", "")
