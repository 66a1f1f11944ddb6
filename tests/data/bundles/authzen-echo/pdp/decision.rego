# Echoes the policy input the PDP built from an AuthZEN request, and decides by the action:
# "read" → allow (with an obligation), "escalate" → require_approval, anything else → deny.
package pdp

default outcome := "deny"

outcome := "allow" if input.action.tool == "read"

outcome := "require_approval" if input.action.tool == "escalate"

decision := {
	"outcome": outcome,
	"reasons": [{"code": sprintf("echo.%s", [outcome]), "message": json.marshal({
		"agent": input.agent,
		"principal": input.principal,
		"action": input.action,
		"resource": input.resource,
		"environment": input.environment,
		"risk": input.risk,
		"purpose_of_use": input.purpose_of_use,
		"attributes": input.attributes,
		"caller": input.caller,
		"request_id": input.request_id,
	})}],
	"obligations": [{"type": "audit", "params": {"level": "standard"}} | outcome == "allow"],
}

decisions := [d | some r in input.requests; d := decision with input as r]
