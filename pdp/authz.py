"""Who may call what: caller roles from the authenticated identity, and the one table of the
roles each RPC and HTTP route needs (docs/authorization.md).

Roles come from ``PDP_ROLES_FILE`` (JSON)::

    {"roles": {"spiffe://bank.example/pep-gateway": ["pep"], "audit-desk": ["auditor"]},
     "anonymous": []}

A key with ``://`` in it (a SPIFFE ID) matches the client certificate's URI SANs only; any other
key matches the certificate's subject common name only. Never a DNS, e-mail or IP SAN, never the
CN for a ``spiffe://`` name. Without the file every caller is a ``pep`` and an ``approver``; without mTLS (development
on loopback) every caller also has every other role: everything is open, and the start-up log says so.

A service someone adds declares its methods in :data:`METHOD_ROLES` (one line each); a method
not in the table is refused to everyone (fail closed).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdp.errors import ConfigError, PermissionDenied


class Role(enum.StrEnum):
    """What a caller may do (docs/authorization.md)."""

    PEP = "pep"  # decide; read its own decisions, report once on each of its own ALLOWs
    APPROVER = "approver"  # decide escalations
    AUDITOR = "auditor"  # read every decision; full explanations
    ADMIN = "admin"  # operate the PDP (kill switch, budgets); read every decision


ALL_ROLES = frozenset(Role)
PUBLIC: frozenset[Role] = frozenset()
"""No role needed: public keys, health, reflection."""

_READERS = frozenset({Role.PEP, Role.AUDITOR, Role.ADMIN})

METHOD_ROLES: dict[str, frozenset[Role]] = {
    "/pdp.v1.DecisionService/Decide": frozenset({Role.PEP}),
    "/pdp.v1.DecisionService/DecideBatch": frozenset({Role.PEP}),
    "/pdp.v1.DecisionService/GetDecision": _READERS,  # a PEP only its own decisions
    "/pdp.v1.DecisionService/GetConsistencyProof": _READERS,
    "/pdp.v1.DecisionService/ReportOutcome": frozenset({Role.PEP}),  # only its own ALLOWs, once
    "/pdp.v1.DecisionService/GetJwks": PUBLIC,
    # The approver desk checks its own registry (data.pdp.approvals.approvers) on top of the role.
    "/pdp.v1.ApprovalService/ListEscalations": frozenset({Role.APPROVER}),
    "/pdp.v1.ApprovalService/GetEscalation": frozenset({Role.APPROVER}),
    "/pdp.v1.ApprovalService/Approve": frozenset({Role.APPROVER}),
    "/pdp.v1.ApprovalService/Reject": frozenset({Role.APPROVER}),
    "/pdp.v1.ApprovalService/WaitEscalation": frozenset({Role.PEP}),  # the agent's side
    "/pdp.v1.ApprovalService/GetApprovalTokens": frozenset({Role.PEP}),
    "/pdp.v1.AdminService/Suspend": frozenset({Role.ADMIN}),
    "/pdp.v1.AdminService/Resume": frozenset({Role.ADMIN}),
    "/pdp.v1.AdminService/ListSuspensions": frozenset({Role.ADMIN, Role.AUDITOR}),
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": PUBLIC,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": PUBLIC,
}
"""The roles that may call each gRPC method (any one of them); PUBLIC: anyone."""

ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "POST /access/v1/evaluation": frozenset({Role.PEP}),
    "POST /access/v1/evaluations": frozenset({Role.PEP}),
    # Access requests (AuthZEN approval profile): submitted and polled by the PEP whose decision opened it.
    "POST /access/v1/access_requests": frozenset({Role.PEP}),
    "GET /access/v1/access_requests/{id}": frozenset({Role.PEP}),
    "GET /.well-known/authzen-configuration": PUBLIC,
    "GET /.well-known/jwks.json": PUBLIC,
}
"""The roles that may call each HTTP route (``METHOD path``, the path as the route declares it,
``{id}`` and all; HEAD is GET); PUBLIC: anyone."""


def identity_of(caller: Mapping[str, Any]) -> str:
    """The name a caller (``input.caller``, or a record's ``pdp.caller``) owns decisions under:
    its certificate's first URI SAN (SPIFFE ID), else its subject CN; "" when not authenticated.

    The one identity of a caller everywhere: decision ownership, roles' grants, the requester of an
    escalation (opened and fetched) and the approver on the approvals service."""
    if not caller.get("authenticated"):
        return ""
    uris = caller.get("uri_sans") or ()
    return str(uris[0]) if uris else str(caller.get("subject", ""))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Grant:
    """What one call may do: the caller's identity and roles."""

    identity: str
    roles: frozenset[Role]

    @property
    def reads_all(self) -> bool:
        """Auditors and admins read every decision; a PEP only its own."""
        return bool(self.roles & {Role.AUDITOR, Role.ADMIN})

    def has(self, role: Role) -> bool:
        return role in self.roles


@dataclasses.dataclass(frozen=True, kw_only=True)
class RoleMap:
    """Identity → roles (``PDP_ROLES_FILE``), and what callers without a certificate get."""

    by_uri: Mapping[str, frozenset[Role]]
    by_subject: Mapping[str, frozenset[Role]]
    anonymous: frozenset[Role]
    authenticated: frozenset[Role] = frozenset()
    source: str = "default"

    @classmethod
    def default(cls, *, mtls: bool) -> RoleMap:
        """No roles file: every certificate holder is a PEP and may reach the approver desk (which
        checks its own registry); without mTLS everyone has every role (dev)."""
        everyone = frozenset({Role.PEP, Role.APPROVER}) if mtls else ALL_ROLES
        return cls(by_uri={}, by_subject={}, anonymous=everyone, authenticated=everyone)

    @classmethod
    def load(cls, path: Path) -> RoleMap:
        """Reads ``PDP_ROLES_FILE``.

        Raises:
            ConfigError: the file is unreadable or malformed; names the entry.
        """
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"PDP_ROLES_FILE: cannot read {path}: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("roles"), dict) or set(doc) - {"roles", "anonymous"}:
            shape = '{"roles": {identity: [role, ...]}, "anonymous": [...]}'
            raise ConfigError(f"PDP_ROLES_FILE: {path} must be {shape}")
        by_uri: dict[str, frozenset[Role]] = {}
        by_subject: dict[str, frozenset[Role]] = {}
        for name, roles in doc["roles"].items():
            (by_uri if "://" in name else by_subject)[name] = _roles(roles, f"roles[{name!r}]", path)
        return cls(
            by_uri=by_uri,
            by_subject=by_subject,
            anonymous=_roles(doc.get("anonymous", []), "anonymous", path),
            source=str(path),
        )

    def grant(self, caller: Mapping[str, Any]) -> Grant:
        """The roles of a caller (``input.caller`` form: authenticated, subject, uri_sans)."""
        if not caller.get("authenticated"):
            return Grant(identity="", roles=self.anonymous)
        roles = set(self.authenticated)
        for uri in caller.get("uri_sans") or ():
            roles |= self.by_uri.get(uri, frozenset())
        roles |= self.by_subject.get(caller.get("subject", ""), frozenset())
        return Grant(identity=identity_of(caller), roles=frozenset(roles))

    def open_to_all(self) -> bool:
        return self.anonymous == ALL_ROLES


def _roles(value: Any, where: str, path: Path) -> frozenset[Role]:
    if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
        raise ConfigError(f"PDP_ROLES_FILE: {where} in {path} must be a list of role names")
    if bad := [r for r in value if r not in Role.__members__.values()]:
        raise ConfigError(f"PDP_ROLES_FILE: {where} in {path}: {bad[0]!r} is not a role ({', '.join(Role)})")
    return frozenset(Role(r) for r in value)


def authorize(table: Mapping[str, frozenset[Role]], what: str, grant: Grant) -> None:
    """Refuses ``what`` (a method or route) unless ``grant`` holds one of the roles it needs.

    Raises:
        PermissionDenied: the caller holds none of them, or ``what`` is in no table (fail closed).
    """
    needed = table.get(what)
    if needed is None:
        raise PermissionDenied(f"{what} is not open to any caller (it declares no role)")
    if needed and not needed & grant.roles:
        who = grant.identity or "an anonymous caller"
        raise PermissionDenied(f"{who} may not call {what}: it needs the role {' or '.join(sorted(needed))}")


def open_warning(role_map: RoleMap) -> str:
    """What the start-up log says when authorisation is open (no mTLS), or ""."""
    if not role_map.open_to_all():
        return ""
    return (
        "NO AUTHORISATION: without mTLS every caller has every role (pep, approver, auditor, admin): anyone who can "
        "connect decides, reads every decision and its full explanation, and reports outcomes; set "
        "PDP_TLS_CLIENT_CA_FILE and PDP_ROLES_FILE (docs/authorization.md)"
    )
