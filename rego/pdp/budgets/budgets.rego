# METADATA
# title: Budgets
# description: |
#   Cumulative controls across calls. Each rule here yields budget claims
#   {"budget", "key", "amount", "limit", "window"} (integers: minor units or calls) that the PDP
#   reserves atomically in its shared state store before it answers allow (more than fits is
#   DENY budget.exceeded, decided by the PDP across all replicas). The PDP binds what is already
#   used into input.bound.usage[budget][key][window] before the policy runs, so the rules below
#   deny what cannot fit and escalate what would come near a limit.
package pdp.budgets

import data.pdp.lib

# METADATA
# title: Budget exceeded
# description: What is already used plus this action's amount is above the claim's limit.
# custom:
#   code: budget.exceeded
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	some c in claims
	used(c) + c.amount > c.limit
	msg := sprintf(
		"budget %s for %s: %d used + %d would exceed the limit of %d per %s",
		[c.budget, c.key, used(c), c.amount, c.limit, c.window],
	)
}

# METADATA
# title: Budget near its limit
# description: |
#   The action fits its budget but would take it above the share configured for that budget
#   (config.near_limit): a human with the configured role approves it.
# custom:
#   code: budget.near_limit
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, near.role, 1) if {
	some c in claims
	near := _config.near_limit[c.budget]
	after := used(c) + c.amount
	after <= c.limit
	after * 100 > c.limit * near.percent
	msg := sprintf(
		"budget %s for %s would be at %d of %d per %s (above %d%%)",
		[c.budget, c.key, after, c.limit, c.window, near.percent],
	)
}

# METADATA
# title: Used
# description: What the PDP bound as used of the claim's counter in its window (0 when not bound).
used(c) := object.get(input, ["bound", "usage", c.budget, c.key, c.window], 0)

_config := data.pdp.budgets.config

# The facts budgets are keyed by. Keys rest on what the PDP bound or verified, never on what the
# caller merely asserted, or an agent could spread its spending over names it makes up.
_agent := input.agent.id

_tool := input.action.tool

_pack_enabled(name) if data.pdp.packs[name].enabled == true
