package pdp.budgets

# METADATA
# title: Agent call rate
# description: |
#   Every decision for an agent listed in config.baseline.calls_per_minute counts one call
#   against that agent's rate (a sliding minute).
claims contains {
	"budget": "baseline.calls",
	"key": _agent,
	"amount": 1,
	"limit": limit,
	"window": "1m",
} if {
	limit := _config.baseline.calls_per_minute[input.agent.id]
}
