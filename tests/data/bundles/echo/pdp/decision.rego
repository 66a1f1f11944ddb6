# Echoes parts of the input back, to show what the PDP put into it.
package pdp

decision := {
	"outcome": "deny",
	"reasons": [{"code": "echo", "message": json.marshal({
		"caller": input.bound.caller,
		"request_time": input.bound.time,
		"action_digest": input.bound.action_digest,
		"classification": input.asserted.resource.classification,
		"verified": input.verified,
	})}],
	"obligations": [],
}
