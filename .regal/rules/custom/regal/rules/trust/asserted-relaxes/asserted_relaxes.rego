# Asserted data (input.asserted) may only make a decision stricter (docs/trust-model.md): a rule
# named allow may not read it, nor call pdp.trust's asserted(); a deny or escalate rule may not
# read it under `not` or as the domain of `every` (a negated asserted fact relaxes: absent, the
# rule fires; asserted, it does not). This per-file rule sees direct reads;
# .regal/asserted_check.py (make policy-check) follows them across rules and files.

# METADATA
# description: Asserted data read where it can allow or relax a decision
# schemas:
#   - input: schema.regal.ast
package custom.regal.rules.trust["asserted-relaxes"]

import data.regal.result

report contains violation if {
	some rule in input.rules
	rule.head.ref[0].value == "allow"
	some node in _asserted_reads(rule)
	violation := result.fail(rego.metadata.chain(), result.location(node))
}

report contains violation if {
	some rule in input.rules
	rule.head.ref[0].value in {"deny", "escalate"}
	walk(rule.body, [_, expr])
	_relaxing_position(expr)
	some node in _asserted_reads(expr)
	violation := result.fail(rego.metadata.chain(), result.location(node))
}

_relaxing_position(expr) if expr.negated == true

_relaxing_position(expr) if expr.terms.domain

_asserted_reads(node) := {term |
	walk(node, [_, term])
	_reads_asserted(term)
}

# input.asserted..., and input as a whole or with a computed key.
_reads_asserted(term) if {
	term.type == "ref"
	term.value[0].type == "var"
	term.value[0].value == "input"
	_asserted_key(term.value)
}

# The trust package's accessor, by its import name or in full.
_reads_asserted(term) if {
	term.type == "ref"
	[term.value[0].value, term.value[1].value] == ["trust", "asserted"]
}

_reads_asserted(term) if {
	term.type == "ref"
	[v.value | some v in array.slice(term.value, 0, 4)] == ["data", "pdp", "trust", "asserted"]
}

_asserted_key(ref) if count(ref) == 1

_asserted_key(ref) if ref[1].type != "string"

_asserted_key(ref) if ref[1].value == "asserted"
