"""PDP-signed approval tokens: what an agent's retry carries after humans approved an escalation.

An approval token is a compact JWS (Ed25519, ``typ: pdp-approval+jws``) signed with the PDP's own
key ring by :func:`issue_approval`, using the same JWS code as decision records
(:func:`pdp.records.sign` / :func:`pdp.records.verify`), so the same JWKS verifies both and the
``typ`` keeps one from passing for the other. Its claims bind it to one approver's approval of one
exact action::

    {"escalation_id", "decision_id", "action_digest", "agent_id", "principal_id",
     "approver", "approver_roles", "iat", "exp", "jti"}

:func:`verify_approval` checks, in this order, and raises :class:`ApprovalError` naming the first
check that failed (``check`` is its name): ``jws`` (format, ``alg``, ``typ``, known ``kid``,
signature), ``claims`` (every claim present with its type), ``expired`` (``now >= exp``),
``action_digest`` (against the digest the PDP **recomputed** from the request being decided: any
change in arguments is another action), ``agent_id``, ``principal_id``. Single use is not a property
of the token: the caller consumes ``jti`` in the shared state store, atomically across replicas,
with ``store.first_use(CONSUMED_PREFIX + approval.jti, approval.exp)`` and refuses the token when that
returns False.

The same module signs the **binding token** of a requestable denial (the AuthZEN Access Request and
Approval Profile's ``context.access_request.binding_token``, docs/authzen.md): a compact JWS with
``typ: pdp-access-request+jws`` that names the escalation the denial opened and the action it is
bound to::

    {"escalation_id", "evaluation_id", "action_digest", "iat", "exp"}

It grants nothing; it only lets the PDP's access request endpoint find the escalation and check
that a submission is for that action. :func:`verify_binding` checks the JWS and the claims' types;
the endpoint checks the rest (expiry, the requester, the submitted action's digest).
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any

from pdp.errors import PdpError
from pdp.keys import KeyRing, public_keys
from pdp.records import RecordError, sign, verify

TYP_APPROVAL = "pdp-approval+jws"
TYP_ACCESS_REQUEST = "pdp-access-request+jws"
CONSUMED_PREFIX = "pdp-approval:"  # the single-use key of a token in the state store: prefix + jti


class ApprovalError(PdpError):
    """An approval token fails a check; ``check`` names it (``jws``, ``claims``, ``expired``,
    ``action_digest``, ``agent_id``, ``principal_id``)."""

    def __init__(self, check: str, problem: str) -> None:
        super().__init__(f"approval token: {check}: {problem}")
        self.check = check
        self.problem = problem


@dataclasses.dataclass(frozen=True, kw_only=True)
class Approval:
    """The verified claims of one approval token."""

    escalation_id: str
    decision_id: str
    action_digest: str
    agent_id: str
    principal_id: str
    approver: str
    approver_roles: list[str]
    iat: int
    exp: int
    jti: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, claims: dict[str, Any]) -> Approval:
        """The approval in ``claims``.

        Raises:
            ApprovalError: ``claims``, naming the first claim missing or of the wrong type.
        """
        for field in dataclasses.fields(cls):
            value = claims.get(field.name)
            if field.type == "int":
                ok = isinstance(value, int) and not isinstance(value, bool)
            elif field.type == "list[str]":
                ok = isinstance(value, list) and all(isinstance(r, str) for r in value)
            else:  # every string is required, but an action taken for no verified principal binds ""
                ok = isinstance(value, str) and (bool(value) or field.name == "principal_id")
            if not ok:
                raise ApprovalError("claims", f"{field.name} is missing or not a {field.type}")
        values = {f.name: claims[f.name] for f in dataclasses.fields(cls)}
        return cls(**values)


def issue_approval(
    ring: KeyRing,
    *,
    escalation_id: str,
    decision_id: str,
    action_digest: str,
    agent_id: str,
    principal_id: str,
    approver: str,
    approver_roles: list[str],
    now: int,
    ttl_s: int,
    jti: str | None = None,
) -> str:
    """Signs one approver's approval of the escalated action; valid for ``ttl_s`` seconds from ``now``.

    ``jti`` (default: random) names the approval for single use; the desk derives it from the
    escalation and the approver, so that the same vote always gives the same token (Ed25519
    signatures are deterministic) and can be fetched again without minting a second approval.
    """
    approval = Approval(
        escalation_id=escalation_id,
        decision_id=decision_id,
        action_digest=action_digest,
        agent_id=agent_id,
        principal_id=principal_id,
        approver=approver,
        approver_roles=list(approver_roles),
        iat=now,
        exp=now + ttl_s,
        jti=jti or secrets.token_hex(16),
    )
    Approval.from_dict(approval.to_dict())  # never sign what verify_approval would refuse as malformed
    return sign(approval.to_dict(), ring, typ=TYP_APPROVAL)


def verify_approval(
    token: str, jwks: dict[str, Any], *, action_digest: str, agent_id: str, principal_id: str, now: int
) -> Approval:
    """Verifies an approval token against the request being decided (see the module docstring).

    Args:
        token: the compact JWS as the agent sent it (verified from these exact bytes).
        jwks: the PDP's JWKS (every key that ever signed).
        action_digest: the digest the PDP recomputed from this request, never one the caller sent.
        agent_id: the agent of this request.
        principal_id: the principal of this request.
        now: unix seconds.

    Raises:
        ApprovalError: the first check that failed, by name.
    """
    try:
        claims = verify(token, public_keys(jwks), typ=TYP_APPROVAL)
    except RecordError as e:
        raise ApprovalError("jws", str(e)) from None
    approval = Approval.from_dict(claims)
    if now >= approval.exp:
        raise ApprovalError("expired", f"the approval expired at {approval.exp} (now {now})")
    bound = {"action_digest": action_digest, "agent_id": agent_id, "principal_id": principal_id}
    for check, expected in bound.items():
        if claims[check] != expected:
            raise ApprovalError(check, f"the approval is for {check} {claims[check]!r}, this request's is {expected!r}")
    return approval


@dataclasses.dataclass(frozen=True, kw_only=True)
class Binding:
    """The verified claims of a requestable denial's binding token."""

    escalation_id: str
    evaluation_id: str  # the denied decision's id
    action_digest: str
    iat: int
    exp: int  # the escalation's expiry: no submission after it

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def issue_binding(
    ring: KeyRing, *, escalation_id: str, evaluation_id: str, action_digest: str, iat: int, exp: int
) -> str:
    """Signs the binding token of a requestable denial (deterministic: the same denial, the same token)."""
    binding = Binding(
        escalation_id=escalation_id, evaluation_id=evaluation_id, action_digest=action_digest, iat=iat, exp=exp
    )
    return sign(binding.to_dict(), ring, typ=TYP_ACCESS_REQUEST)


def verify_binding(token: str, jwks: dict[str, Any]) -> Binding:
    """Verifies a binding token's JWS (this PDP's keys, its ``typ``) and its claims' types; not its expiry.

    Raises:
        ApprovalError: ``jws`` or ``claims``, saying what is wrong.
    """
    try:
        claims = verify(token, public_keys(jwks), typ=TYP_ACCESS_REQUEST)
    except RecordError as e:
        raise ApprovalError("jws", str(e)) from None
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Binding):
        value = claims.get(field.name)
        ok = (isinstance(value, int) and not isinstance(value, bool)) if field.type == "int" else bool(value)
        if not ok or (field.type == "str" and not isinstance(value, str)):
            raise ApprovalError("claims", f"{field.name} is missing or not a {field.type}")
        values[field.name] = value
    return Binding(**values)
