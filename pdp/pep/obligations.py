"""The obligations the MCP proxy carries out on an allowed call's result.

An allow binds the enforcement point to every obligation that comes with it. The proxy knows:

- ``audit`` (``{"level": ...}``): the outcome report is sent (always, so nothing more to do);
- ``audit.note`` (``{"note": str}``): the note goes into the outcome report;
- ``redact`` (``{"fields": [str, ...]}``): those keys are replaced by ``"[REDACTED]"`` wherever they
  occur in the result's ``structuredContent`` and in text content that is JSON;
- ``cap_result`` (``{"max_bytes": int}``): the result's text content is cut to that many UTF-8 bytes.

Any other obligation, or a known one with parameters it cannot carry out (e.g. ``redact`` by data
category, without field names), is not understood, and the call is refused before it is forwarded.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from pdp.errors import PdpError

REDACTED = "[REDACTED]"


class UnsupportedObligation(PdpError):
    """An obligation the proxy cannot carry out; the message names it."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan:
    """What to do to one call's result, checked before the call is forwarded."""

    redact: frozenset[str] = frozenset()
    max_bytes: int | None = None
    notes: tuple[str, ...] = ()
    audit_level: str = ""


def plan(obligations: list[dict[str, Any]]) -> Plan:
    """Checks every obligation of a decision and returns what to carry out.

    Raises:
        UnsupportedObligation: one of them is unknown or has parameters the proxy cannot honour.
    """
    redact: set[str] = set()
    caps: list[int] = []
    notes: list[str] = []
    level = ""
    for o in obligations:
        kind = o.get("type", "")
        params = o.get("params") or {}
        if kind == "audit":
            level = str(params.get("level", "standard"))
        elif kind == "audit.note" and isinstance(params.get("note"), str):
            notes.append(params["note"])
        elif kind == "redact" and _strings(params.get("fields")):
            redact.update(params["fields"])
        elif kind == "cap_result" and isinstance(params.get("max_bytes"), int | float) and params["max_bytes"] >= 0:
            caps.append(int(params["max_bytes"]))
        else:
            raise UnsupportedObligation(f"obligation {kind!r} with params {json.dumps(params, sort_keys=True)}")
    return Plan(redact=frozenset(redact), max_bytes=min(caps) if caps else None, notes=tuple(notes), audit_level=level)


def _strings(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Applied:
    """The result as it goes to the client, and what was done to it (for the outcome report)."""

    result: dict[str, Any]
    redacted: list[str]
    truncated_bytes: int


def apply(p: Plan, result: dict[str, Any]) -> Applied:
    """Carries out a plan on a ``tools/call`` result (a CallToolResult as JSON)."""
    out = dict(result)
    hits: list[str] = []
    if p.redact:
        if isinstance(out.get("structuredContent"), dict):
            out["structuredContent"] = _redact(out["structuredContent"], p.redact, "structuredContent", hits)
        out["content"] = [
            _redact_text(c, p.redact, f"content[{i}]", hits) for i, c in enumerate(out.get("content", []))
        ]
    cut = 0
    if p.max_bytes is not None:
        budget = p.max_bytes
        capped = []
        for c in out.get("content", []):
            if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str):
                data = c["text"].encode()
                keep = data[: max(budget, 0)].decode(errors="ignore")
                cut += len(data) - len(keep.encode())
                budget -= len(keep.encode())
                capped.append({**c, "text": keep})
            else:
                capped.append(c)
        out["content"] = capped
    return Applied(result=out, redacted=hits, truncated_bytes=cut)


def _redact_text(c: Any, fields: frozenset[str], where: str, hits: list[str]) -> Any:
    if not (isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)):
        return c
    try:
        doc = json.loads(c["text"])
    except json.JSONDecodeError:
        return c
    before = len(hits)
    doc = _redact(doc, fields, where, hits)
    return {**c, "text": json.dumps(doc)} if len(hits) > before else c


def _redact(value: Any, fields: frozenset[str], where: str, hits: list[str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in fields:
                hits.append(f"{where}.{k}")
                out[k] = REDACTED
            else:
                out[k] = _redact(v, fields, f"{where}.{k}", hits)
        return out
    if isinstance(value, list):
        return [_redact(v, fields, f"{where}[{i}]", hits) for i, v in enumerate(value)]
    return value
