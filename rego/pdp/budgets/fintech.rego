package pdp.budgets

# METADATA
# title: Daily transfer budget
# description: |
#   Payments of one principal, over all agents, in any 24 hours, in minor units of the
#   booking currency: at most its entry in config.fintech.daily_transfer_minor (or the default).
claims contains {
	"budget": "fintech.transfer_daily",
	"key": _principal,
	"amount": _transfer_minor,
	"limit": object.get(_fintech.daily_transfer_minor.principals, _principal, _fintech.daily_transfer_minor.default),
	"window": "24h",
} if {
	_payment
	_transfer_minor > 0
}

# METADATA
# title: Payment velocity
# description: Payments one agent may make in the configured window (config.fintech.velocity).
claims contains {
	"budget": "fintech.velocity",
	"key": _agent,
	"amount": 1,
	"limit": object.get(_fintech.velocity.agents, _agent, _fintech.velocity.default),
	"window": _fintech.velocity.window,
} if {
	_payment
}

_fintech := _config.fintech

_payment if {
	_pack_enabled("fintech")
	_tool in data.pdp.packs.fintech.config.payment_tools
}

_transfer_minor := round(input.action.arguments.amount * _fintech.minor_units_per_unit) if {
	is_number(input.action.arguments.amount)
}

# A payment without a verified principal is charged to one shared bucket per agent: the smallest
# budget, never one the caller picks by naming someone (an asserted principal never keys a budget).
_principal := _verified_principal if _verified_principal != ""

_principal := sprintf("unverified@%s", [_agent]) if _verified_principal == ""

_verified_principal := object.get(input, ["verified", "principal", "id"], "")
