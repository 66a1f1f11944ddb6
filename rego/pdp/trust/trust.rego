# METADATA
# title: Trust model
# description: |
#   The facts every rule decides on, each from the provenance the trust model gives it
#   (docs/trust-model.md): the question (input.agent, input.action, input.resource type/id),
#   values the PDP bound (input.bound), facts the PDP verified from signatures
#   (input.verified), facts looked up in the catalogue (data.pdp.catalog), and what the
#   caller merely asserted (input.asserted), which may only make a decision stricter.
#   A fact that is unknown takes its most restrictive value.
package pdp.trust

_catalog := data.pdp.catalog

_levels := data.pdp.baseline.classification_levels

# ---- asserted: read only through this function, so a reader sees every use ----

_asserted_doc := object.get(input, "asserted", {})

# METADATA
# title: Asserted value
# description: |
#   What the caller asserted at `path` (an array of keys), or `default_value` when it did
#   not say. Asserted values may only make a decision stricter (deny or escalate).
asserted(path, default_value) := object.get(_asserted_doc, path, default_value)

_asserted_list(path) := value if {
	value := asserted(path, [])
	is_array(value)
} else := []

_asserted_text(path) := value if {
	value := asserted(path, "")
	is_string(value)
} else := ""

# ---- the question ----

_text(value) := value if is_string(value)

_text(value) := "" if not is_string(value)

# METADATA
# title: Tool
# description: The tool the action uses (part of the question).
tool := _text(object.get(input.action, "tool", ""))

# METADATA
# title: Resource type
# description: The resource's type as the question names it ("" when none).
resource_type := _text(object.get(object.get(input, "resource", {}), "type", ""))

# METADATA
# title: Resource id
# description: The resource's id as the question names it ("" when none).
resource_id := _text(object.get(object.get(input, "resource", {}), "id", ""))

# METADATA
# title: Address
# description: The destination address of the action, trimmed and lower-cased ("" when none).
address := lower(trim_space(_text(object.get(object.get(input.action, "destination", {}), "address", ""))))

# ---- verified principal ----

# METADATA
# title: Verified principal id
# scope: document
# description: The `sub` of a valid principal token; "" when there is none (no principal-based allow).
default verified_principal_id := ""

verified_principal_id := id if {
	id := input.verified.principal.id
	is_string(id)
	id != ""
}

# METADATA
# title: Verified roles
# description: The roles of the verified principal (none without a valid token).
verified_roles contains role if {
	verified_principal_id != ""
	some role in input.verified.principal.roles
}

# METADATA
# title: Asserted principal id
# description: The principal id the caller asserted ("" when none); it may only add restrictions.
asserted_principal_id := _asserted_text(["principal", "id"])

# METADATA
# title: Principal ids
# scope: document
# description: |
#   Every principal a restriction must hold for: the verified one ("" when there is none,
#   which nothing is granted to) and, when the caller named one, the asserted one.
principal_ids contains verified_principal_id

principal_ids contains asserted_principal_id if asserted_principal_id != ""

# ---- purpose of use ----

default _verified_purpose := ""

_verified_purpose := p if {
	verified_principal_id != ""
	p := input.verified.principal.purpose_of_use
	is_string(p)
	p != ""
}

# METADATA
# title: Purpose of use
# scope: document
# description: |
#   The verified token's purpose claim when it carries one; otherwise none (""), so an
#   asserted purpose cannot relax a decision. A deployment may knowingly relax this by
#   setting data.pdp.baseline.purpose_from_token_only to false (nothing else relaxes it, not
#   even a missing setting): the asserted purpose then counts when the token carries none.
#   A purpose only selects requirements, and those rest on verified and looked-up facts.
default purpose := ""

purpose := _verified_purpose if _verified_purpose != ""

purpose := _asserted_text(["purpose_of_use"]) if {
	_verified_purpose == ""
	data.pdp.baseline.purpose_from_token_only == false
}

