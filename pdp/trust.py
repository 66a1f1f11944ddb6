"""Verified facts: the principal, risk and lineage tokens a PEP forwards, checked against trusted issuers.

The deployment names the issuers it trusts in one JSON file (``PDP_TRUST_FILE``, see
``docs/tokens.md``), per kind of fact:

- ``principal``: OIDC providers whose access or ID tokens say who the agent acts for;
- ``risk``: risk engines whose signed assessments score one action (bound to its action digest);
- ``lineage``: source systems whose signed attestations vouch for the data an action carries
  (bound to the action digest too), each for the sources it may speak for.

A token that fails any check is *not* an error: the fact is absent (which the policy reads as the
most restrictive value) and the problem is reported, for the signed record. Tokens are JWS in
compact form, verified with PyJWT (an allow-list of asymmetric algorithms, EdDSA/ES256/RS256, the
key chosen by ``kid`` from the issuer's JWKS and its algorithm fixed by the key, never by the
token). Verified signatures are cached by the token's digest until the token expires: the same
principal token arrives with every call of a session.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from pdp.errors import ConfigError, PdpError

ALGORITHMS = ("EdDSA", "ES256", "RS256")
KINDS = ("principal", "risk", "lineage")
_TOKEN_MAX = 16 * 1024
_LIST_MAX = 64
_CACHE_MAX = 10_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class Issuer:
    """One trusted issuer of one kind of fact.

    Attributes:
        kind: ``principal``, ``risk`` or ``lineage``.
        issuer: the exact ``iss`` value.
        keys: the issuer's public keys by ``kid`` (PyJWT keys with their algorithm).
        audience: the ``aud`` a token must contain; empty = the token must not be audience-bound
            (only allowed for risk and lineage).
        claims: claim names for the principal's attributes (``roles``, ``groups``, ``tenant``,
            ``purpose_of_use``, ``type``).
        sources: lineage only: the source ids this issuer may vouch for (``*`` = any).
        max_lifetime_s: risk and lineage only: the longest ``exp - iat`` accepted.
    """

    kind: str
    issuer: str
    keys: Mapping[str, jwt.PyJWK]
    audience: str = ""
    claims: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sources: tuple[str, ...] = ()
    max_lifetime_s: int = 300

    def may_vouch_for(self, source: str) -> bool:
        return "*" in self.sources or source in self.sources


_DEFAULT_CLAIMS = {
    "roles": "roles",
    "groups": "groups",
    "tenant": "tenant",
    "purpose_of_use": "purpose_of_use",
    "type": "principal_type",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrustConfig:
    """The trusted issuers, by kind and ``iss``. Empty: nothing is verifiable."""

    issuers: Mapping[str, Mapping[str, Issuer]] = dataclasses.field(default_factory=dict)
    leeway_s: int = 30
    source: str = ""

    @classmethod
    def load(cls, path: Path, *, name: str = "PDP_TRUST_FILE") -> TrustConfig:
        """Reads and validates a trust file; JWKS paths are relative to the file's directory.

        Raises:
            ConfigError: unreadable, or a field is wrong; the message names the field.
        """
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{name}: cannot read {str(path)!r} as JSON: {e}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{name}: {str(path)!r} must hold a JSON object")
        if unknown := sorted(set(doc) - {"version", *KINDS, "leeway_seconds"}):
            raise ConfigError(f"{name} {unknown[0]}: unknown field (expected version, principal, risk, lineage, ...)")
        if doc.get("version", 1) != 1:
            raise ConfigError(f"{name} version: must be 1")
        leeway = _int_field(doc, "leeway_seconds", default=30, lo=0, hi=300, field=f"{name} leeway_seconds")
        issuers: dict[str, dict[str, Issuer]] = {}
        for kind in KINDS:
            entries = doc.get(kind, [])
            if not isinstance(entries, list):
                raise ConfigError(f"{name} {kind}: must be a list of issuers")
            issuers[kind] = {}
            for i, entry in enumerate(entries):
                issuer = _issuer(kind, entry, path.parent, f"{name} {kind}[{i}]")
                if issuer.issuer in issuers[kind]:
                    raise ConfigError(f"{name} {kind}[{i}].issuer: {issuer.issuer!r} is listed twice")
                issuers[kind][issuer.issuer] = issuer
        return cls(issuers=issuers, leeway_s=leeway, source=str(path))


def _issuer(kind: str, entry: Any, base: Path, field: str) -> Issuer:
    if not isinstance(entry, dict):
        raise ConfigError(f"{field}: must be an object")
    allowed = {"issuer", "jwks_file", "audience", "claims", "sources", "max_lifetime_seconds"}
    if unknown := sorted(set(entry) - allowed):
        raise ConfigError(f"{field}.{unknown[0]}: unknown field")
    iss = entry.get("issuer")
    if not isinstance(iss, str) or not iss:
        raise ConfigError(f"{field}.issuer: must be a non-empty string (the tokens' iss)")
    audience = entry.get("audience", "")
    if not isinstance(audience, str) or (kind == "principal" and not audience):
        raise ConfigError(f"{field}.audience: must be a non-empty string (the aud tokens are issued for)")
    claims = dict(_DEFAULT_CLAIMS)
    given = entry.get("claims", {})
    if not isinstance(given, dict) or (kind != "principal" and given):
        raise ConfigError(f"{field}.claims: must be an object, and only principal issuers map claims")
    for k, v in given.items():
        if k not in _DEFAULT_CLAIMS or not isinstance(v, str) or not v:
            raise ConfigError(f"{field}.claims.{k}: must be one of {sorted(_DEFAULT_CLAIMS)} naming a claim")
        claims[k] = v
    sources = entry.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) and s for s in sources):
        raise ConfigError(f"{field}.sources: must be a list of source ids")
    if kind == "lineage" and not sources:
        raise ConfigError(f"{field}.sources: a lineage issuer must name the sources it may vouch for (or '*')")
    if kind != "lineage" and sources:
        raise ConfigError(f"{field}.sources: only lineage issuers vouch for sources")
    lifetime = _int_field(
        entry, "max_lifetime_seconds", default=300, lo=1, hi=86400, field=f"{field}.max_lifetime_seconds"
    )
    return Issuer(
        kind=kind,
        issuer=iss,
        keys=_jwks(entry.get("jwks_file"), base, f"{field}.jwks_file"),
        audience=audience,
        claims=claims,
        sources=tuple(sources),
        max_lifetime_s=lifetime,
    )


def _int_field(doc: Mapping[str, Any], key: str, *, default: int, lo: int, hi: int, field: str) -> int:
    value = doc.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{field}: must be a whole number from {lo} to {hi}")
    return value


def _jwks(value: Any, base: Path, field: str) -> dict[str, jwt.PyJWK]:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field}: must name the issuer's JWKS file")
    path = base / value
    try:
        doc = json.loads(path.read_text())
        keyset = jwt.PyJWKSet.from_dict(doc)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}: cannot read a JWKS from {str(path)!r}: {e}") from None
    except jwt.PyJWKSetError as e:
        raise ConfigError(f"{field}: {str(path)!r} holds no usable key: {e}") from None
    keys: dict[str, jwt.PyJWK] = {}
    for i, key in enumerate(keyset.keys):
        if key.algorithm_name not in ALGORITHMS:
            raise ConfigError(f"{field}: key {i} is {key.algorithm_name}; allowed: {', '.join(ALGORITHMS)}")
        if hasattr(key.key, "private_bytes"):
            raise ConfigError(f"{field}: key {i} is a private key; the PDP needs only public keys")
        keys[key.key_id or ""] = key
    return keys


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A token that did not verify: which field, and why (no token contents)."""

    field: str
    problem: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verified:
    """The ``verified`` subtree of the policy input, and the rejected tokens."""

    principal: dict[str, Any] | None = None
    risk: dict[str, Any] | None = None
    lineage: tuple[dict[str, Any], ...] = ()
    rejected: tuple[Rejected, ...] = ()

    def to_input(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"lineage": list(self.lineage)}
        if self.principal is not None:
            doc["principal"] = self.principal
        if self.risk is not None:
            doc["risk"] = self.risk
        return doc

    def summary(self) -> dict[str, Any]:
        """What the record says the decision rested on: who vouched for what, and what was refused."""
        return {
            "principal": {"issuer": self.principal["issuer"], "id": self.principal["id"]} if self.principal else None,
            "risk": {"issuer": self.risk["issuer"]} if self.risk else None,
            "lineage": [{"issuer": e["issuer"], "source": e["source"]} for e in self.lineage],
            "rejected": [r.to_dict() for r in self.rejected],
        }


