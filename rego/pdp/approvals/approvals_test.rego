package pdp.approvals_test

import data.pdp.approvals
import data.pdp.fixtures_test as fx

approval(patch) := object.union(
	{"approver_id": "rita.okafor@bank.example", "action_digest": "sha256:aa", "expires_at": "2026-11-24T11:00:00Z"},
	patch,
)

with_approvals(doc, approval_list) := fx.patch(doc, {"bound": {"approvals": approval_list}})

valid_count(approval_list) := n if {
	n := count(approvals.valid) with input as with_approvals(fx.transfer, approval_list)
}

test_valid_accepts_bound_unexpired_registered if valid_count([approval({})]) == 1

test_valid_rejects_other_action if valid_count([approval({"action_digest": "sha256:bb"})]) == 0

test_valid_rejects_expired if valid_count([approval({"expires_at": "2026-11-24T09:59:59Z"})]) == 0

test_valid_rejects_missing_expiry if valid_count([approval({"expires_at": ""})]) == 0

test_valid_rejects_unregistered_approver if valid_count([approval({"approver_id": "mallory@bank.example"})]) == 0

test_valid_rejects_inactive_approver if valid_count([approval({"approver_id": "li.chen@bank.example"})]) == 0

test_valid_ignores_approvals_outside_bound if {
	# Approvals are what the PDP verified (input.bound.approvals); a caller's list elsewhere is nothing.
	doc := fx.patch(fx.transfer, {"asserted": {"attributes": {"approvals": [approval({})]}}, "approvals": [approval({})]})
	count(approvals.valid) == 0 with input as doc
}

test_valid_rejects_self_approval_by_verified_principal if {
	own := fx.patch(fx.transfer, {"verified": {"principal": {"id": "rita.okafor@bank.example"}}})
	count(approvals.valid) == 0 with input as with_approvals(own, [approval({})])
}

test_valid_rejects_self_approval_by_asserted_principal if {
	own := fx.patch(fx.transfer, {"asserted": {"principal": {"id": "rita.okafor@bank.example"}}})
	count(approvals.valid) == 0 with input as with_approvals(own, [approval({})])
}

test_valid_rejects_self_approval_by_agent if {
	own := fx.patch(fx.transfer, {"agent": {"id": "rita.okafor@bank.example"}})
	count(approvals.valid) == 0 with input as with_approvals(own, [approval({})])
}

test_valid_without_any_principal_still_checks_the_agent if {
	anonymous := fx.without(fx.transfer, ["verified/principal", "asserted/principal"])
	count(approvals.valid) == 1 with input as with_approvals(anonymous, [approval({})])
}

test_satisfied_needs_the_role_from_the_registry if {
	# dan is a payments approver only: his approval does not satisfy a risk officer requirement.
	dan := approval({"approver_id": "dan.meyer@bank.example", "approver_roles": ["risk_officer"]})
	not approvals.satisfied({"role": "risk_officer", "count": 1}) with input as with_approvals(fx.transfer, [dan])
	approvals.satisfied({"role": "payments_approver", "count": 1}) with input as with_approvals(fx.transfer, [dan])
}

test_satisfied_counts_distinct_approvers if {
	two_from_one := [approval({}), approval({"expires_at": "2026-11-24T10:30:00Z"})]
	not approvals.satisfied({"role": "payments_approver", "count": 2}) with input as with_approvals(fx.transfer, two_from_one)
	two := [approval({}), approval({"approver_id": "dan.meyer@bank.example"})]
	approvals.satisfied({"role": "payments_approver", "count": 2}) with input as with_approvals(fx.transfer, two)
}

test_accepted_fires_for_satisfied_escalations if {
	escalations := {{"code": "risk.high", "approval": {"role": "risk_officer", "count": 1}}}
	reasons := approvals.accepted(escalations) with input as with_approvals(fx.transfer, [approval({})])
	{r.code | some r in reasons} == {"approval.accepted"}
}

test_accepted_quiet_for_unsatisfied_escalations if {
	escalations := {{"code": "risk.high", "approval": {"role": "risk_officer", "count": 1}}}
	count(approvals.accepted(escalations)) == 0 with input as fx.transfer
}
