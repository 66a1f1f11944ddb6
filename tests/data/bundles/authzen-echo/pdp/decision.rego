# Echoes the policy input (v2: bound, the question, verified, asserted) the PDP built from an
# AuthZEN request, and decides by the action asked (the question, not the caller's word):
# "read" → allow (with an obligation), "escalate" → require_approval, anything else → deny.
package pdp

default outcome := "deny"

outcome := "allow" if input.action.tool == "read"

outcome := "require_approval" if input.action.tool == "escalate"

decision := {
	"outcome": outcome,
	"reasons": [{"code": sprintf("echo.%s", [outcome]), "message": json.marshal({
		"agent": input.agent,
		"action": input.action,
		"resource": input.resource,
		"verified": input.verified,
		"asserted": input.asserted,
		"caller": input.bound.caller,
		"request_id": input.bound.request_id,
	})}],
	"obligations": [{"type": "audit", "params": {"level": "standard"}} | outcome == "allow"],
}

decisions := [d | some r in input.requests; d := decision with input as r]
