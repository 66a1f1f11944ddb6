# METADATA
# title: FinTech pack
# description: |
#   Payments and trading controls for banks and broker-dealers: transfer limits per agent
#   and per principal, dual control above a threshold, sanctions screening, new-beneficiary
#   escalation and market hours. Amounts are in the pack's one booking currency.
#   Principal limits and beneficiary lists are keyed by the verified principal; without
#   one the lowest (default) limit and no known beneficiaries apply, and an asserted
#   principal can only lower the limit and shorten the list.
package pdp.packs.fintech

import data.pdp.lib
import data.pdp.trust

# METADATA
# title: Invalid payment
# description: |
#   A payment needs a positive amount, the booking currency, a beneficiary account and a
#   counterparty name (so that screening has something to screen).
# custom:
#   code: fintech.payment_invalid
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_payment
	some msg in _payment_problems
}

# METADATA
# title: Agent transfer limit
# description: A single transfer may not exceed the agent's limit.
# custom:
#   code: fintech.agent_limit_exceeded
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_payment
	limit := object.get(_cfg.limits.agents, input.agent.id, 0)
	_amount > limit
	msg := sprintf("%v exceeds agent %q's transfer limit %v", [_amount, input.agent.id, limit])
}

# METADATA
# title: Principal transfer limit
# description: A single transfer may not exceed the limit of the person it is made for.
# custom:
#   code: fintech.principal_limit_exceeded
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_payment
	some who in trust.principal_ids
	limit := _principal_limit(who)
	_amount > limit
	msg := sprintf("%v exceeds %q's transfer limit %v", [_amount, who, limit])
}

# METADATA
# title: Sanctioned counterparty
# description: |
#   No payment whose arguments name a counterparty or account on the sanctions list. Every
#   string in the arguments (at any depth) is compared by its screening key (see
#   pdp.lib.screening_key: case, spacing, punctuation and Unicode look-alikes do not evade).
# custom:
#   code: fintech.sanctioned_counterparty
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_payment
	some hit in _sanctions_hits
	msg := sprintf("counterparty %q is sanctioned", [hit])
}

# METADATA
# title: Outside market hours
# description: Orders may be placed only while the market is open.
# custom:
#   code: fintech.outside_market_hours
#   severity: medium
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_trading
	not lib.within_window(input.bound.time, _cfg.market_hours)
	msg := sprintf("the market is closed at %s", [input.bound.time])
}

# METADATA
# title: Dual control
# description: Transfers above the threshold need a second person, a payments approver.
# custom:
#   code: fintech.dual_control
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, "payments_approver", 1) if {
	_payment
	_amount > _cfg.dual_control_above
	msg := sprintf("%v is above the dual-control threshold %v", [_amount, _cfg.dual_control_above])
}

# METADATA
# title: New beneficiary
# description: |
#   A transfer to an account not on the verified principal's beneficiary list (or, when
#   the caller names a principal, not on that principal's list too) needs approval.
# custom:
#   code: fintech.new_beneficiary
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, "payments_approver", 1) if {
	_payment
	some who in trust.principal_ids
	known := object.get(_cfg.beneficiaries, who, [])
	not _beneficiary in known
	msg := sprintf("%q is a new beneficiary for %q", [_beneficiary, who])
}

_cfg := data.pdp.packs.fintech.config

_args := input.action.arguments

# A payment tool by the pack's list, or any tool the registry classes as a payment.
_payment if trust.tool in _cfg.payment_tools

_payment if data.pdp.baseline.action_class == "payment"

_trading if trust.tool in _cfg.trading_tools

_trading if data.pdp.baseline.action_class == "trade"

_amount := _args.amount if {
	is_number(_args.amount)
	_args.amount > 0
}

_principal_limit(who) := object.get(_cfg.limits.principals, who, _cfg.limits.default_principal)

_beneficiary := _args.beneficiary if is_string(_args.beneficiary)

_payment_problems contains "amount must be a positive number" if not _amount

_payment_problems contains sprintf("currency must be %s", [_cfg.currency]) if _args.currency != _cfg.currency

_payment_problems contains sprintf("currency must be %s", [_cfg.currency]) if not _args.currency

_payment_problems contains "beneficiary account is required" if not _beneficiary

_payment_problems contains "counterparty name is required for screening" if not _counterparty

_counterparty := _args.counterparty if {
	is_string(_args.counterparty)
	lib.screening_key(_args.counterparty) != ""
}

_sanctioned contains lib.screening_key(entry) if {
	some list in [_cfg.sanctioned.counterparties, _cfg.sanctioned.accounts]
	some entry in list
}

_sanctions_hits contains value if {
	walk(_args, [_, value])
	is_string(value)
	lib.screening_key(value) in _sanctioned
}
