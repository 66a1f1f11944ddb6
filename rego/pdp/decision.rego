# METADATA
# title: PDP decision entrypoint
# description: |
#   Combines the rules of this package into one decision: any deny wins; otherwise an
#   escalation gives require_approval; otherwise allow only when an allow rule matched.
#   Anything else is a deny (fail closed).
package pdp

# METADATA
# title: Decision
# description: The document the PDP queries for every Decide call.
# entrypoint: true
decision := {
	"outcome": outcome,
	"reasons": [r | some r in _reasons],
	"obligations": [o | some o in obligations],
}

default outcome := "deny"

outcome := "deny" if {
	count(deny) > 0
} else := "require_approval" if {
	count(escalate) > 0
} else := "allow" if {
	count(allow) > 0
}

# The reasons that explain the outcome: the denials when denied, the escalations when
# escalated, the grants when allowed, and a default-deny reason when nothing matched.
_reasons := deny if count(deny) > 0

else := escalate if count(escalate) > 0

else := allow if count(allow) > 0

else := {_reason("policy.no_matching_allow", "no allow rule matched this action", "default")}

_agent := data.pdp.agents[input.agent.id]

_reason(code, message, rule) := {"code": code, "message": message, "rule": rule}

# METADATA
# title: Unregistered agent
# description: Only agents in the registry may act.
# custom:
#   code: agent.unregistered
#   severity: high
deny contains _reason("agent.unregistered", sprintf("agent %q is not registered", [input.agent.id]), "agent_registered") if {
	not data.pdp.agents[input.agent.id]
}

# METADATA
# title: Disabled agent
# description: The kill switch; a disabled agent may do nothing.
# custom:
#   code: agent.disabled
#   severity: critical
deny contains _reason("agent.disabled", sprintf("agent %q is disabled", [input.agent.id]), "agent_enabled") if {
	_agent.enabled == false
}

# METADATA
# title: Tool not granted
# description: An agent may use only the tools its registry entry grants.
# custom:
#   code: tool.not_granted
#   severity: high
deny contains _reason("tool.not_granted", sprintf("agent %q may not use tool %q", [input.agent.id, input.action.tool]), "tool_granted") if {
	_agent
	not input.action.tool in _agent.tools
}

# METADATA
# title: Critical risk
# description: Actions at or above the critical risk score are denied.
# custom:
#   code: risk.critical
#   severity: critical
deny contains _reason("risk.critical", sprintf("risk score %v is critical", [input.risk.score]), "risk_tier") if {
	input.risk.score >= data.pdp.risk.deny_at
}

# METADATA
# title: High risk
# description: High-risk actions need a human approval.
# custom:
#   code: risk.high
#   severity: high
escalate contains _reason("risk.high", sprintf("risk score %v needs approval", [input.risk.score]), "risk_tier") if {
	input.risk.score >= data.pdp.risk.escalate_at
	input.risk.score < data.pdp.risk.deny_at
}

# METADATA
# title: Tool granted
# description: The agent's registry entry grants the tool.
# custom:
#   code: tool.granted
#   severity: low
allow contains _reason("tool.granted", sprintf("agent %q may use tool %q", [input.agent.id, input.action.tool]), "tool_granted") if {
	_agent.enabled == true
	input.action.tool in _agent.tools
}

obligations contains {"type": "audit", "params": {"level": "standard"}} if {
	outcome == "allow"
}
