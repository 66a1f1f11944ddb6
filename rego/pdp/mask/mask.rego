# METADATA
# title: Record masking
# description: >-
#   Which input fields the PDP masks ("**masked**") or erases before it signs a decision record,
#   decided per decision by the policy (like OPA's system.log.mask): the healthcare pack's patient
#   identifiers and the fintech pack's account numbers never reach the log in clear. The answer is
#   JSON pointers into the input; the rules are data (data.json), one per pack.
package pdp.mask

# METADATA
# title: Masked and erased input fields
# description: JSON pointers into the input, masked or erased before the record is signed
# entrypoint: true
pointers := {"mask": redacted, "erase": removed}

# METADATA
# title: Masking for each request
# description: pointers for each of input.requests (DecideBatch), in order
# entrypoint: true
batch := [p |
	some r in input.requests

	# `with` applies to an expression, not to a comprehension's term: the assignment is needed.
	# regal ignore:comprehension-term-assignment
	p := pointers with input as r
]

redacted contains pointer if {
	some rule in _rules
	some pointer in _argument_pointers(rule.arguments)
}

redacted contains pointer if {
	some rule in _rules
	some pointer in rule.fields
}

removed contains pointer if {
	some rule in _rules
	some pointer in _argument_pointers(rule.erase_arguments)
}

_rules contains rule if {
	# regal ignore:unresolved-reference
	some rule in data.pdp.mask.rules
	some prefix in rule.tools
	startswith(object.get(input, ["action", "tool"], ""), prefix)
}

# Every argument, at any depth of objects and arrays, whose own name is one of `names`.
_argument_pointers(names) := {pointer |
	[path, _] := walk(object.get(input, ["action", "arguments"], {}))
	count(path) > 0
	path[count(path) - 1] in names
	pointer := concat("/", array.concat(["", "action", "arguments"], [_escape(p) | some p in path]))
}

_escape(p) := replace(replace(sprintf("%v", [p]), "~", "~0"), "/", "~1")
