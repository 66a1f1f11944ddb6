# A small policy for the lifecycle tests: the outcome per tool comes from data, so two revisions
# differ by a known edit of data.json alone.
package pdp

_tool := object.get(input, ["action", "tool"], "")

_outcome := object.get(data.pdp.lifecycle.tools, _tool, "deny")

decision := {
	"outcome": _outcome,
	"reasons": [{"code": concat(".", ["tool", _outcome]), "message": _tool}],
	"obligations": [],
}

decisions := [d | some r in input.requests; d := decision with input as r]