class TokenProblem(PdpError):
    """Why one token is not verified (a short phrase for the record)."""


class TrustVerifier:
    """Verifies the tokens of one request against the configured issuers (thread-safe).

    Args:
        config: the trusted issuers.
    """

    def __init__(self, config: TrustConfig | None = None) -> None:
        self.config = config or TrustConfig()
        self._cache: dict[tuple[str, str], tuple[dict[str, Any], Issuer, float]] = {}
        self._lock = threading.Lock()

    def verify(
        self, *, action_digest: str, principal_token: str, risk_assertion: str, lineage_attestations: list[str]
    ) -> Verified:
        """Checks every forwarded token; never raises for a bad one (it is rejected instead)."""
        rejected: list[Rejected] = []
        principal = risk = None
        if principal_token:
            try:
                principal = self._principal(principal_token)
            except TokenProblem as e:
                rejected.append(Rejected("principal_token", str(e)))
        if risk_assertion:
            try:
                risk = self._risk(risk_assertion, action_digest)
            except TokenProblem as e:
                rejected.append(Rejected("risk_assertion", str(e)))
        lineage = []
        seen: set[str] = set()
        for i, token in enumerate(lineage_attestations[:_LIST_MAX]):
            try:
                entry = self._lineage(token, action_digest)
            except TokenProblem as e:
                rejected.append(Rejected(f"lineage_attestations[{i}]", str(e)))
                continue
            if entry["source"] not in seen:  # one attestation per source is enough
                seen.add(entry["source"])
                lineage.append(entry)
        if len(lineage_attestations) > _LIST_MAX:
            rejected.append(Rejected("lineage_attestations", f"more than {_LIST_MAX}; the rest were not read"))
        return Verified(principal=principal, risk=risk, lineage=tuple(lineage), rejected=tuple(rejected))

    def _principal(self, token: str) -> dict[str, Any]:
        claims, issuer = self._checked("principal", token)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenProblem("missing claim sub")
        names = issuer.claims
        return {
            "id": claims["sub"],
            "issuer": issuer.issuer,
            "type": _str_claim(claims, names["type"], "user"),
            "roles": _list_claim(claims, names["roles"]),
            "groups": _list_claim(claims, names["groups"]),
            "tenant": _str_claim(claims, names["tenant"], ""),
            "purpose_of_use": _str_claim(claims, names["purpose_of_use"], ""),
        }

    def _risk(self, token: str, action_digest: str) -> dict[str, Any]:
        claims, issuer = self._checked("risk", token)
        _bound(claims, action_digest)
        return {
            "score": _number_claim(claims, "score", 100.0),
            "indicators": _list_claim(claims, "indicators"),
            "issuer": issuer.issuer,
        }

    def _lineage(self, token: str, action_digest: str) -> dict[str, Any]:
        claims, issuer = self._checked("lineage", token)
        _bound(claims, action_digest)
        source = claims.get("sub")
        if not isinstance(source, str) or not source:
            raise TokenProblem("missing claim sub (the source)")
        if not issuer.may_vouch_for(source):
            raise TokenProblem(f"issuer may not vouch for source {source!r}")
        return {
            "source": source,
            "kind": _str_claim(claims, "kind", ""),
            "quality": _number_claim(claims, "quality", 1.0),
            "issuer": issuer.issuer,
        }

    def _checked(self, kind: str, token: str) -> tuple[dict[str, Any], Issuer]:
        """Signature, issuer, audience and time checks, cached by token digest until expiry."""
        if len(token) > _TOKEN_MAX:
            raise TokenProblem(f"longer than {_TOKEN_MAX} characters")
        key = (kind, hashlib.sha256(token.encode()).hexdigest())
        now = time.time()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and now <= hit[2]:  # verified before (nbf had passed then) and not expired since
            return hit[0], hit[1]
        claims, issuer = self._decode(kind, token)
        expires = float(claims["exp"]) + self.config.leeway_s
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {k: v for k, v in self._cache.items() if v[2] >= now}
                while len(self._cache) >= _CACHE_MAX:
                    self._cache.pop(next(iter(self._cache)))
            self._cache[key] = (claims, issuer, expires)
        return claims, issuer

    def _decode(self, kind: str, token: str) -> tuple[dict[str, Any], Issuer]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.DecodeError:
            raise TokenProblem("malformed (not a compact JWS with JSON claims)") from None
        issuer, pyjwk = self._key(kind, header, unverified)
        alg = pyjwk.algorithm_name
        required = ["exp", "iss"] + ([] if kind == "principal" else ["iat"]) + (["aud"] if issuer.audience else [])
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=pyjwk,
                algorithms=[alg],
                audience=issuer.audience or None,
                issuer=issuer.issuer,
                leeway=self.config.leeway_s,
                options={"require": required, "verify_aud": bool(issuer.audience)},
            )
        except jwt.ExpiredSignatureError:
            raise TokenProblem("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenProblem("not yet valid (nbf)") from None
        except jwt.InvalidAudienceError:
            raise TokenProblem(f"wrong audience (expected {issuer.audience!r})") from None
        except jwt.InvalidSignatureError:
            raise TokenProblem("bad signature") from None
        except jwt.MissingRequiredClaimError as e:
            raise TokenProblem(f"missing claim {e.claim}") from None
        except jwt.InvalidTokenError as e:
            raise TokenProblem(f"invalid: {str(e)[:128]}") from None
        if not isinstance(claims["exp"], int | float) or not math.isfinite(claims["exp"]):
            raise TokenProblem("exp is not a number")
        if kind != "principal":
            lifetime = claims["exp"] - claims["iat"]
            if lifetime > issuer.max_lifetime_s:
                raise TokenProblem(f"lives {lifetime:g}s; this issuer's assertions may live {issuer.max_lifetime_s}s")
        return claims, issuer

    def _key(self, kind: str, header: dict[str, Any], unverified: dict[str, Any]) -> tuple[Issuer, jwt.PyJWK]:
        """The trusted issuer named by the token, and its key the token's header selects."""
        issuers = self.config.issuers.get(kind, {})
        if not issuers:
            raise TokenProblem(f"no {kind} issuer is configured (PDP_TRUST_FILE)")
        issuer = issuers.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise TokenProblem(f"untrusted issuer {str(unverified.get('iss', ''))[:128]!r}")
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenProblem(f"alg {str(alg)[:16]!r} is not allowed")
        if set(header) - {"alg", "kid", "typ"}:
            raise TokenProblem("unexpected JWS header parameters (crit, jku, jwk, x5u, ...) are not accepted")
        kid = header.get("kid", "")
        pyjwk = issuer.keys.get(kid) if kid else (next(iter(issuer.keys.values())) if len(issuer.keys) == 1 else None)
        if pyjwk is None:
            raise TokenProblem(f"unknown key {str(kid)[:64]!r} for issuer {issuer.issuer!r}")
        if pyjwk.algorithm_name != alg:
            raise TokenProblem(f"alg {alg} does not match the issuer's key ({pyjwk.algorithm_name})")
        return issuer, pyjwk


def _bound(claims: Mapping[str, Any], action_digest: str) -> None:
    if claims.get("action_digest") != action_digest:
        raise TokenProblem("wrong action (action_digest differs from this request's)")


def _str_claim(claims: Mapping[str, Any], name: str, default: str) -> str:
    value = claims.get(name, default)
    if not isinstance(value, str) or len(value) > 1024:
        raise TokenProblem(f"claim {name} is not a string")
    return value


def _list_claim(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = value.split()  # OAuth-style space-separated lists
    if not isinstance(value, list) or len(value) > _LIST_MAX or not all(isinstance(v, str) for v in value):
        raise TokenProblem(f"claim {name} is not a list of strings")
    return list(value)


def _number_claim(claims: Mapping[str, Any], name: str, hi: float) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= hi:
        raise TokenProblem(f"claim {name} must be a number from 0 to {hi:g}")
    return float(value)
