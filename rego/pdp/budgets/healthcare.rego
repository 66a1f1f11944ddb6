package pdp.budgets

# METADATA
# title: Patient records read per hour
# description: |
#   Each read of a patient record (resource types in config.healthcare.record_types) counts
#   one against the agent's hourly limit, however it is split over calls.
claims contains {
	"budget": "healthcare.records_read",
	"key": _agent,
	"amount": 1,
	"limit": object.get(_healthcare.records_per_hour.agents, _agent, _healthcare.records_per_hour.default),
	"window": "1h",
} if {
	_pack_enabled("healthcare")
	input.resource.type in _healthcare.record_types
	input.action.operation == "read"
}

_healthcare := _config.healthcare
