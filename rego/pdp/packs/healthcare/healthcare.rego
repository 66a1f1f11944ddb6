# METADATA
# title: Healthcare pack
# description: |
#   HIPAA controls on protected health information (PHI): a permitted purpose of use, the
#   role and care relationship that purpose needs, minimum necessary fields, de-identified
#   export, and break-glass access that escalates and is flagged for review. Whether data
#   is PHI and whose record it is come from the catalogue; roles and the care relationship
#   from the verified principal; the purpose from its token (an asserted purpose counts only
#   where a deployment sets data.pdp.baseline.purpose_from_token_only to false, and then only
#   selects which verified requirements apply).
package pdp.packs.healthcare

import data.pdp.lib
import data.pdp.trust

# METADATA
# title: PHI purpose of use required
# description: PHI is used only for treatment, payment, operations (or emergency break-glass).
# custom:
#   code: hipaa.purpose_required
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	purpose := trust.purpose
	not _cfg.purposes[purpose]
	msg := sprintf("purpose of use %q is not a HIPAA purpose for PHI", [purpose])
}

# METADATA
# title: Purpose of use mismatch
# description: The asserted purpose of use differs from the one the principal's token carries.
# custom:
#   code: hipaa.purpose_mismatch
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	trust.purpose_mismatch
	msg := sprintf("the principal's token says purpose %q; the request says otherwise", [trust.purpose])
}

# METADATA
# title: Role not permitted for the purpose
# description: The verified principal must hold a role the purpose of use permits.
# custom:
#   code: hipaa.role_not_permitted
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	count(trust.verified_roles & {r | some r in _purpose.roles}) == 0
	msg := sprintf("%s needs a verified principal with one of the roles %v", [trust.purpose, _purpose.roles])
}

# METADATA
# title: No care relationship
# description: |
#   Treatment access needs the principal (the verified one, and the asserted one when
#   named) on the care team of the record's owner as the catalogue gives it.
# custom:
#   code: hipaa.no_care_relationship
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	_phi
	_purpose.care_relationship == true
	team := object.get(_cfg.care_teams, trust.resource_owner, [])
	some who in trust.principal_ids
	not who in team
	msg := sprintf("%q is not on the care team of %q", [who, trust.resource_owner])
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
	drop := sort({f | some f in _requested_fields} - {f | some f in _purpose.fields})
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

_phi if _cfg.phi_category in trust.data_categories

_purpose := _cfg.purposes[trust.purpose]

# The fields the action asks for (none when `fields` is missing or not a list).
default _requested_fields := []

_requested_fields := fields if {
	fields := input.action.arguments.fields
	is_array(fields)
}
