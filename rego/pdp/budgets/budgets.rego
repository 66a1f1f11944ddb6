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
# title: Claims as reserved
# scope: document
# description: |
#   The claims, each under a near-limit threshold it did not cross with its ceiling: the most
#   this allow may bring its counter to without a human. The usage the policy saw was read before
#   it ran, so decisions racing on one counter each saw it without the others'; the PDP's atomic
#   reservation then holds the line the policy drew (one that would cross it is refused,
#   budget.review_threshold, and asked again it escalates). An escalated claim, once approved,
#   and a budget without a threshold reserve up to the limit.
reserved contains object.union(c, {"ceiling": ceiling}) if {
	some c in claims
	ceiling := _ceiling(c)
}

reserved contains c if {
	some c in claims
	not _ceiling(c)
}

# The threshold of a claim that stays under it (used + amount within config.near_limit's share).
_ceiling(c) := ceiling if {
	near := _config.near_limit[c.budget]
	ceiling := floor((c.limit * near.percent) / 100)
	used(c) + c.amount <= ceiling
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
