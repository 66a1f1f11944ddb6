# METADATA
# title: AuthZEN interop Todo rules
# description: |
#   Users, roles and permissions of the AuthZEN working group's Todo scenario
#   (openid/authzen, interop/), as data in data.todo; the rules below read the
#   request as the PDP's default AuthZEN mapping puts it into the policy input (v2):
#   subject.id → asserted.principal.id, action.name → action.tool, resource.type/id →
#   resource.type/id, and what no rule maps (here resource.properties.ownerID)
#   under asserted.attributes.authzen.
#
#   On purpose, and unlike the project's main bundle (rego/), this interop demo
#   trusts the subject id as the PEP states it (input.asserted.principal): the
#   scenario's premise is that the PEP has authenticated the user and passes the
#   PID it took from the user's token, and the working group's cases carry no token
#   for the PDP to verify. The main bundle grants only on input.verified.principal
#   (a principal token the PDP checked) and uses asserted values only to be stricter.
package pdp.todo

# METADATA
# title: Requesting user
# description: The directory entry of the subject (the PID the PEP took from the user's token, as the PEP states it).
user := data.todo.users[_subject] # regal ignore:unresolved-reference

# METADATA
# title: Permissions
# description: The permissions the user's roles grant.
permissions contains p if {
	some role in user.roles

	# regal ignore:unresolved-reference
	some p in data.todo.roles[role]
}

# METADATA
# title: Owner
# description: The id (e-mail) of the todo's owner, from resource.properties.ownerID.
owner := input.asserted.attributes.authzen.resource.properties.ownerID

# METADATA
# title: Owns the todo
# description: The user is the todo's owner.
owns if owner == user.id

# What the request asks, "" where it says nothing: every rule below stays defined (the PDP's
# health check asks with an empty input, and an undefined decision is a policy fault).
_subject := object.get(input, ["asserted", "principal", "id"], "")

_action := object.get(input, ["action", "tool"], "")

_resource := sprintf("%s %q", [object.get(input, ["resource", "type"], ""), object.get(input, ["resource", "id"], "")])

_actions := {"can_read_user", "can_read_todos", "can_create_todo", "can_update_todo", "can_delete_todo"}

# METADATA
# title: Unknown user
# description: The subject is not in the directory.
# custom:
#   code: todo.unknown_user
#   severity: medium
deny contains _reason(rego.metadata.rule(), msg) if {
	not user
	msg := sprintf("subject %q is not a known user", [_subject])
}

# METADATA
# title: Unknown action
# description: The action is none of the Todo application's five.
# custom:
#   code: todo.unknown_action
#   severity: medium
deny contains _reason(rego.metadata.rule(), msg) if {
	not _action in _actions
	msg := sprintf("%q is not an action of the Todo application", [_action])
}

# METADATA
# title: Permission held
# description: One of the user's roles grants the action outright.
# custom:
#   code: todo.role_permits
#   severity: info
allow contains _reason(rego.metadata.rule(), msg) if {
	_action in permissions
	msg := sprintf("%s (%s) may %s", [user.id, concat(",", user.roles), _action])
}

# METADATA
# title: Own todo
# description: The user's roles allow updating or deleting their own todos, and this one is theirs.
# custom:
#   code: todo.owner_permits
#   severity: info
allow contains _reason(rego.metadata.rule(), msg) if {
	_action in {"can_update_todo", "can_delete_todo"}
	owns
	sprintf("%s_own_todo", [trim_suffix(_action, "_todo")]) in permissions
	msg := sprintf("%s owns %s", [user.id, _resource])
}

# METADATA
# title: Not permitted
# description: No role of the user grants the action on this resource.
# custom:
#   code: todo.not_permitted
#   severity: medium
not_permitted := _reason(rego.metadata.rule(), msg) if {
	msg := sprintf("%s may not %s on %s", [object.get(user, "id", _subject), _action, _resource])
}

_reason(meta, message) := {
	"code": meta.custom.code,
	"severity": meta.custom.severity,
	"rule": meta.title,
	"message": message,
}
