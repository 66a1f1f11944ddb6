# METADATA
# title: Approvals
# description: |
#   Which of the approvals the PDP bound to the request count (input.bound.approvals; the
#   PDP puts only approvals it verified there). An approval is valid only if its approver is
#   in the approver registry (roles come from the registry, never from the request), is
#   neither the agent nor its principal, verified or asserted (no self-approval), has not
#   expired at the PDP's clock, and is bound to this exact action: its action_digest equals
#   the digest the PDP computed over the question.
package pdp.approvals

import data.pdp.lib
import data.pdp.trust

# Who may not approve this action: the agent and every principal it acts for.
_self := {input.agent.id, trust.verified_principal_id, trust.asserted_principal_id} - {""}

# METADATA
# title: Valid approvals
# description: The bound approvals that pass every check above.
valid contains a if {
	some a in input.bound.approvals
	a.action_digest == input.bound.action_digest
	data.pdp.approvals.approvers[a.approver_id].active == true
	count({a.approver_id} & _self) == 0
	time.parse_rfc3339_ns(a.expires_at) > time.parse_rfc3339_ns(input.bound.time)
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
