package pdp.packs.fintech_test

import data.pdp.fixtures_test as fx
import data.pdp.packs.fintech

base := fx.patch(fx.transfer, {"bound": {"time": "2026-11-24T15:00:00Z"}})

args(patch) := fx.patch(base, {"action": {"arguments": patch}})

denied(inp) := result if {
	result := {r.code | some r in fintech.deny} with input as inp
}

escalated(inp) := result if {
	result := {r.code | some r in fintech.escalate} with input as inp
}

messages(inp) := result if {
	result := {r.message | some r in fintech.deny} with input as inp
}

test_fintech_quiet_for_an_honest_transfer if {
	denied(base) == set()
	escalated(base) == set()
}

# ---- payment_invalid ----

test_payment_invalid_fires_for_missing_amount if {
	"fintech.payment_invalid" in denied(fx.without(base, ["action/arguments/amount"]))
}

test_payment_invalid_fires_for_negative_amount if "fintech.payment_invalid" in denied(args({"amount": -5}))

test_payment_invalid_fires_for_string_amount if "fintech.payment_invalid" in denied(args({"amount": "25000"}))

test_payment_invalid_fires_for_other_currency if "fintech.payment_invalid" in denied(args({"currency": "EUR"}))

test_payment_invalid_fires_for_missing_currency if {
	"fintech.payment_invalid" in denied(fx.without(base, ["action/arguments/currency"]))
}

test_payment_invalid_fires_for_missing_beneficiary if {
	"fintech.payment_invalid" in denied(fx.without(base, ["action/arguments/beneficiary"]))
}

test_payment_invalid_fires_for_missing_counterparty if {
	# Screening needs a name: a payment without one is not skipped past the sanctions check.
	"counterparty name is required for screening" in messages(fx.without(base, ["action/arguments/counterparty"]))
	"counterparty name is required for screening" in messages(args({"counterparty": " . "}))
	"counterparty name is required for screening" in messages(args({"counterparty": 7}))
}

test_payment_invalid_quiet_for_valid_payment if not "fintech.payment_invalid" in denied(base)

test_payment_invalid_quiet_for_other_tools if {
	not "fintech.payment_invalid" in denied(fx.patch(base, {"action": {"tool": "crm.lookup", "arguments": {}}}))
}

# ---- limits ----

test_agent_limit_exceeded_fires if "fintech.agent_limit_exceeded" in denied(args({"amount": 1000000.01}))

test_agent_limit_exceeded_fires_for_agent_without_limit if {
	"fintech.agent_limit_exceeded" in denied(fx.patch(base, {"agent": {"id": "support-bot"}}))
}

test_agent_limit_exceeded_quiet_at_limit if not "fintech.agent_limit_exceeded" in denied(args({"amount": 1000000}))

test_principal_limit_exceeded_fires if "fintech.principal_limit_exceeded" in denied(args({"amount": 500001}))

test_principal_limit_exceeded_quiet_at_limit if not "fintech.principal_limit_exceeded" in denied(args({"amount": 500000}))

test_principal_limit_exceeded_default_limit_without_verified_principal if {
	# No token: the lowest limit, whoever the caller says the principal is.
	"fintech.principal_limit_exceeded" in denied(fx.without(base, ["verified/principal"]))
}

test_principal_limit_exceeded_default_limit_for_unknown_principal if {
	"fintech.principal_limit_exceeded" in denied(fx.patch(base, {"verified": {"principal": {"id": "eve@bank.example"}}}))
}

test_principal_limit_exceeded_asserted_principal_only_lowers if {
	# Carol's limit (50,000) applies too when the caller names her; naming bob cannot raise eve's.
	"fintech.principal_limit_exceeded" in denied(fx.patch(args({"amount": 60000}), {"asserted": {"principal": {"id": "carol@bank.example"}}}))
	eve := fx.patch(args({"amount": 60000}), {"verified": {"principal": {"id": "eve@bank.example"}}})
	"fintech.principal_limit_exceeded" in denied(eve)
	not "fintech.principal_limit_exceeded" in denied(fx.without(args({"amount": 60000}), ["asserted/principal"]))
}

# ---- sanctions ----

test_sanctioned_counterparty_fires_on_name if {
	"fintech.sanctioned_counterparty" in denied(args({"counterparty": "Vostok Maritime Holdings"}))
}

test_sanctioned_counterparty_fires_on_account if {
	"fintech.sanctioned_counterparty" in denied(args({"beneficiary": "LV80BANK0000435195001"}))
}

test_sanctioned_counterparty_quiet if not "fintech.sanctioned_counterparty" in denied(base)

test_sanctioned_counterparty_quiet_for_a_similar_name if {
	not "fintech.sanctioned_counterparty" in denied(args({"counterparty": "Vostok Maritime Holdings Fund"}))
}

