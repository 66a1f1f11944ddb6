# METADATA
# title: Approvals
# description: |
#   Which of the request's approvals count. An approval is valid only if its approver is in
#   the approver registry (roles come from the registry, never from the request), is neither
#   the agent nor its principal (no self-approval), has not expired at the PDP's clock, and is
#   bound to this exact action: its action_digest equals the digest the PDP computed over
#   tool + operation + arguments + resource + destination.
package pdp.approvals

import data.pdp.lib

# METADATA
# title: Valid approvals
# description: The request's approvals that pass every check above.
valid contains a if {
	some a in input.approvals
	a.action_digest == input.action_digest
	data.pdp.approvals.approvers[a.approver_id].active == true
	not a.approver_id in {input.agent.id, input.principal.id}
	time.parse_rfc3339_ns(a.expires_at) > time.parse_rfc3339_ns(input.request_time)
}

# METADATA
# title: Requirement satisfied
# description: At least `count` distinct valid approvers hold the required role.
satisfied(requirement) if {
	approvers := {a.approver_id |
		some a in valid
		requirement.role in data.pdp.approvals.approvers[a.approver_id].roles
	}
	count(approvers) >= requirement.count
}

# METADATA
# title: Approval accepted
# description: For an allowed action, one reason per escalation its approvals satisfied.
# custom:
#   code: approval.accepted
#   severity: info
accepted(escalations) := {lib.reason(rego.metadata.rule(), msg) |
	some e in escalations
	satisfied(e.approval)
	msg := sprintf("%s approved by %d %s", [e.code, e.approval.count, e.approval.role])
}
