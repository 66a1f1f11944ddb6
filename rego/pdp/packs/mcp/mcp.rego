# METADATA
# title: MCP servers pack
# description: |
#   Tool calls that reach MCP servers through `pdp mcp-proxy`: file and repository paths must
#   stay inside the roots configured for each server, some operations need an approver and
#   some are never allowed. It reads only the question (tool, operation, arguments, resource)
#   and its own data, so it works whatever else the input carries.
package pdp.packs.mcp

import data.pdp.lib

_cfg := data.pdp.packs.mcp.config

# The configured server whose tool prefix the tool name starts with.
_server := srv if {
	some srv in _cfg.servers
	startswith(input.action.tool, srv.tool_prefix)
}

# Every path the call names: the resource id and each configured path argument (a string or a list).
_paths contains p if {
	_server
	p := input.resource.id
	p != ""
}

_paths contains p if {
	some name in _server.path_arguments
	p := input.action.arguments[name]
	is_string(p)
}

_paths contains p if {
	some name in _server.path_arguments
	some p in input.action.arguments[name]
}

_inside(p) if {
	is_string(p)
	not ".." in split(p, "/")
	some root in _server.roots
	_under(p, root)
}

_under(p, root) if p == root

_under(p, root) if startswith(p, concat("", [trim_suffix(root, "/"), "/"]))

# METADATA
# title: Path outside the allowed roots
# description: An MCP tool may touch only paths inside the roots configured for its server.
# custom:
#   code: mcp.path_outside_roots
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	some p in _paths
	not _inside(p)
	msg := sprintf("%v is outside the roots %v allowed for %s", [p, _server.roots, input.action.tool])
}

# METADATA
# title: Operation not allowed
# description: Some operations (e.g. delete) are never allowed through an MCP server.
# custom:
#   code: mcp.operation_denied
#   severity: high
deny contains lib.reason(rego.metadata.rule(), msg) if {
	input.action.operation in _server.denied_operations
	msg := sprintf("%s is a %s operation, which is not allowed through MCP", [input.action.tool, input.action.operation])
}

# METADATA
# title: Operation needs approval
# description: Operations that change things (e.g. write, commit) need an approver first.
# custom:
#   code: mcp.approval_required
#   severity: medium
escalate contains lib.escalation(rego.metadata.rule(), msg, _server.approver_role, 1) if {
	input.action.operation in _server.approval_operations
	msg := sprintf("%s is a %s operation: %s must approve it", [
		input.action.tool, input.action.operation,
		_server.approver_role,
	])
}

# METADATA
# title: Server obligations
# description: |
#   Obligations a server's config attaches to every allowed call of its tools (e.g. redact named
#   fields of the result, cap its size, add an audit note); the proxy refuses those it cannot
#   carry out.
obligations contains o if {
	some o in _server.obligations
}
