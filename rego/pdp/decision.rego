# METADATA
# title: PDP decision entrypoint
# description: |
#   Combines every rule module into one decision, once, for the whole bundle:
#   any deny wins; otherwise an escalation not satisfied by valid approvals gives
#   require_approval; otherwise allow only when some allow rule matched; otherwise deny.
#   Modules are the baseline (every deployment) and the packs whose data says enabled.
package pdp

import data.pdp.approvals
import data.pdp.budgets
import data.pdp.lib
import data.pdp.trust

# METADATA
# title: Decision
# description: |
#   The document the PDP queries for every Decide call: the outcome, its reasons and
#   obligations, and the looked-up facts it rested on (for the signed record).
# entrypoint: true
decision := {
	"outcome": outcome,
	"reasons": [object.remove(r, {"approval"}) | some r in _reasons],
	"obligations": [o | some o in _obligations],
	"facts": trust.facts,
	"budgets": _budgets,
}

# METADATA
# title: Batch decision
# description: |
#   The decision for each of input.requests, in order: what the PDP's DecideBatch queries,
#   so that one evaluation answers several actions (e.g. the parallel tool calls of one
#   model turn). Each element is exactly what `decision` is for that input alone.
# entrypoint: true
decisions := [d |
	some r in input.requests

	# `with` applies to an expression, not to a comprehension's term: the assignment is needed.
	# regal ignore:comprehension-term-assignment
	d := decision with input as r
]

default outcome := "deny"

outcome := _undenied if count(deny) == 0

_undenied := "require_approval" if {
	count(pending) > 0
} else := "allow" if {
	count(allow) > 0
}

# METADATA
# title: Enabled packs
# description: Names of the packs under data.pdp.packs whose data sets `enabled` to true.
enabled_packs contains name if {
	some name
	data.pdp.packs[name].enabled == true
}

# METADATA
# title: Denials
# scope: document
# description: Every deny reason of the baseline and the enabled packs.
deny contains r if some r in data.pdp.baseline.deny

deny contains r if {
	some name in enabled_packs
	some r in data.pdp.packs[name].deny
}

deny contains r if some r in budgets.deny

# METADATA
# title: Escalations
# scope: document
# description: Every escalation (a reason with an approval requirement), approved or not.
escalate contains r if some r in data.pdp.baseline.escalate

escalate contains r if {
	some name in enabled_packs
	some r in data.pdp.packs[name].escalate
}

escalate contains r if some r in budgets.escalate

# METADATA
# title: Grants
# scope: document
# description: Every allow reason; without one the default is deny.
allow contains r if some r in data.pdp.baseline.allow

# METADATA
# title: Pending escalations
# description: Escalations that the request's valid approvals do not satisfy.
pending contains e if {
	some e in escalate
	not approvals.satisfied(e.approval)
}

# The reasons that explain the outcome: the denials when denied, the pending escalations
# when approval is needed, the grants (and the approvals used) when allowed, and the
# default-deny reason when nothing matched.
_reasons := deny if {
	count(deny) > 0
} else := pending if {
	outcome == "require_approval"
} else := allow | approvals.accepted(escalate) if {
	outcome == "allow"
} else := {_no_matching_allow}

# METADATA
# title: No matching allow
# description: Nothing denied, escalated or granted the action, so the default deny applies.
# custom:
#   code: policy.no_matching_allow
#   severity: medium
_no_matching_allow := lib.reason(rego.metadata.rule(), "no allow rule matched this action")

# Obligations bind the PEP only on the outcomes that let something happen: the modules'
# obligations and an audit trail on allow; whom to ask on require_approval.
_obligations := obligations if outcome == "allow"

_obligations := {_approval_request(e) | some e in pending} if outcome == "require_approval"

_obligations := set() if outcome == "deny"

# METADATA
# title: Obligations
# scope: document
# description: Every obligation the modules attach, plus the audit obligation.
obligations contains {"type": "audit", "params": {"level": "standard"}}

obligations contains o if some o in data.pdp.baseline.obligations

obligations contains o if {
	some name in enabled_packs
	some o in data.pdp.packs[name].obligations
}

_approval_request(e) := {"type": "approval.required", "params": {
	"reason": e.code,
	"role": e.approval.role,
	"count": e.approval.count,
	"action_digest": input.bound.action_digest,
}}

# Budget claims bind only an allow: the PDP reserves them before it answers (rego/pdp/budgets).
# (A default, not a second body `if outcome != "allow"`: with two bodies, OPA evaluated the whole
# decision twice for each element of a batch, `decisions`, where input is replaced by `with`.)
default _budgets := []

_budgets := [c | some c in budgets.reserved] if outcome == "allow"
