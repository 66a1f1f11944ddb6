package pdp.approvals_test

import data.pdp.approvals

base := {
	"request_time": "2026-11-24T10:00:00Z",
	"agent": {"id": "payments-agent"},
	"principal": {"id": "bob@bank.example"},
	"action_digest": "sha256:aa",
}

approval(patch) := object.union(
	{"approver_id": "rita.okafor@bank.example", "action_digest": "sha256:aa", "expires_at": "2026-11-24T11:00:00Z"},
	patch,
)

valid_count(approval_list) := n if {
	n := count(approvals.valid) with input as object.union(base, {"approvals": approval_list})
}

test_valid_accepts_bound_unexpired_registered if valid_count([approval({})]) == 1

test_valid_rejects_other_action if valid_count([approval({"action_digest": "sha256:bb"})]) == 0

test_valid_rejects_expired if valid_count([approval({"expires_at": "2026-11-24T09:59:59Z"})]) == 0

test_valid_rejects_missing_expiry if valid_count([approval({"expires_at": ""})]) == 0

test_valid_rejects_unregistered_approver if valid_count([approval({"approver_id": "mallory@bank.example"})]) == 0

test_valid_rejects_inactive_approver if valid_count([approval({"approver_id": "li.chen@bank.example"})]) == 0

test_valid_rejects_self_approval_by_principal if {
	own := object.union(base, {"principal": {"id": "rita.okafor@bank.example"}, "approvals": [approval({})]})
	count(approvals.valid) == 0 with input as own
}

test_valid_rejects_self_approval_by_agent if {
	own := object.union(base, {"agent": {"id": "rita.okafor@bank.example"}, "approvals": [approval({})]})
	count(approvals.valid) == 0 with input as own
}

test_satisfied_needs_role if {
	inp := object.union(base, {"approvals": [approval({})]})
	approvals.satisfied({"role": "risk_officer", "count": 1}) with input as inp
	not approvals.satisfied({"role": "privacy_officer", "count": 1}) with input as inp
}

test_satisfied_counts_distinct_approvers if {
	twice := [approval({}), approval({})]
	inp := object.union(base, {"approvals": twice})
	not approvals.satisfied({"role": "payments_approver", "count": 2}) with input as inp
	two := [approval({}), approval({"approver_id": "dan.meyer@bank.example"})]
	approvals.satisfied({"role": "payments_approver", "count": 2}) with input as object.union(base, {"approvals": two})
}

test_accepted_reports_satisfied_escalations if {
	escalations := {
		{"code": "risk.high", "approval": {"role": "risk_officer", "count": 1}},
		{"code": "hipaa.break_glass", "approval": {"role": "privacy_officer", "count": 1}},
	}
	accepted := approvals.accepted(escalations) with input as object.union(base, {"approvals": [approval({})]})
	{r.code | some r in accepted} == {"approval.accepted"}
	[r.message | some r in accepted] == ["risk.high approved by 1 risk_officer"]
}
