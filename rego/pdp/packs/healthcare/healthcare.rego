# METADATA
# title: Healthcare pack
# description: |
#   HIPAA controls on protected health information (PHI): a permitted purpose of use, the
#   role and care relationship that purpose needs, minimum necessary fields, de-identified
#   export, and break-glass access that escalates and is flagged for review.
package pdp.packs.healthcare

import data.pdp.lib

# METADATA
# title: PHI purpose of use required
# description: PHI is used only for treatment, payment, operations (or emergency break-glass).
# custom:
#   code: hipaa.purpose_required
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	not _purpose
	msg := sprintf("purpose of use %q is not a HIPAA purpose for PHI", [input.purpose_of_use])
}

# METADATA
# title: Role not permitted for the purpose
# description: The principal must hold a role the purpose of use permits.
# custom:
#   code: hipaa.role_not_permitted
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	_purpose
	count({r | some r in input.principal.roles; r in _purpose.roles}) == 0
	msg := sprintf("%s needs one of the roles %v", [input.purpose_of_use, _purpose.roles])
}

# METADATA
# title: No care relationship
# description: Treatment access needs the principal on the patient's care team.
# custom:
#   code: hipaa.no_care_relationship
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	_purpose.care_relationship == true
	not input.principal.id in object.get(_cfg.care_teams, input.resource.owner, [])
	msg := sprintf("%q is not on the care team of %q", [input.principal.id, input.resource.owner])
}

# METADATA
# title: Break-glass access
# description: Emergency access outside the care team needs a privacy officer and is flagged.
# custom:
#   code: hipaa.break_glass
#   severity: high
escalate contains lib.escalation(rego.metadata.rule(), "break-glass access to PHI", "privacy_officer", 1) if {
	_phi
	_purpose.break_glass == true
}

# Minimum necessary: the PEP passes on only the fields the purpose needs.
obligations contains {"type": "minimum_necessary", "params": {"keep": _purpose.fields, "drop": drop}} if {
	_phi
	drop := sort({f | some f in object.get(input.action.arguments, "fields", []); not f in _purpose.fields})
}

obligations contains {"type": "deidentify", "params": {"method": _cfg.deidentification}} if {
	_phi
	data.pdp.baseline.action_class == "export"
}

obligations contains {"type": "flag", "params": {"tag": "break_glass", "review": "privacy_office"}} if {
	_phi
	_purpose.break_glass == true
}

_cfg := data.pdp.packs.healthcare.config

_phi if _cfg.phi_category in input.resource.data_categories

_purpose := _cfg.purposes[input.purpose_of_use]
