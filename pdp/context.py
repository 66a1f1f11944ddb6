"""Request → OPA input (v2): validate, normalise, and say where every attribute comes from.

The input has four parts (the contract is ``docs/tokens.md`` and ``docs/trust-model.md``):

- ``bound``: what the PDP itself knows and a caller cannot claim: the transport-authenticated
  caller, the request time from the PDP's clock, the action digest it recomputes;
- the question, at the top level (``agent.id``, ``action``, ``resource`` type and id): what is
  being asked, covered by the action digest, so lying there only gets an answer to another question;
- ``verified``: facts from tokens the PEP forwarded, each checked against a trusted issuer
  (:mod:`pdp.trust`); a key is absent when no valid token gave it;
- ``asserted``: everything else the caller says, which the policy may only use to be stricter.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pdp import limits
from pdp.digest import action_digest
from pdp.errors import InvalidArgument
from pdp.trust import TrustVerifier, Verified
from pdp.v1 import decision_pb2 as pb

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+\-]{0,127}$")
_PRINTABLE = re.compile(r"^[\x21-\x7e]{1,128}$")
_TEXT_MAX = 1024
_LIST_MAX = 64
_NOTHING_TRUSTED = TrustVerifier()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who called the PDP, as established by the transport (never by the request body)."""

    authenticated: bool
    peer: str
    subject: str = ""
    sans: tuple[str, ...] = ()
    uri_sans: tuple[str, ...] = ()

    @classmethod
    def from_grpc(cls, context: grpc.ServicerContext) -> Caller:
        """Reads the peer address and, under mTLS, the client certificate's names."""
        auth = context.auth_context()
        cn = [bytes(v).decode() for v in auth.get("x509_common_name", [])]
        sans = tuple(bytes(v).decode() for v in auth.get("x509_subject_alternative_name", []))
        uris = tuple(bytes(v).decode() for v in auth.get("peer_uri", []))
        return cls(
            authenticated=bool(cn or sans), peer=context.peer(), subject=cn[0] if cn else "", sans=sans, uri_sans=uris
        )

    @property
    def audience(self) -> str:
        """The name a record is made for: the certificate's SPIFFE ID (first URI SAN), else its
        subject common name, else (no client certificate) the peer address."""
        if self.authenticated:
            return self.uri_sans[0] if self.uri_sans else self.subject or (self.sans[0] if self.sans else self.peer)
        return self.peer

    def to_dict(self) -> dict[str, Any]:
        return {
            "authenticated": self.authenticated,
            "peer": self.peer,
            "subject": self.subject,
            "sans": list(self.sans),
            "uri_sans": list(self.uri_sans),
        }


def build_input(
    request: pb.DecideRequest,
    *,
    caller: Caller,
    request_time: str,
    max_depth: int,
    trust: TrustVerifier = _NOTHING_TRUSTED,
) -> dict[str, Any]:
    """Turns a DecideRequest into the OPA ``input`` document (see :func:`build`)."""
    return build(request, caller=caller, request_time=request_time, max_depth=max_depth, trust=trust)[0]


def build(
    request: pb.DecideRequest,
    *,
    caller: Caller,
    request_time: str,
    max_depth: int,
    trust: TrustVerifier = _NOTHING_TRUSTED,
) -> tuple[dict[str, Any], Verified]:
    """Turns a DecideRequest into the OPA ``input`` document, verifying its tokens.

    Args:
        request: the caller's request.
        caller: the transport-authenticated caller.
        request_time: RFC 3339 UTC time from the PDP's clock.
        max_depth: deepest nesting accepted inside Struct fields.
        trust: the issuers tokens are verified against (default: none, nothing is verified).

    Returns:
        The input, and what verification found (incl. rejected tokens, for the record).

    Raises:
        InvalidArgument: a field is missing or malformed; the message names it. A token that does
            not verify is not malformed: it is rejected, and its fact is absent.
    """
    if request.request_id and not _PRINTABLE.match(request.request_id):
        raise InvalidArgument("request_id", "must be 1-128 printable ASCII characters without spaces")
    if request.explain not in pb.ExplainLevel.values():
        raise InvalidArgument("explain", f"unknown explain level {request.explain}")
    if not request.HasField("context"):
        raise InvalidArgument("context", "is required")
    ctx = request.context
    if not ctx.HasField("agent"):
        raise InvalidArgument("context.agent", "is required")
    if not ctx.HasField("action"):
        raise InvalidArgument("context.action", "is required")
    agent = _agent(ctx.agent)
    action = _action(ctx.action, max_depth)
    resource = _resource(ctx.resource)
    doc: dict[str, Any] = {
        "bound": {
            "request_id": request.request_id,
            "time": request_time,
            "caller": caller.to_dict(),
            "action_digest": "",
            "approvals": [],  # only approvals the PDP verified, bound by pdp.approvals.binding (issue 14)
            "usage": {},  # budgets and usage counters (issue 20)
        },
        "agent": {"id": agent.pop("id")},
        "action": action,
        "resource": {"type": resource.pop("type"), "id": resource.pop("id")},
        "verified": {},
        "asserted": {
            "agent": agent,
            "principal": _principal(ctx.principal),
            "resource": resource,
            "destination": {"kind": _text(ctx.action.destination.kind, "context.action.destination.kind")},
            "lineage": [
                _lineage(e, f"context.lineage[{i}]") for i, e in enumerate(_bounded(ctx.lineage, "context.lineage"))
            ],
            "environment": _environment(ctx.environment),
            "risk": _risk(ctx.risk),
            "purpose_of_use": _text(ctx.purpose_of_use, "context.purpose_of_use"),
            "attributes": struct_value(ctx.attributes, "context.attributes", max_depth),
        },
    }
    digest = action_digest(doc)
    doc["bound"]["action_digest"] = digest
    verified = trust.verify(
        action_digest=digest,
        principal_token=ctx.principal_token,
        risk_assertion=ctx.risk_assertion,
        lineage_attestations=list(ctx.lineage_attestations),
    )
    doc["verified"] = verified.to_input()
    return doc, verified


