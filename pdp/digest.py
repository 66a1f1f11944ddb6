"""The action digest: one hash that names exactly what an agent is about to do.

Approvals are bound to it (an approval for another action never applies), records carry it,
and an enforcement point recomputes it from the call it is about to make before acting on a
decision. The recipe, for a PEP in any language:

1. Build this JSON object from the request (absent strings are ``""``, absent arguments ``{}``)::

       {"agent": <agent.id>, "tool": <action.tool>, "operation": <action.operation>,
        "arguments": <action.arguments as JSON>,
        "resource": {"type": <resource.type>, "id": <resource.id>},
        "destination": {"kind": <action.destination.kind>, "address": <action.destination.address>}}

2. Serialise it with the JSON Canonicalization Scheme (RFC 8785): sorted keys, no whitespace,
   numbers in ECMAScript form (tool arguments are protobuf Struct values, i.e. IEEE doubles).
3. ``"sha256:" + lowercase hex(SHA-256(those bytes))``.
"""

from __future__ import annotations

from typing import Any

import rfc8785
from google.protobuf import json_format, message

from pdp.encoding import sha256_digest


def action_digest(input_doc: dict[str, Any]) -> str:
    """The action digest of an OPA input document built by :func:`pdp.context.build_input`.

    The input keeps the question (agent, action, resource) at its top level and the destination
    kind, which the caller asserts, under ``asserted``; the recipe above is unchanged.
    """
    action = input_doc["action"]
    resource = input_doc["resource"]
    subject = {
        "agent": input_doc["agent"]["id"],
        "tool": action["tool"],
        "operation": action["operation"],
        "arguments": action["arguments"],
        "resource": {"type": resource["type"], "id": resource["id"]},
        "destination": {
            "kind": input_doc["asserted"]["destination"]["kind"],
            "address": action["destination"]["address"],
        },
    }
    return sha256_digest(rfc8785.dumps(subject))


def request_digest(request: message.Message) -> str:
    """The request digest: one hash of the whole ``DecideRequest`` a PEP sent (tokens included).

    Records carry it (``pdp.request_digest``) so a PEP can check that a record answers exactly
    the request it sent, not only the same action. The recipe, for a PEP in any language:
    the request in the proto3 JSON mapping (lowerCamelCase field names, fields at their default
    value omitted, enums by name, 64-bit integers as strings), serialised with RFC 8785, then
    ``"sha256:" + lowercase hex(SHA-256(those bytes))``.
    """
    doc = json_format.MessageToDict(request)
    return sha256_digest(rfc8785.dumps(doc))
