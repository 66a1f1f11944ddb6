# METADATA
# title: Record masking
# description: >-
#   Which input fields the PDP masks ("**masked**") or erases before it signs a decision record,
#   decided per decision by the policy (like OPA's system.log.mask): the healthcare pack's patient
#   identifiers and the fintech pack's account numbers never reach the log in clear. The answer is
#   JSON pointers into the input; the rules are data (data.json), one per pack. The PDP queries
#   `answer` (`answers` for a batch): the decision and its masks from one evaluation.
package pdp.mask

# METADATA
# title: Decision with masks
# description: the decision and what its record must hide, from one evaluation (PDP_MASK_PATH)
# entrypoint: true
answer := {"decision": data.pdp.decision, "hide": pointers}

# METADATA
# title: Decisions with masks
# description: answer for each of input.requests, in order (PDP_MASK_BATCH_PATH)
# entrypoint: true
answers := [a |
	some r in input.requests

	# `with` applies to an expression, not to a comprehension's term: the assignment is needed.
	# regal ignore:comprehension-term-assignment
	a := answer with input as r
]

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
