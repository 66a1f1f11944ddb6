# A policy that errors at evaluation (two values for one complete rule): OPA answers HTTP 500.
package pdp

decision := {"outcome": "allow"} if input.agent.id

decision := {"outcome": "deny"} if input.action.tool

decisions := [d |
	some r in input.requests
	d := decision with input as r
]