# METADATA
# title: Purpose mismatch
# description: The caller asserted a purpose different from the one its verified token carries.
purpose_mismatch if {
	_verified_purpose != ""
	claimed := _asserted_text(["purpose_of_use"])
	claimed != ""
	claimed != _verified_purpose
}

# ---- resource labels: looked up in the catalogue, asserted labels only add ----

_no_resource := {
	"classification": data.pdp.baseline.unlabelled_as,
	"data_categories": [], "compartments": [], "owner": "",
}

# METADATA
# title: Catalogued
# scope: document
# description: The catalogue labels the resource, by its own entry or by its type's default.
catalogued if _catalog.resources[resource_type][resource_id]

catalogued if {
	not _catalog.resources[resource_type][resource_id]
	resource_id != ""
	_catalog.resource_types[resource_type]
}

# The catalogue's labels; a named resource it does not know is UNCLASSIFIED (most
# restrictive); an action without a resource carries the unlabelled default.
_labels := entry if {
	entry := _catalog.resources[resource_type][resource_id]
} else := entry if {
	resource_id != ""
	entry := _catalog.resource_types[resource_type]
} else := _no_resource if {
	resource_type == ""
	resource_id == ""
} else := _catalog.unknown_resource

_catalog_level := _levels[_labels.classification] if {
	is_string(_labels.classification)
} else := _levels[_catalog.unknown_resource.classification]

default _asserted_level := 0

_asserted_level := level if {
	level := asserted(["resource", "classification_level"], 0)
	is_number(level)
}

_asserted_named_level := object.get(_levels, lower(_asserted_text(["resource", "classification"])), 0)

# METADATA
# title: Resource level
# description: |
#   The classification rank the rules use: the highest of the catalogue's label, the
#   unlabelled default and any asserted label (an assertion can only raise it).
resource_level := max([
	_catalog_level, _levels[data.pdp.baseline.unlabelled_as],
	_asserted_level, _asserted_named_level,
])

# METADATA
# title: Resource classification
# description: The name of resource_level.
resource_classification := object.get(_level_names, resource_level, sprintf("level-%v", [resource_level]))

_level_names[level] := name if some name, level in _levels

_label_set(key) := {c | some c in object.get(_labels, key, []); is_string(c)}

# METADATA
# title: Data categories
# description: The catalogue's data categories of the resource, plus any the caller asserted.
data_categories := _label_set("data_categories") | {c | some c in _asserted_list(["resource", "data_categories"])}

# METADATA
# title: Compartments
# description: The catalogue's compartments of the resource, plus any the caller asserted.
compartments := _label_set("compartments") | {c | some c in _asserted_list(["resource", "compartments"])}

# METADATA
# title: Resource owner
# description: The resource's owner from the catalogue only ("" when unknown).
resource_owner := _text(object.get(_labels, "owner", ""))

# ---- environment: the PEP registry, asserted names only add ----

_caller := object.get(input.bound, "caller", {})

# The certificate names a registry name may match, as for agent callers (pdp.baseline,
# _caller_names in identity.rego): a `spiffe://` name matches only the URI SANs; any other
# name matches the subject or SANs. A subject CN that spells a SPIFFE id matches nothing.
_caller_names(name) := object.get(_caller, "uri_sans", []) if startswith(name, "spiffe://")

_caller_names(name) := array.concat([object.get(_caller, "subject", "")], object.get(_caller, "sans", [])) if {
	not startswith(name, "spiffe://")
}

_looked_up_environments contains pep.environment if {
	_caller.authenticated == true
	some name, pep in _catalog.peps
	name != ""
	name in _caller_names(name)
}

_pep_environments := _looked_up_environments if {
	count(_looked_up_environments) > 0
} else := {_catalog.unknown_pep.environment}

# METADATA
# title: Environments
# description: |
#   The environments the action runs in: what the PEP registry says for the authenticated
#   caller (the most restrictive one when it is unknown), plus any the caller asserted.
environments := _pep_environments | ({_asserted_text(["environment", "name"])} - {""})

# ---- destination: internal only by address ----