# Issue 15: evasions an honest PEP lets through, because the agent chooses the arguments.
name_evasions := [
	"VOSTOK  MARITIME HOLDINGS", # double space
	"  vostok maritime holdings\t", # lower case, outer whitespace
	"Vostok\u00a0Maritime\u2003Holdings", # no-break and em spaces
	"Vostok-Maritime-Holdings", # punctuation for spaces
	"V.O.S.T.O.K. Maritime Holdings", # dots
	"Kestrel Front, Ltd.", # punctuation
	"Kestrel\u200bFront Ltd", # zero-width space
	"\u041a\u0435\u0455tr\u0435l Fr\u043ent Ltd", # Cyrillic look-alikes К е ѕ о
	"V\u043est\u043ek M\u0430ritime H\u043eldings", # Cyrillic o and a inside Latin
	"\uff36\uff2f\uff33\uff34\uff2f\uff2b \uff2d\uff21\uff32\uff29\uff34\uff29\uff2d\uff25 \uff28\uff2f\uff2c\uff24\uff29\uff2e\uff27\uff33", # fullwidth
	"\u039fR\u0399\u039d\u039fC\u039f Defense Supply", # Greek capitals Ο Ι Ν
	"Or\u00ednoco D\u00e9fense Supply", # accents
	"𝐎𝐑𝐈𝐍𝐎𝐂𝐎 DEFENSE SUPPLY", # mathematical bold
]

account_evasions := [
	"lv80bank0000435195001", # lower case
	"LV80 BANK 0000 4351 9500 1", # grouped in fours
	"CY17 0020 0128 0000 0012 0052 7600", # the other account, grouped
	"LV80-BANK-0000-4351-9500-1", # dashes
	"\uff2c\uff36\uff18\uff10BANK0000435195001", # fullwidth letters and digits
]

test_sanctioned_counterparty_fires_for_every_name_evasion if {
	caught := [name |
		some name in name_evasions
		"fintech.sanctioned_counterparty" in denied(args({"counterparty": name}))
	]
	caught == name_evasions
}

test_sanctioned_counterparty_fires_for_every_account_evasion if {
	caught := [account |
		some account in account_evasions
		"fintech.sanctioned_counterparty" in denied(args({"beneficiary": account}))
	]
	caught == account_evasions
}

test_sanctioned_counterparty_fires_for_names_in_other_fields if {
	# Screening reads every string of the arguments, at any depth, not one field name.
	"fintech.sanctioned_counterparty" in denied(args({"creditor": {"name": "kestrel front ltd", "iban": "DE89370400440532013000"}}))
	"fintech.sanctioned_counterparty" in denied(args({"intermediaries": ["cy17 0020 0128 0000 0012 0052 7600"]}))
}

# ---- dual control, new beneficiary, market hours ----

test_dual_control_fires_above_threshold if "fintech.dual_control" in escalated(args({"amount": 100000.5}))

test_dual_control_quiet_at_threshold if not "fintech.dual_control" in escalated(args({"amount": 100000}))

test_new_beneficiary_fires if "fintech.new_beneficiary" in escalated(args({"beneficiary": "NL91ABNA0417164300"}))

test_new_beneficiary_fires_for_principal_without_list if {
	"fintech.new_beneficiary" in escalated(fx.patch(base, {"verified": {"principal": {"id": "eve@bank.example"}}}))
}

test_new_beneficiary_fires_without_verified_principal if {
	# Claiming to be bob, whose list has the account, is not being bob.
	"fintech.new_beneficiary" in escalated(fx.without(base, ["verified/principal"]))
}

test_new_beneficiary_fires_when_the_asserted_principal_lacks_it if {
	"fintech.new_beneficiary" in escalated(fx.patch(base, {"asserted": {"principal": {"id": "carol@bank.example"}}}))
}

test_new_beneficiary_quiet_for_known if not "fintech.new_beneficiary" in escalated(base)

order := fx.patch(base, {
	"agent": {"id": "trading-agent"},
	"action": {"tool": "trading.order", "arguments": {"symbol": "ACME", "quantity": 10}},
})

test_outside_market_hours_fires_before_open if {
	"fintech.outside_market_hours" in denied(fx.patch(order, {"bound": {"time": "2026-11-24T14:29:00Z"}}))
}

test_outside_market_hours_fires_on_saturday if {
	"fintech.outside_market_hours" in denied(fx.patch(order, {"bound": {"time": "2026-11-28T15:00:00Z"}}))
}

test_outside_market_hours_quiet_when_open if not "fintech.outside_market_hours" in denied(order)

test_payment_invalid_fires_for_a_payment_class_tool_off_the_list if {
	# A new payment tool in the registry is screened even before the pack lists it.
	wire := fx.patch(base, {"action": {"tool": "payments.wire", "arguments": {"counterparty": "Kestrel Front Ltd"}}})
	"fintech.sanctioned_counterparty" in denied(wire) with data.pdp.baseline.tools["payments.wire"] as {"class": "payment"}
}

test_outside_market_hours_fires_for_a_trade_class_tool_off_the_list if {
	night := fx.patch(order, {"action": {"tool": "trading.block"}, "bound": {"time": "2026-11-24T23:00:00Z"}})
	"fintech.outside_market_hours" in denied(night) with data.pdp.baseline.tools["trading.block"] as {"class": "trade"}
}
