"""The MCP proxy's pure parts: mapping files and the obligations it carries out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp.pep import mapping, obligations
from pdp.pep.gate import Settings
from pdp.v1 import decision_pb2 as pb
from tests.helpers import EXAMPLES


@pytest.mark.parametrize("name", ["filesystem.json", "git.yaml"])
def test_the_example_mappings_load(name: str) -> None:
    m = mapping.load(EXAMPLES / "mcp" / name)
    assert m.policy_tool("x") == f"{m.server}.x"


def test_a_call_becomes_the_question_with_the_mapped_operation_and_resource() -> None:
    m = mapping.load(EXAMPLES / "mcp" / "filesystem.json")
    ctx = m.context(
        agent=pb.Agent(id="a"), principal=None, tool="read_multiple_files", arguments={"paths": ["/x", "/y"]}
    )
    assert (ctx.action.tool, ctx.action.operation) == ("filesystem.read_multiple_files", "read")
    assert (ctx.resource.type, ctx.resource.id) == ("mcp.file", "/x")
    assert list(ctx.action.arguments["paths"]) == ["/x", "/y"]
    listed = m.context(agent=pb.Agent(id="a"), principal=None, tool="write_file", arguments={}, operation="list")
    assert (listed.action.operation, listed.resource.type) == ("list", "")


def test_an_unmapped_tool_is_an_error_naming_it() -> None:
    m = mapping.load(EXAMPLES / "mcp" / "filesystem.json")
    with pytest.raises(mapping.MappingError, match="'format_disk' matches no rule"):
        m.context(agent=pb.Agent(id="a"), principal=None, tool="format_disk", arguments={})


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ([], "the mapping must be an object"),
        ({"tools": [{"match": "*", "operation": "read"}]}, "mapping.server is required"),
        ({"server": "s", "tools": []}, "tools must be a non-empty list"),
        ({"server": "s", "tools": [{"operation": "read"}]}, r"tools\[0\].match is required"),
        ({"server": "s", "tools": [{"match": "*", "operation": 3}]}, r"tools\[0\].operation must be a string"),
        (
            {"server": "s", "tools": [{"match": "*", "operation": "r", "resource": {"id_from": "p"}}]},
            "type is required",
        ),
        ({"server": "s", "tools": [{"match": "*", "operation": "r", "extra": 1}]}, r"unknown field\(s\) extra"),
        ({"server": "s", "tool_prefx": "x", "tools": [{"match": "*", "operation": "r"}]}, "unknown field"),
    ],
)
def test_invalid_mappings_name_the_field(doc: object, problem: str) -> None:
    with pytest.raises(mapping.MappingError, match=problem):
        mapping.parse(doc)


def test_an_unreadable_or_malformed_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(mapping.MappingError, match="cannot read"):
        mapping.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(mapping.MappingError, match="not valid JSON"):
        mapping.load(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("a: [")
    with pytest.raises(mapping.MappingError, match="not valid YAML"):
        mapping.load(tmp_path / "bad.yaml")


RESULT = {
    "content": [{"type": "text", "text": json.dumps({"name": "Ann", "ssn": "123-45-6789", "kids": [{"ssn": "9"}]})}],
    "structuredContent": {"name": "Ann", "ssn": "123-45-6789"},
}


def test_redact_replaces_the_named_fields_everywhere_and_says_where() -> None:
    plan = obligations.plan([{"type": "redact", "params": {"fields": ["ssn"]}}, {"type": "audit", "params": {}}])
    applied = obligations.apply(plan, RESULT)
    assert applied.result["structuredContent"] == {"name": "Ann", "ssn": obligations.REDACTED}
    assert json.loads(applied.result["content"][0]["text"]) == {
        "name": "Ann",
        "ssn": obligations.REDACTED,
        "kids": [{"ssn": obligations.REDACTED}],
    }
    assert applied.redacted == ["structuredContent.ssn", "content[0].ssn", "content[0].kids[0].ssn"]


def test_cap_result_cuts_the_text_to_the_smallest_cap() -> None:
    plan = obligations.plan(
        [{"type": "cap_result", "params": {"max_bytes": 10}}, {"type": "cap_result", "params": {"max_bytes": 4}}]
    )
    applied = obligations.apply(plan, {"content": [{"type": "text", "text": "abcdef"}, {"type": "text", "text": "gh"}]})
    assert [c["text"] for c in applied.result["content"]] == ["abcd", ""]
    assert applied.truncated_bytes == 4


def test_an_audit_note_goes_to_the_report() -> None:
    assert obligations.plan([{"type": "audit.note", "params": {"note": "ticket 7"}}]).notes == ("ticket 7",)


@pytest.mark.parametrize(
    "obligation",
    [
        {"type": "sandbox", "params": {"reason": "risk.medium"}},
        {"type": "redact", "params": {"categories": ["pii"]}},  # by category: nothing the proxy can find
        {"type": "cap_result", "params": {"max_bytes": "10"}},
    ],
)
def test_obligations_it_cannot_carry_out_are_refused(obligation: dict[str, object]) -> None:
    with pytest.raises(obligations.UnsupportedObligation, match=str(obligation["type"])):
        obligations.plan([obligation])  # type: ignore[list-item]


def test_the_principal_token_file_is_read_for_every_question(tmp_path: Path) -> None:
    token = tmp_path / "principal.jwt"
    settings = Settings(agent=pb.Agent(id="a"), principal_token="ignored", principal_token_file=token)
    token.write_text("first.token.sig\n")
    assert settings.token() == "first.token.sig"
    token.write_text("rotated.token.sig\n")  # whatever refreshes the token rewrites the file
    assert settings.token() == "rotated.token.sig"
    token.unlink()
    with pytest.raises(OSError):
        settings.token()
    assert Settings(agent=pb.Agent(id="a"), principal_token="t.k.s").token() == "t.k.s"
    assert Settings(agent=pb.Agent(id="a")).token() == ""
