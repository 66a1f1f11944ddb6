# Echoes parts of the input back, to show what the PDP put into it.
package pdp

decision := {
	"outcome": "deny",
	"reasons": [{"code": "echo", "message": json.marshal({
		"caller": input.caller,
		"request_time": input.request_time,
		"action_digest": input.action_digest,
		"classification": input.resource.classification,
	})}],
	"obligations": [],
}