_host_of(addr) := host if {
	contains(addr, "://")
	m := regex.find_all_string_submatch_n(`^[^:]*://(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)`, addr, 1)
	host := trim(m[0][1], "[]")
} else := host if {
	contains(addr, "@")
	parts := split(addr, "@")
	host := parts[count(parts) - 1]
} else := host if {
	regex.match(`^[^:/]*:[0-9]+(/.*)?$`, addr)
	host := split(addr, ":")[0]
} else := split(addr, "/")[0]

# METADATA
# title: Destination host
# description: The domain or IP of the address (after "@", the host of a URL, or the bare name).
destination_host := trim_right(_host_of(address), ".")

_internal_address if {
	destination_host != ""
	some domain in _catalog.internal_domains
	_in_domain(destination_host, lower(domain))
}

_internal_address if {
	regex.match(`^[0-9.]+$|^[0-9a-f:]+$`, destination_host)
	some network in _catalog.internal_networks
	net.cidr_contains(network, destination_host)
}

_in_domain(host, domain) if host == domain

_in_domain(host, domain) if endswith(host, concat("", [".", domain]))

_asserted_external if _asserted_text(["destination", "kind"]) in data.pdp.baseline.egress.external_kinds

# METADATA
# title: Egress
# scope: document
# description: |
#   Data leaves to a destination: the tool is an egress tool, the action names an address,
#   or the caller says the destination is external.
egress if data.pdp.baseline.tools[tool].egress == true

egress if address != ""

egress if _asserted_external

# METADATA
# title: Leaves the organisation
# scope: document
# description: |
#   The action sends data to an address that is not internal by the catalogue's domains and
#   networks (an empty or unknown address on an egress tool is external), or the caller
#   says it is external.
leaves_organisation if {
	egress
	not _internal_address
}

leaves_organisation if _asserted_external

# METADATA
# title: Destination internal
# scope: document
# description: Nothing leaves the organisation (the fact recorded in the decision).
default destination_internal := false

destination_internal if not leaves_organisation

# ---- risk ----

_risk := data.pdp.baseline.risk

default _asserted_score := 0

_asserted_score := score if {
	score := asserted(["risk", "score"], 0)
	is_number(score)
}

# METADATA
# title: Risk verified
# description: A configured risk engine's signed assessment of this action is present.
risk_verified if is_number(input.verified.risk.score)

default _unverified_score := 0

_unverified_score := _risk.unverified_score if {
	data.pdp.baseline.action_class in _risk.verified_required_for_classes
}

# METADATA
# title: Risk score
# scope: document
# description: |
#   The verified score when there is one, else the class's unverified score (high for the
#   classes that need a verified assessment); an asserted score can only raise it.
risk_score := max([input.verified.risk.score, _asserted_score]) if risk_verified

risk_score := max([_unverified_score, _asserted_score]) if not risk_verified

# ---- lineage ----

# METADATA
# title: Verified lineage
# scope: document
# description: The lineage entries the PDP verified from source systems' signed attestations.
default verified_lineage := []

verified_lineage := entries if {
	entries := input.verified.lineage
	is_array(entries)
}

# METADATA
# title: Asserted lineage
# description: The lineage entries the caller asserted; they can only make lineage incomplete.
asserted_lineage := _asserted_list(["lineage"])

# ---- the facts the decision rested on ----

# METADATA
# title: Facts
# description: The looked-up values the decision rested on, for the signed record.
facts := {
	"catalog_revision": _catalog.revision,
	"resource": {
		"classification": resource_classification,
		"level": resource_level,
		"data_categories": sort(data_categories),
		"compartments": sort(compartments),
		"owner": resource_owner,
		"catalogued": catalogued_fact,
	},
	"environment": sort(environments),
	"destination_internal": destination_internal,
}

# METADATA
# title: Catalogued (as a value)
# scope: document
# description: Whether the catalogue labels the resource, as a boolean.
default catalogued_fact := false

catalogued_fact if catalogued
