package pdp.baseline

import data.pdp.lib

_levels := data.pdp.baseline.classification_levels

_egress := data.pdp.baseline.egress

# Unlabelled data is handled as if it carried the configured default label, never as public.
resource_level := max([input.resource.classification_level, _levels[data.pdp.baseline.unlabelled_as]])

# METADATA
# title: Clearance exceeded
# description: The resource's classification is above the agent's clearance.
# custom:
#   code: data.clearance_exceeded
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	resource_level > _levels[agent.clearance]
	msg := sprintf("agent cleared to %s; resource at level %d", [agent.clearance, resource_level])
}

# METADATA
# title: Sensitive data egress
# description: |
#   PII or PHI may leave only to a contracted processor (data processing agreement) that
#   covers those categories, and then only redacted.
# custom:
#   code: data.sensitive_egress
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	uncovered := _egress_categories - {c | some c in _processor.categories}
	count(uncovered) > 0
	msg := sprintf("%v data may not leave to %q", [sort(uncovered), input.action.destination.address])
}

# METADATA
# title: Lineage incomplete
# description: |
#   High-risk actions (risky scores, or payment, trade and destructive classes) need
#   complete data lineage: at least one entry, every source known and verified, and every
#   quality at or above the threshold.
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

# The sensitive categories (PII, PHI) of the resource that would leave to an external destination.
_egress_categories contains c if {
	input.action.destination.kind in _egress.external_kinds
	some c in input.resource.data_categories
	c in _egress.sensitive_categories
}

_processor := object.get(_egress.processors, input.action.destination.address, {"categories": []})

_lineage_required if action_class in data.pdp.baseline.lineage.required_for_classes

_lineage_required if input.risk.score >= _risk.high_at

_lineage_problems contains "no data lineage was given" if count(input.lineage) == 0

_lineage_problems contains sprintf("lineage source %q is unknown or unverified", [e.source]) if {
	some e in input.lineage
	not _trusted_source(e)
}

_lineage_problems contains sprintf("lineage source %q has quality %v < %v", [e.source, e.quality, min_q]) if {
	min_q := data.pdp.baseline.lineage.min_quality
	some e in input.lineage
	e.quality < min_q
}

_trusted_source(e) if {
	e.verified == true
	e.source in data.pdp.baseline.lineage.known_sources
}
