package custom.regal.rules.trust["asserted-relaxes_test"]

import data.custom.regal.rules.trust["asserted-relaxes"] as rule

lint(policy) := report if {
	module := regal.parse_module("p.rego", policy)
	report := rule.report with input as module
}

test_asserted_relaxes_fires_for_allow_reading_asserted if {
	count(lint("package p\n\nallow if input.asserted.agent.version == \"1\"\n")) == 1
}

test_asserted_relaxes_fires_for_allow_calling_the_accessor if {
	count(lint("package p\n\nimport data.pdp.trust\n\nallow if trust.asserted([\"x\"], 0) == 1\n")) == 1
}

test_asserted_relaxes_fires_for_allow_reading_whole_input if {
	count(lint("package p\n\nallow if object.get(input, [\"asserted\", \"x\"], 0) == 1\n")) == 1
}

test_asserted_relaxes_fires_for_negated_asserted_in_deny if {
	count(lint("package p\n\ndeny contains 1 if not input.asserted.environment.change_ref\n")) == 1
}

test_asserted_relaxes_fires_for_every_over_asserted_in_escalate if {
	count(lint("package p\n\nescalate contains 1 if {\n\tevery e in input.asserted.lineage {\n\t\te.verified\n\t}\n}\n")) == 1
}

test_asserted_relaxes_quiet_for_stricter_use if {
	count(lint("package p\n\ndeny contains 1 if input.asserted.risk.score > 90\n")) == 0
}

test_asserted_relaxes_quiet_for_verified_data if {
	count(lint("package p\n\nallow if input.verified.principal.id == \"a\"\n")) == 0
	count(lint("package p\n\ndeny contains 1 if not input.verified.principal\n")) == 0
}
