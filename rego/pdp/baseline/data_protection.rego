package pdp.baseline

import data.pdp.lib
import data.pdp.trust

_levels := data.pdp.baseline.classification_levels

_egress := data.pdp.baseline.egress

# An agent without a known clearance is cleared for nothing (level 0).
_clearance_level := object.get(_levels, object.get(agent, "clearance", ""), 0)

_lineage := data.pdp.baseline.lineage

# METADATA
# title: Clearance exceeded
# description: |
#   The resource's classification (from the catalogue; unknown resources are top secret;
#   asserted labels only raise it) is above the agent's clearance.
# custom:
#   code: data.clearance_exceeded
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	agent
	trust.resource_level > _clearance_level
	clearance := object.get(agent, "clearance", "nothing")
	msg := sprintf("agent cleared to %v; resource at level %d", [clearance, trust.resource_level])
}

# METADATA
# title: Sensitive data egress
# description: |
#   PII or PHI may leave the organisation only to a contracted processor (data processing
#   agreement) that covers those categories, and then only redacted. Whether the address is
#   internal comes from the catalogue's domains and networks; an empty address on an egress
#   tool is external.
# custom:
#   code: data.sensitive_egress
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	uncovered := _egress_categories - {c | some c in _processor.categories}
	count(uncovered) > 0
	msg := sprintf("%v data may not leave to %q", [sort(uncovered), trust.address])
}

# METADATA
# title: Lineage incomplete
# description: |
#   High-risk actions (risky scores, or payment, trade and destructive classes) need
#   complete data lineage: at least one entry verified from a source system's signed
#   attestation, every verified source known and of good quality, and no asserted entry
#   that names an unknown source, is unverified or of low quality.
# custom:
#   code: lineage.incomplete
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_lineage_required
	some msg in _lineage_problems
}

obligations contains {"type": "redact", "params": params} if {
	count(_egress_categories) > 0
	params := {"categories": sort(_egress_categories), "agreement": _processor.agreement}
}

# The sensitive categories (PII, PHI) of the resource that would leave the organisation.
_egress_categories contains c if {
	trust.leaves_organisation
	some c in trust.data_categories
	c in _egress.sensitive_categories
}

_processor := object.get(_egress.processors, trust.destination_host, {"categories": []})

_lineage_required if action_class in _lineage.required_for_classes

_lineage_required if trust.risk_score >= _risk.high_at

_lineage_problems contains "no verified data lineage" if count(trust.verified_lineage) == 0

_lineage_problems contains sprintf("lineage source %q is not a known source", [_source(e)]) if {
	some e in trust.verified_lineage
	not _source(e) in _lineage.known_sources
}

_lineage_problems contains msg if {
	some e in array.concat(trust.verified_lineage, trust.asserted_lineage)
	not _good_quality(e)
	msg := sprintf("lineage source %q has quality %v < %v", [_source(e), _field(e, "quality"), _lineage.min_quality])
}

_lineage_problems contains sprintf("asserted lineage source %q is unknown or unverified", [_source(e)]) if {
	some e in trust.asserted_lineage
	not _trusted_assertion(e)
}

_field(e, key) := object.get(e, key, null) if is_object(e)

else := null

_source(e) := source if {
	source := _field(e, "source")
	is_string(source)
} else := ""

_good_quality(e) if {
	is_number(e.quality)
	e.quality >= _lineage.min_quality
}

_trusted_assertion(e) if {
	e.verified == true
	_source(e) in _lineage.known_sources
}
