package pdp.packs.mcp_test

import data.pdp.packs.mcp

fs(tool, operation, arguments) := {
	"agent": {"id": "coding-agent"},
	"action": {"tool": concat("", ["filesystem.", tool]), "operation": operation, "arguments": arguments},
	"resource": {"type": "mcp.file", "id": object.get(arguments, "path", "")},
}

git(tool, operation) := {
	"agent": {"id": "coding-agent"},
	"action": {
		"tool": concat("", ["git.", tool]), "operation": operation,
		"arguments": {"repo_path": "/srv/mcp/repos/app"},
	},
	"resource": {"type": "mcp.git_repo", "id": "/srv/mcp/repos/app"},
}

denied(inp) := result if {
	result := {r.code | some r in mcp.deny} with input as inp
}

escalated(inp) := result if {
	result := {r.code | some r in mcp.escalate} with input as inp
}

test_read_inside_roots_nothing_fires if {
	inp := fs("read_text_file", "read", {"path": "/srv/mcp/files/a/notes.txt"})
	denied(inp) == set()
	escalated(inp) == set()
}

test_the_root_itself_is_inside if denied(fs("list_directory", "read", {"path": "/srv/mcp/files"})) == set()

test_read_outside_roots_denied if {
	"mcp.path_outside_roots" in denied(fs("read_text_file", "read", {"path": "/etc/passwd"}))
}

test_sibling_with_root_prefix_denied if {
	"mcp.path_outside_roots" in denied(fs("read_text_file", "read", {"path": "/srv/mcp/files-other/x"}))
}

test_dot_dot_escape_denied if {
	"mcp.path_outside_roots" in denied(fs("read_text_file", "read", {"path": "/srv/mcp/files/../../etc/passwd"}))
}

test_every_path_of_a_list_is_checked if {
	inp := fs("read_multiple_files", "read", {"paths": ["/srv/mcp/files/a", "/etc/shadow"]})
	"mcp.path_outside_roots" in denied(inp)
}

test_non_string_path_denied if {
	"mcp.path_outside_roots" in denied(fs("read_multiple_files", "read", {"paths": [7]}))
}

test_write_inside_roots_needs_approval if {
	inp := fs("write_file", "write", {"path": "/srv/mcp/files/new.txt", "content": "x"})
	denied(inp) == set()
	escalated(inp) == {"mcp.approval_required"}
}

test_write_outside_roots_denied if {
	"mcp.path_outside_roots" in denied(fs("write_file", "write", {"path": "/tmp/x", "content": "x"}))
}

test_move_destination_outside_denied if {
	inp := fs("move_file", "write", {"source": "/srv/mcp/files/a", "destination": "/tmp/a"})
	"mcp.path_outside_roots" in denied(inp)
}

test_delete_denied if {
	"mcp.operation_denied" in denied(fs("move_file", "delete", {"source": "/srv/mcp/files/a"}))
}

test_listing_names_no_path if {
	inp := {"agent": {"id": "coding-agent"}, "action": {"tool": "filesystem.write_file", "operation": "list"}}
	denied(inp) == set()
	escalated(inp) == set()
}

test_git_read_allowed if {
	denied(git("git_status", "read")) == set()
	escalated(git("git_log", "read")) == set()
}

test_git_commit_needs_approval if escalated(git("git_commit", "write")) == {"mcp.approval_required"}

test_git_push_needs_approval if escalated(git("git_push", "publish")) == {"mcp.approval_required"}

test_git_repo_outside_roots_denied if {
	inp := json.patch(git("git_status", "read"), [
		{"op": "replace", "path": "/action/arguments/repo_path", "value": "/home/me/secret"},
		{"op": "replace", "path": "/resource/id", "value": "/home/me/secret"},
	])
	"mcp.path_outside_roots" in denied(inp)
}

test_other_tools_are_not_this_packs if {
	inp := {
		"action": {"tool": "crm.lookup", "operation": "delete", "arguments": {"path": "/etc"}},
		"resource": {"id": "/etc"},
	}
	denied(inp) == set()
	escalated(inp) == set()
}

test_a_servers_obligations_come_with_its_calls if {
	obligations := mcp.obligations with input as git("git_log", "read")
	obligations == {{"type": "cap_result", "params": {"max_bytes": 1048576}}}
}
