# METADATA
# title: FinTech pack
# description: |
#   Payments and trading controls for banks and broker-dealers: transfer limits per agent
#   and per principal, dual control above a threshold, sanctions screening, new-beneficiary
#   escalation and market hours. Amounts are in the pack's one booking currency.
package pdp.packs.fintech

import data.pdp.lib

# METADATA
# title: Invalid payment
# description: A payment needs a positive amount, the booking currency and a beneficiary account.
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
	_amount > _principal_limit
	msg := sprintf("%v exceeds %q's transfer limit %v", [_amount, input.principal.id, _principal_limit])
}

# METADATA
# title: Sanctioned counterparty
# description: No payment to a counterparty or account on the sanctions list.
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
	input.action.tool in _cfg.trading_tools
	not lib.within_window(input.request_time, _cfg.market_hours)
	msg := sprintf("the market is closed at %s", [input.request_time])
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
# description: The first transfer to an account not on the principal's list needs approval.
# custom:
#   code: fintech.new_beneficiary
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, "payments_approver", 1) if {
	_payment
	not _beneficiary in object.get(_cfg.beneficiaries, input.principal.id, [])
	msg := sprintf("%q is a new beneficiary for %q", [_beneficiary, input.principal.id])
}

_cfg := data.pdp.packs.fintech.config

_args := input.action.arguments

_payment if input.action.tool in _cfg.payment_tools

_amount := _args.amount if {
	is_number(_args.amount)
	_args.amount > 0
}

_principal_limit := object.get(_cfg.limits.principals, input.principal.id, _cfg.limits.default_principal)

_beneficiary := _args.beneficiary if is_string(_args.beneficiary)

_payment_problems contains "amount must be a positive number" if not _amount

_payment_problems contains sprintf("currency must be %s", [_cfg.currency]) if _args.currency != _cfg.currency

_payment_problems contains sprintf("currency must be %s", [_cfg.currency]) if not _args.currency

_payment_problems contains "beneficiary account is required" if not _beneficiary

_sanctions_hits contains name if {
	name := upper(trim_space(_args.counterparty))
	name in _cfg.sanctioned.counterparties
}

_sanctions_hits contains _args.beneficiary if _args.beneficiary in _cfg.sanctioned.accounts
