# METADATA
# title: AuthZEN Todo decision entrypoint
# description: |
#   The PDP's decision contract for the AuthZEN interop "Todo" scenario: allow when a
#   permission rule of pdp.todo matched and no deny did; otherwise deny, with the reasons.
package pdp

import data.pdp.todo

# METADATA
# title: Decision
# description: The document the PDP queries for every AuthZEN evaluation (and Decide call).
# entrypoint: true
decision := {
	"outcome": outcome,
	"reasons": _reasons,
	"obligations": [],
}

# METADATA
# title: Batch decision
# description: The decision for each of input.requests, in order (AuthZEN evaluations, DecideBatch).
# entrypoint: true
decisions := [d |
	some r in input.requests

	# `with` applies to an expression, not to a comprehension's term: the assignment is needed.
	# regal ignore:comprehension-term-assignment
	d := decision with input as r
]

default outcome := "deny"

outcome := "allow" if {
	count(todo.deny) == 0
	count(todo.allow) > 0
}

_reasons := [r | some r in todo.deny] if count(todo.deny) > 0

_reasons := [r | some r in todo.allow] if {
	count(todo.deny) == 0
	count(todo.allow) > 0
}

_reasons := [todo.not_permitted] if {
	count(todo.deny) == 0
	count(todo.allow) == 0
}