def _agent(a: pb.Agent) -> dict[str, Any]:
    return {
        "id": _id(a.id, "context.agent.id", required=True),
        "version": _text(a.version, "context.agent.version"),
        "owner": _text(a.owner, "context.agent.owner"),
        "model": _text(a.model, "context.agent.model"),
    }


def _principal(p: pb.Principal) -> dict[str, Any]:
    return {
        "id": _id(p.id, "context.principal.id"),
        "type": _text(p.type, "context.principal.type"),
        "roles": [_text(r, "context.principal.roles") for r in _bounded(p.roles, "context.principal.roles")],
        "tenant": _text(p.tenant, "context.principal.tenant"),
    }


def _action(a: pb.Action, max_depth: int) -> dict[str, Any]:
    return {
        "tool": _id(a.tool, "context.action.tool", required=True),
        "operation": _text(a.operation, "context.action.operation"),
        "arguments": struct_value(a.arguments, "context.action.arguments", max_depth),
        "destination": {"address": _text(a.destination.address, "context.action.destination.address")},
    }


def _resource(r: pb.Resource) -> dict[str, Any]:
    if r.classification not in pb.Classification.values():
        raise InvalidArgument("context.resource.classification", f"unknown classification {r.classification}")
    level = r.classification
    return {
        "type": _text(r.type, "context.resource.type"),
        "id": _text(r.id, "context.resource.id"),
        "owner": _text(r.owner, "context.resource.owner"),
        # Name and rank: policies compare ranks ("dominates") and print names.
        "classification": _enum_name(pb.Classification.Name(level), "CLASSIFICATION_"),
        "classification_level": level,
        "data_categories": [
            _text(c, "context.resource.data_categories")
            for c in _bounded(r.data_categories, "context.resource.data_categories")
        ],
        "compartments": [
            _text(c, "context.resource.compartments") for c in _bounded(r.compartments, "context.resource.compartments")
        ],
    }


def _lineage(e: pb.LineageEntry, field: str) -> dict[str, Any]:
    return {
        "source": _text(e.source, f"{field}.source"),
        "kind": _text(e.kind, f"{field}.kind"),
        "quality": _number(e.quality, f"{field}.quality", 0.0, 1.0),
        "verified": e.verified,
    }


def _environment(e: pb.Environment) -> dict[str, Any]:
    return {
        "name": _text(e.name, "context.environment.name"),
        "change_ref": _text(e.change_ref, "context.environment.change_ref"),
        "region": _text(e.region, "context.environment.region"),
        "session_id": _text(e.session_id, "context.environment.session_id"),
    }


def _risk(r: pb.RiskSignals) -> dict[str, Any]:
    return {
        "score": _number(r.score, "context.risk.score", 0.0, 100.0),
        "indicators": [_text(i, "context.risk.indicators") for i in _bounded(r.indicators, "context.risk.indicators")],
    }


def _id(value: str, field: str, *, required: bool = False) -> str:
    if not value:
        if required:
            raise InvalidArgument(field, "is required")
        return ""
    if not _ID.match(value):
        raise InvalidArgument(field, "must be 1-128 letters, digits or ._:/@+- starting with a letter or digit")
    return value


def _text(value: str, field: str) -> str:
    if len(value) > _TEXT_MAX:
        raise InvalidArgument(field, f"is longer than {_TEXT_MAX} characters")
    return value


def _number(value: float, field: str, lo: float, hi: float) -> float:
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidArgument(field, f"must be a number from {lo:g} to {hi:g}")
    return value


def _bounded(items: Any, field: str) -> list[Any]:
    if len(items) > _LIST_MAX:
        raise InvalidArgument(field, f"has more than {_LIST_MAX} entries")
    return list(items)


def _enum_name(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def struct_value(s: struct_pb2.Struct, field: str, max_depth: int) -> dict[str, Any]:
    """A Struct field as a dict within the limits (:mod:`pdp.limits`; INVALID_ARGUMENT naming the path)."""
    return limits.struct_to_dict(s, field, limits.configured(max_depth=max_depth))
