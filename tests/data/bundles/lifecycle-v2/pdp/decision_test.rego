package pdp_test

import data.pdp

test_decision_known_tool if {
	pdp.decision.outcome == "allow" with input as {"action": {"tool": "ehr.read"}}
}

test_decision_unknown_tool if {
	pdp.decision.reasons == [{"code": "tool.deny", "message": "nope"}] with input as {"action": {"tool": "nope"}}
}

test_decisions_one_per_request if {
	count(pdp.decisions) == 2 with input as {"requests": [{}, {"action": {"tool": "ehr.read"}}]}
}
