# METADATA
# title: Record masking
# description: >-
#   Which input fields the PDP masks ("**masked**") or erases before it signs a decision record,
#   decided per decision by the policy (like OPA's system.log.mask): the healthcare pack's patient
#   identifiers and the fintech pack's account numbers never reach the log in clear. The answer is
#   JSON pointers into the input (v2: the question and `asserted`); the rules are data (data.json),
#   one per pack. What the decision itself carries for the record (its looked-up `facts`, e.g. a
#   patient record's owner from the catalogue) is masked in the answered decision (a rule's
#   `decision_fields`), so it cannot reach the log in clear either. The PDP queries `answer`
#   (`answers` for a batch): the decision and its masks from one evaluation.
package pdp.mask

# METADATA
# title: Decision with masks
# description: the decision and what its record must hide, from one evaluation (PDP_MASK_PATH)
# entrypoint: true
answer := {"decision": decision, "hide": pointers}

# METADATA
# title: Decision as recorded
# description: |
#   data.pdp.decision with the fields its rules name (JSON pointers into the decision, e.g. its
#   looked-up facts) masked; outcome, reasons and obligations are never named, so the verdict is
#   the unmasked one.
decision := json.patch(data.pdp.decision, [{"op": "replace", "path": p, "value": "**masked**"} |
	some p in decision_masked
])

# JSON pointers into the decision that are present and that a rule names (looked up, not
# searched for: a decision can be large, e.g. a minimum-necessary obligation listing every field).
decision_masked contains pointer if {
	some rule in _rules
	some pointer in object.get(rule, "decision_fields", [])
	path := [_unescape(p) | some p in array.slice(split(pointer, "/"), 1, count(pointer))]
	object.get(data.pdp.decision, path, _absent) != _absent
}

_absent := "pdp.mask: absent"

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
	some [name, pointer] in _named_arguments
	name in rule.arguments
}

redacted contains pointer if {
	some rule in _rules
	some pointer in rule.fields
}

removed contains pointer if {
	some rule in _rules
	some [name, pointer] in _named_arguments
	name in rule.erase_arguments
}

_rules contains rule if {
	# regal ignore:unresolved-reference
	some rule in data.pdp.mask.rules
	some prefix in rule.tools
	startswith(object.get(input, ["action", "tool"], ""), prefix)
}

# Every argument, at any depth of objects and arrays, whose own name a rule lists: [name, pointer].
# One walk of the arguments for all rules; only objects can hold a named argument.
_named_arguments contains [name, pointer] if {
	[path, node] := walk(object.get(input, ["action", "arguments"], {}))
	is_object(node)
	some name in _argument_names
	object.get(node, name, _absent) != _absent
	pointer := concat("/", array.concat(["", "action", "arguments"], [_escape(p) | some p in array.concat(path, [name])]))
}

_argument_names contains name if {
	some rule in _rules
	some name in array.concat(object.get(rule, "arguments", []), object.get(rule, "erase_arguments", []))
}

_escape(p) := replace(replace(sprintf("%v", [p]), "~", "~0"), "/", "~1")

_unescape(p) := replace(replace(p, "~1", "/"), "~0", "~")
