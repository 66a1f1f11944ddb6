# A small policy for the lifecycle tests: the outcome per tool comes from data, so two revisions
# differ by a known edit of data.json alone.
package pdp

_tool := object.get(input, ["action", "tool"], "")

# regal ignore:unresolved-reference
_outcome := object.get(data.pdp.lifecycle.tools, _tool, "deny")

# METADATA
# title: Decision
# description: the outcome for the tool, from data
# entrypoint: true
decision := {
	"outcome": _outcome,
	"reasons": [{"code": concat(".", ["tool", _outcome]), "message": _tool}],
	"obligations": [],
}

# METADATA
# title: Decisions
# description: the decision for each of input.requests
# entrypoint: true
decisions := [d |
	some r in input.requests

	# regal ignore:comprehension-term-assignment
	d := decision with input as r
]
