"""The per-server mapping file: how an MCP tool call becomes the question a PDP answers.

A mapping file (JSON, or YAML when PyYAML is installed) names the server, the prefix that makes
its tool names unique in the PDP's tool registry, and for each tool (first matching glob wins)
the operation and where the resource id comes from::

    {"server": "filesystem", "tool_prefix": "filesystem.",
     "tools": [{"match": "read_*", "operation": "read",
                "resource": {"type": "mcp.file", "id_from": "path"}}],
     "default": {"operation": "execute"}}

A tool that matches no rule and has no ``default`` is refused by the proxy (fail closed).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from pdp.errors import PdpError
from pdp.v1 import decision_pb2 as pb


class MappingError(PdpError):
    """The mapping file is not valid; the message names the field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ToolRule:
    """How the calls of the tools matching ``match`` are put to the PDP."""

    match: str
    operation: str
    resource_type: str = ""
    id_from: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mapping:
    """A validated mapping file."""

    server: str
    tool_prefix: str
    rules: tuple[ToolRule, ...]
    default: ToolRule | None

    def rule_for(self, tool: str) -> ToolRule | None:
        """The first rule whose glob matches the MCP tool name, else the default (None: unmapped)."""
        for rule in self.rules:
            if fnmatch.fnmatchcase(tool, rule.match):
                return rule
        return self.default

    def policy_tool(self, tool: str) -> str:
        """The tool name the PDP sees: the prefix, then the MCP tool name."""
        return self.tool_prefix + tool

    def context(
        self,
        *,
        agent: pb.Agent,
        principal: pb.Principal | None,
        tool: str,
        arguments: dict[str, Any],
        operation: str | None = None,
    ) -> pb.ActionContext:
        """The action context of a call of ``tool`` with ``arguments``.

        Args:
            agent: who calls (from the proxy's configuration, never from the arguments).
            principal: on whose behalf, if known (ditto).
            tool: the MCP tool name.
            arguments: the call's arguments, exactly as they will be forwarded.
            operation: overrides the mapped operation (``list`` for tools/list).

        Raises:
            MappingError: the tool is not mapped.
        """
        rule = self.rule_for(tool)
        if rule is None:
            raise MappingError(f"tool {tool!r} matches no rule of the {self.server} mapping and there is no default")
        args = struct_pb2.Struct()
        args.update(arguments)
        ctx = pb.ActionContext(agent=agent, action=pb.Action(tool=self.policy_tool(tool), arguments=args))
        ctx.action.operation = rule.operation if operation is None else operation
        if principal is not None:
            ctx.principal.CopyFrom(principal)
        if operation is None and rule.resource_type:
            ctx.resource.type = rule.resource_type
            ctx.resource.id = _resource_id(arguments.get(rule.id_from)) if rule.id_from else ""
        return ctx


def _resource_id(value: Any) -> str:
    # A list of ids (e.g. read_multiple_files' paths) names its first; the policy checks every one.
    if isinstance(value, list):
        value = value[0] if value else ""
    return value if isinstance(value, str) else ""


def load(path: Path) -> Mapping:
    """Reads and validates a mapping file.

    Raises:
        MappingError: unreadable, not JSON/YAML, or a field is missing or of the wrong type.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise MappingError(f"cannot read the mapping file {path}: {e.strerror}") from None
    if path.suffix in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:
            raise MappingError(f"{path}: YAML mapping files need PyYAML installed; use JSON") from None
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise MappingError(f"{path}: not valid YAML: {e}") from None
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise MappingError(f"{path}: not valid JSON: {e}") from None
    return parse(doc, where=str(path))


def parse(doc: Any, *, where: str = "mapping") -> Mapping:
    """Validates a mapping document (the parsed file).

    Raises:
        MappingError: naming the field that is wrong.
    """
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: the mapping must be an object")
    unknown = sorted(set(doc) - {"server", "tool_prefix", "tools", "default", "description"})
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {', '.join(unknown)}")
    server = _string(doc, "server", where, required=True)
    prefix = _string(doc, "tool_prefix", where)
    tools = doc.get("tools")
    if not isinstance(tools, list) or not tools:
        raise MappingError(f"{where}: tools must be a non-empty list of rules")
    rules = tuple(_rule(r, f"{where}: tools[{i}]", needs_match=True) for i, r in enumerate(tools))
    default = None
    if "default" in doc:
        default = _rule(doc["default"], f"{where}: default", needs_match=False)
    return Mapping(server=server, tool_prefix=prefix, rules=rules, default=default)


def _rule(raw: Any, where: str, *, needs_match: bool) -> ToolRule:
    if not isinstance(raw, dict):
        raise MappingError(f"{where} must be an object")
    unknown = sorted(set(raw) - {"match", "operation", "resource"})
    if unknown:
        raise MappingError(f"{where}: unknown field(s) {', '.join(unknown)}")
    match = _string(raw, "match", where, required=needs_match) if needs_match else "*"
    operation = _string(raw, "operation", where, required=True)
    resource = raw.get("resource", {})
    if not isinstance(resource, dict):
        raise MappingError(f"{where}.resource must be an object")
    unknown = sorted(set(resource) - {"type", "id_from"})
    if unknown:
        raise MappingError(f"{where}.resource: unknown field(s) {', '.join(unknown)}")
    rtype = _string(resource, "type", f"{where}.resource", required=bool(resource))
    id_from = _string(resource, "id_from", f"{where}.resource")
    return ToolRule(match=match, operation=operation, resource_type=rtype, id_from=id_from)


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise MappingError(f"{where}.{key} must be a string")
    if required and not value:
        raise MappingError(f"{where}.{key} is required")
    return value
