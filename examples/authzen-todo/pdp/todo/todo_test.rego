package pdp.todo_test

import data.pdp.todo

rick := "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

morty := "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

beth := "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

# The policy input (v2) the PDP builds from an AuthZEN evaluation (default mapping).
ask(subject, action, owner) := {
	"action": {"tool": action},
	"resource": {"type": "todo", "id": "t-1"},
	"asserted": {
		"principal": {"id": subject},
		"attributes": {"authzen": {"resource": {"properties": {"ownerID": owner}}}},
	},
}

test_user_is_looked_up_by_subject_id if {
	todo.user.id == "morty@the-citadel.com" with input as ask(morty, "can_read_todos", "")
}

test_permissions_come_from_every_role if {
	perms := todo.permissions with input as ask(rick, "can_read_todos", "")
	"can_delete_todo" in perms
	"can_update_todo" in perms
}

test_owns_when_owner_is_the_user if {
	todo.owns with input as ask(morty, "can_update_todo", "morty@the-citadel.com")
}

test_owns_not_for_another_owner if {
	not todo.owns with input as ask(morty, "can_update_todo", "rick@the-citadel.com")
}

test_deny_unknown_user_fires if {
	reasons := todo.deny with input as ask("nobody", "can_read_todos", "")
	{r.code | some r in reasons} == {"todo.unknown_user"}
}

test_deny_unknown_user_not_for_a_known_user if {
	count(todo.deny) == 0 with input as ask(beth, "can_read_todos", "")
}

test_deny_unknown_action_fires if {
	reasons := todo.deny with input as ask(beth, "can_launch_portal", "")
	{r.code | some r in reasons} == {"todo.unknown_action"}
}

test_allow_role_permits_fires if {
	reasons := todo.allow with input as ask(beth, "can_read_user", "")
	{r.code | some r in reasons} == {"todo.role_permits"}
}

test_allow_role_permits_not_without_the_permission if {
	count(todo.allow) == 0 with input as ask(beth, "can_create_todo", "")
}

test_allow_owner_permits_fires if {
	reasons := todo.allow with input as ask(morty, "can_delete_todo", "morty@the-citadel.com")
	{r.code | some r in reasons} == {"todo.owner_permits"}
}

test_allow_owner_permits_not_for_a_viewer_owner if {
	count(todo.allow) == 0 with input as ask(beth, "can_update_todo", "beth@the-smiths.com")
}

test_not_permitted_names_user_and_action if {
	r := todo.not_permitted with input as ask(beth, "can_create_todo", "")
	r.code == "todo.not_permitted"
	r.message == "beth@the-smiths.com may not can_create_todo on todo \"t-1\""
}
