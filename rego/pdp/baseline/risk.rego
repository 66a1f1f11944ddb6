package pdp.baseline

import data.pdp.lib

_risk := data.pdp.baseline.risk

# METADATA
# title: Critical risk
# description: Actions at or above the critical risk score are denied.
# custom:
#   code: risk.critical
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	input.risk.score >= _risk.critical_at
	msg := sprintf("risk score %v is critical (>= %v)", [input.risk.score, _risk.critical_at])
}

# METADATA
# title: High risk
# description: High-risk actions need a risk officer's approval.
# custom:
#   code: risk.high
#   severity: high
escalate contains lib.escalation(rego.metadata.rule(), msg, "risk_officer", 1) if {
	input.risk.score >= _risk.high_at
	input.risk.score < _risk.critical_at
	msg := sprintf("risk score %v needs approval (>= %v)", [input.risk.score, _risk.high_at])
}

# Medium risk runs, but contained: in a sandbox and rate limited.
obligations contains {"type": "sandbox", "params": {"reason": "risk.medium"}} if _medium_risk

obligations contains {"type": "rate_limit", "params": {"per_minute": _risk.rate_limit_per_minute}} if _medium_risk

_medium_risk if {
	input.risk.score >= _risk.medium_at
	input.risk.score < _risk.high_at
}
