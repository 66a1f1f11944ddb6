package pdp.baseline

import data.pdp.lib
import data.pdp.trust

_risk := data.pdp.baseline.risk

_risk_source := "verified" if trust.risk_verified

_risk_source := "unverified" if not trust.risk_verified

# METADATA
# title: Critical risk
# description: Actions at or above the critical risk score are denied.
# custom:
#   code: risk.critical
#   severity: critical
deny contains lib.reason(rego.metadata.rule(), msg) if {
	trust.risk_score >= _risk.critical_at
	msg := sprintf("%s risk score %v is critical (>= %v)", [_risk_source, trust.risk_score, _risk.critical_at])
}

# METADATA
# title: High risk
# description: |
#   High-risk actions need a risk officer's approval. Without a verified assessment, the
#   classes that need one count as high risk.
# custom:
#   code: risk.high
#   severity: high
escalate contains lib.escalation(rego.metadata.rule(), msg, "risk_officer", 1) if {
	trust.risk_score >= _risk.high_at
	trust.risk_score < _risk.critical_at
	msg := sprintf("%s risk score %v needs approval (>= %v)", [_risk_source, trust.risk_score, _risk.high_at])
}

# Medium risk runs, but contained: in a sandbox and rate limited.
obligations contains {"type": "sandbox", "params": {"reason": "risk.medium"}} if _medium_risk

obligations contains {"type": "rate_limit", "params": {"per_minute": _risk.rate_limit_per_minute}} if _medium_risk

_medium_risk if {
	trust.risk_score >= _risk.medium_at
	trust.risk_score < _risk.high_at
}
