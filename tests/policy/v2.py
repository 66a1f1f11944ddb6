"""The policy input v2 (docs/trust-model.md) built from an example request, as the PDP builds it.

The examples in ``examples/`` are DecideRequest JSON. Their context becomes ``input.asserted``;
the question fields become ``input.agent`` / ``input.action`` / ``input.resource``; and, standing in
for the tokens an honest PEP forwards, the asserted principal, risk and lineage are copied into
``input.verified`` as the PDP would after checking their signatures.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import subprocess
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
REGO = ROOT / "rego"
OPA = os.environ.get("PDP_OPA_BIN") or str(ROOT / ".bin" / "opa")
TIME = "2026-11-24T15:00:00Z"
_LEVELS = {
    "CLASSIFICATION_UNSPECIFIED": 0,
    "CLASSIFICATION_PUBLIC": 1,
    "CLASSIFICATION_INTERNAL": 2,
    "CLASSIFICATION_CONFIDENTIAL": 3,
    "CLASSIFICATION_RESTRICTED": 4,
    "CLASSIFICATION_SECRET": 5,
    "CLASSIFICATION_TOP_SECRET": 6,
}


def example(name: str) -> dict[str, Any]:
    """The request JSON of ``examples/<name>.json``."""
    doc: dict[str, Any] = json.loads((ROOT / "examples" / f"{name}.json").read_text())
    return doc


def build(request: dict[str, Any], *, tokens: bool = True) -> dict[str, Any]:
    """The v2 input for a request; ``tokens`` says whether the PEP forwarded valid tokens."""
    ctx = request["context"]
    action = ctx.get("action", {})
    resource = ctx.get("resource", {})
    principal = ctx.get("principal", {})
    classification = resource.get("classification", "CLASSIFICATION_UNSPECIFIED")
    asserted = {
        "agent": {k: ctx["agent"].get(k, "") for k in ("version", "owner", "model")},
        "principal": {
            "id": principal.get("id", ""),
            "type": principal.get("type", ""),
            "roles": principal.get("roles", []),
            "tenant": principal.get("tenant", ""),
        },
        "resource": {
            "owner": resource.get("owner", ""),
            "classification": classification.removeprefix("CLASSIFICATION_").lower(),
            "classification_level": _LEVELS[classification],
            "data_categories": resource.get("dataCategories", []),
            "compartments": resource.get("compartments", []),
        },
        "destination": {"kind": action.get("destination", {}).get("kind", "")},
        "lineage": [
            {
                "source": e.get("source", ""),
                "kind": e.get("kind", ""),
                "quality": e.get("quality", 0),
                "verified": e.get("verified", False),
            }
            for e in ctx.get("lineage", [])
        ],
        "environment": {
            "name": ctx.get("environment", {}).get("name", ""),
            "change_ref": ctx.get("environment", {}).get("changeRef", ""),
            "region": "",
            "session_id": "",
        },
        "risk": {"score": ctx.get("risk", {}).get("score", 0), "indicators": ctx.get("risk", {}).get("indicators", [])},
        "purpose_of_use": ctx.get("purposeOfUse", ""),
        "attributes": {},
    }
    verified: dict[str, Any] = {"lineage": []}
    if tokens:
        if principal.get("id"):
            verified["principal"] = {
                "id": principal["id"],
                "issuer": "https://idp.example",
                "type": principal.get("type", "user"),
                "roles": principal.get("roles", []),
                "groups": [],
                "tenant": "",
                # The right token carries the purpose of use the principal acts for.
                "purpose_of_use": ctx.get("purposeOfUse", ""),
            }
        verified["risk"] = {**asserted["risk"], "issuer": "https://risk.example"}
        verified["lineage"] = [
            {"source": e["source"], "kind": e["kind"], "quality": e["quality"], "issuer": "https://src.example"}
            for e in asserted["lineage"]
            if e["verified"]
        ]
    return {
        "bound": {
            "request_id": request.get("requestId", ""),
            "time": TIME,
            "caller": {"authenticated": False, "peer": "ipv4:127.0.0.1:1", "subject": "", "sans": [], "uri_sans": []},
            "action_digest": "sha256:00",
            "approvals": [],
            "usage": {},
        },
        "agent": {"id": ctx["agent"]["id"]},
        "action": {
            "tool": action.get("tool", ""),
            "operation": action.get("operation", ""),
            "arguments": action.get("arguments", {}),
            "destination": {"address": action.get("destination", {}).get("address", "")},
        },
        "resource": {"type": resource.get("type", ""), "id": resource.get("id", "")},
        "verified": verified,
        "asserted": asserted,
    }


def decide_many(inputs: list[dict[str, Any]], bundle: pathlib.Path = REGO) -> list[dict[str, Any]]:
    """``data.pdp.decisions`` for several inputs, by the real OPA (tests not loaded)."""
    out = subprocess.run(
        [
            OPA,
            "eval",
            "--format=json",
            "--stdin-input",
            "--ignore=*_test.rego",
            "-b",
            str(bundle),
            "data.pdp.decisions",
        ],
        input=json.dumps({"requests": inputs}),
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)["result"][0]["expressions"][0]["value"]
    return result


def mutate(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``path`` set to ``value`` (or removed when value is ``...``)."""
    new = copy.deepcopy(doc)
    node = new
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return new
