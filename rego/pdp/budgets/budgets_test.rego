package pdp.budgets_test

import data.pdp.budgets
import data.pdp.fixtures_test as fx

# A payment of 25,000.00 USD by the payments agent for a verified bob (low risk, known beneficiary).
transfer := fx.transfer

# The clinical assistant reading a patient record.
record_read := fx.treatment

claims(doc) := by_name if {
	found := budgets.claims with input as doc
	by_name := {c.budget: c | some c in found}
}

usage(budget, key, window, n) := {"bound": {"usage": {budget: {key: {window: n}}}}}

claim(budget, key, amount, limit, window) := {
	"budget": budget,
	"key": key,
	"amount": amount,
	"limit": limit,
	"window": window,
}

codes(doc) := {r.code | some r in d.reasons} if {
	d := data.pdp.decision with input as doc
}

test_claims_agent_call_rate_for_listed_agent if {
	claims(transfer)["baseline.calls"] == claim("baseline.calls", "payments-agent", 1, 600, "1m")
}

test_claims_agent_call_rate_not_for_unlisted_agent if {
	not claims(object.union(transfer, {"agent": {"id": "support-bot"}}))["baseline.calls"]
}

test_claims_daily_transfer_in_minor_units if {
	claims(transfer)["fintech.transfer_daily"] == {
		"budget": "fintech.transfer_daily", "key": "bob@bank.example",
		"amount": 2500000, "limit": 500000000, "window": "24h",
	}
}

test_claims_daily_transfer_unverified_principal_shares_a_bucket if {
	c := claims(json.remove(transfer, ["verified/principal"]))["fintech.transfer_daily"]
	c.key == "unverified@payments-agent"
	c.limit == 5000000
}

test_claims_daily_transfer_not_without_amount if {
	not claims(object.union(transfer, {"action": {"arguments": {"amount": "lots"}}}))["fintech.transfer_daily"]
}

test_claims_payment_velocity_per_agent if {
	claims(transfer)["fintech.velocity"] == claim("fintech.velocity", "payments-agent", 1, 120, "1h")
}

test_claims_payment_none_when_pack_disabled if {
	found := budgets.claims with input as transfer with data.pdp.packs.fintech.enabled as false
	count({c | some c in found; c.budget == "fintech.velocity"}) == 0
}

test_claims_patient_records_per_agent_hour if {
	claims(record_read)["healthcare.records_read"] == claim("healthcare.records_read", "clinical-assistant", 1, 500, "1h")
}

test_claims_patient_records_not_for_writes if {
	not claims(object.union(record_read, {"action": {"operation": "update"}}))["healthcare.records_read"]
}

test_used_is_zero_when_not_bound if {
	budgets.used({"budget": "b", "key": "k", "window": "1h"}) == 0 with input as transfer
}

test_deny_budget_exceeded_fires if {
	"budget.exceeded" in codes(object.union(transfer, usage("fintech.velocity", "payments-agent", "1h", 120)))
}

test_deny_budget_exceeded_quiet_at_the_limit if {
	not "budget.exceeded" in codes(object.union(transfer, usage("fintech.velocity", "payments-agent", "1h", 119)))
}

test_escalate_near_limit_fires if {
	doc := object.union(transfer, usage("fintech.transfer_daily", "bob@bank.example", "24h", 400000000))
	"budget.near_limit" in codes(doc)
	data.pdp.decision.outcome == "require_approval" with input as doc
}

test_escalate_near_limit_quiet_below_the_share if {
	doc := object.union(transfer, usage("fintech.transfer_daily", "bob@bank.example", "24h", 397500000))
	not "budget.near_limit" in codes(doc)
}

test_escalate_near_limit_quiet_for_budgets_without_a_share if {
	doc := object.union(transfer, usage("fintech.velocity", "payments-agent", "1h", 119))
	not "budget.near_limit" in codes(doc)
}

test_decision_carries_budgets_on_allow if {
	d := data.pdp.decision with input as transfer
	d.outcome == "allow"
	{c.budget | some c in d.budgets} == {"baseline.calls", "fintech.transfer_daily", "fintech.velocity"}
}

test_decision_carries_no_budgets_otherwise if {
	d := data.pdp.decision with input as object.union(transfer, {"verified": {"risk": {"score": 95}}})
	d.outcome == "deny"
	d.budgets == []
}

reserved(doc) := by_name if {
	found := budgets.reserved with input as doc
	by_name := {c.budget: c | some c in found}
}

test_reserved_under_a_threshold_carries_it_as_its_ceiling if {
	# bob's daily limit is 5,000,000.00; 80 % of it (400000000 minor units) needs no human
	r := reserved(object.union(transfer, usage("fintech.transfer_daily", "bob@bank.example", "24h", 397500000)))
	r["fintech.transfer_daily"] == object.union(claims(transfer)["fintech.transfer_daily"], {"ceiling": 400000000})
}

test_reserved_over_a_threshold_reserves_up_to_the_limit if {
	# above the share the claim escalates; once approved, only the limit holds it
	r := reserved(object.union(transfer, usage("fintech.transfer_daily", "bob@bank.example", "24h", 397500001)))
	not r["fintech.transfer_daily"].ceiling
	r["fintech.transfer_daily"].limit == 500000000
}

test_reserved_without_a_threshold_is_the_claim if {
	reserved(transfer)["fintech.velocity"] == claims(transfer)["fintech.velocity"]
}

test_decision_budgets_carry_the_ceiling if {
	d := data.pdp.decision with input as transfer
	{c.budget: c.ceiling | some c in d.budgets; c.ceiling} == {"fintech.transfer_daily": 400000000}
}
