package pdp.packs.fintech_test

import data.pdp.packs.fintech

base := {
	"request_time": "2026-11-24T15:00:00Z",
	"agent": {"id": "payments-agent"},
	"principal": {"id": "bob@bank.example"},
	"action": {"tool": "payments.transfer", "arguments": {
		"amount": 25000, "currency": "USD",
		"beneficiary": "DE89370400440532013000", "counterparty": "Contoso GmbH",
	}},
}

args(patch) := object.union(base, {"action": {"arguments": patch}})

denied(inp) := result if {
	result := {r.code | some r in fintech.deny} with input as inp
}

escalated(inp) := result if {
	result := {r.code | some r in fintech.escalate} with input as inp
}

test_base_nothing_fires if {
	denied(base) == set()
	escalated(base) == set()
}

test_payment_invalid_fires_for_missing_amount if {
	"fintech.payment_invalid" in denied(json.remove(base, ["action/arguments/amount"]))
}

test_payment_invalid_fires_for_negative_amount if "fintech.payment_invalid" in denied(args({"amount": -5}))

test_payment_invalid_fires_for_string_amount if "fintech.payment_invalid" in denied(args({"amount": "25000"}))

test_payment_invalid_fires_for_other_currency if "fintech.payment_invalid" in denied(args({"currency": "EUR"}))

test_payment_invalid_fires_for_missing_currency if {
	inp := json.remove(base, ["action/arguments/currency"])
	"fintech.payment_invalid" in denied(inp)
}

test_payment_invalid_fires_for_missing_beneficiary if {
	inp := json.remove(base, ["action/arguments/beneficiary"])
	"fintech.payment_invalid" in denied(inp)
}

test_payment_invalid_quiet_for_other_tools if {
	denied(object.union(base, {"action": {"tool": "crm.lookup", "arguments": {"amount": -1}}})) == set()
}

test_agent_limit_exceeded_fires if "fintech.agent_limit_exceeded" in denied(args({"amount": 1000000.01}))

test_agent_limit_exceeded_fires_for_agent_without_limit if {
	"fintech.agent_limit_exceeded" in denied(object.union(base, {"agent": {"id": "support-bot"}}))
}

test_agent_limit_exceeded_quiet_at_limit if not "fintech.agent_limit_exceeded" in denied(args({"amount": 1000000}))

test_principal_limit_exceeded_fires if "fintech.principal_limit_exceeded" in denied(args({"amount": 500001}))

test_principal_limit_exceeded_default_limit if {
	"fintech.principal_limit_exceeded" in denied(object.union(base, {"principal": {"id": "new.hire@bank.example"}}))
}

test_principal_limit_exceeded_quiet_at_limit if {
	not "fintech.principal_limit_exceeded" in denied(args({"amount": 500000}))
}

test_sanctioned_counterparty_fires_on_name if {
	"fintech.sanctioned_counterparty" in denied(args({"counterparty": "  Vostok Maritime Holdings "}))
}

test_sanctioned_counterparty_fires_on_account if {
	"fintech.sanctioned_counterparty" in denied(args({"beneficiary": "LV80BANK0000435195001"}))
}

test_sanctioned_counterparty_quiet if not "fintech.sanctioned_counterparty" in denied(base)

test_dual_control_fires_above_threshold if "fintech.dual_control" in escalated(args({"amount": 100000.5}))

test_dual_control_quiet_at_threshold if not "fintech.dual_control" in escalated(args({"amount": 100000}))

test_new_beneficiary_fires if "fintech.new_beneficiary" in escalated(args({"beneficiary": "NL91ABNA0417164300"}))

test_new_beneficiary_fires_for_principal_without_list if {
	"fintech.new_beneficiary" in escalated(object.union(base, {"principal": {"id": "dave@bank.example"}}))
}

test_new_beneficiary_quiet_for_known if not "fintech.new_beneficiary" in escalated(base)

order := {"request_time": "2026-11-24T15:00:00Z", "action": {"tool": "trading.order", "arguments": {}}}

test_outside_market_hours_fires_before_open if {
	"fintech.outside_market_hours" in denied(object.union(order, {"request_time": "2026-11-24T14:29:59Z"}))
}

test_outside_market_hours_fires_on_saturday if {
	"fintech.outside_market_hours" in denied(object.union(order, {"request_time": "2026-11-28T15:00:00Z"}))
}

test_outside_market_hours_quiet_when_open if not "fintech.outside_market_hours" in denied(order)
