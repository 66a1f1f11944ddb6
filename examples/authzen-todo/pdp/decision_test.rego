package pdp_test

import data.pdp

morty := "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

jerry := "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs"

update(subject, owner) := {
	"action": {"tool": "can_update_todo"},
	"resource": {"type": "todo", "id": "t-1"},
	"asserted": {
		"principal": {"id": subject},
		"attributes": {"authzen": {"resource": {"properties": {"ownerID": owner}}}},
	},
}

test_decision_allow_with_the_granting_reasons if {
	d := pdp.decision with input as update(morty, "morty@the-citadel.com")
	d.outcome == "allow"
	[r.code | some r in d.reasons] == ["todo.owner_permits"]
	d.obligations == []
}

test_decision_deny_not_permitted if {
	d := pdp.decision with input as update(jerry, "jerry@the-smiths.com")
	d.outcome == "deny"
	[r.code | some r in d.reasons] == ["todo.not_permitted"]
}

test_decision_deny_wins_with_its_reasons if {
	d := pdp.decision with input as update("nobody", "")
	d.outcome == "deny"
	[r.code | some r in d.reasons] == ["todo.unknown_user"]
}

test_decisions_each_as_alone if {
	one := update(morty, "morty@the-citadel.com")
	two := update(morty, "rick@the-citadel.com")
	batch := pdp.decisions with input as {"requests": [one, two]}
	[d.outcome | some d in batch] == ["allow", "deny"]
	batch[0] == pdp.decision with input as one
}

test_decision_defined_for_an_empty_input if {
	d := pdp.decision with input as {}
	d.outcome == "deny"
	{r.code | some r in d.reasons} == {"todo.unknown_user", "todo.unknown_action"}
}
