"""What a lying enforcement point can change, and how: the adversarial mutations of the trust-model tests.

A mutation changes one *asserted* field of a request's context (the caller's word: everything but
the question and the tokens) to an adversarial value: empty, missing, another enum value, another
id, a lowered score, an extra or a removed list entry; or forwards a valid principal token that
says less (no purpose of use) while asserting a purpose. Token attacks replace a forwarded token by a
forged, expired, wrong-issuer, wrong-audience or wrong-action one whose claims are as favourable as
they can be. Neither may ever turn a non-ALLOW answer into ALLOW. The values are harvested from the
examples and the policy's data, so "another id" is one the policy knows.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from pdp import devissuer
from pdp.client import digest_of
from pdp.v1 import decision_pb2 as pb
from tests.helpers import BUNDLE, EXAMPLES, dev_issuers

Context = dict[str, Any]
Mutation = tuple[str, Callable[[Context], None]]


def _harvest() -> dict[str, set[str]]:
    """Strings the policy and the examples know, by kind (roles, ids, compartments, ...)."""
    found: dict[str, set[str]] = {
        k: set() for k in ("roles", "compartments", "categories", "principals", "sources", "changes", "owners")
    }

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("principals", "approvers", "beneficiaries", "care_team", "directory"):
                    found["principals"].update(x for x in (v if isinstance(v, dict) else []) if isinstance(x, str))
                if k == "changes" and isinstance(v, dict):
                    found["changes"].update(v)
                walk(v, k)
        elif isinstance(node, list):
            kind = {
                "roles": "roles",
                "approver_roles": "roles",
                "compartments": "compartments",
                "data_categories": "categories",
                "categories": "categories",
                "sensitive_categories": "categories",
                "sources": "sources",
                "trusted_sources": "sources",
            }.get(key)
            for x in node:
                if kind and isinstance(x, str):
                    found[kind].add(x)
                walk(x, key)

    for path in BUNDLE.rglob("*.json"):
        walk(json.loads(path.read_text()))
    for path in EXAMPLES.glob("*.json"):
        ctx = json.loads(path.read_text())["context"]
        found["roles"].update(ctx.get("principal", {}).get("roles", []))
        found["principals"].add(ctx.get("principal", {}).get("id", ""))
        found["compartments"].update(ctx.get("resource", {}).get("compartments", []))
        found["categories"].update(ctx.get("resource", {}).get("dataCategories", []))
        found["owners"].add(ctx.get("resource", {}).get("owner", ""))
        found["sources"].update(e.get("source", "") for e in ctx.get("lineage", []))
        found["changes"].add(ctx.get("environment", {}).get("changeRef", ""))
    found["roles"] |= {"admin", "risk_officer", "payments_approver", "clinician", "treasurer", "analyst"}
    found["categories"] |= {"phi", "pii", "pci", "financial"}
    found["compartments"] |= {"SI", "HCS", "TK"}
    return {k: {v for v in vs if v} for k, vs in found.items()}


KNOWN = _harvest()
CLASSIFICATIONS = list(pb.Classification.keys())
PURPOSES = ["", "treatment", "payment", "operations", "emergency", "research", "marketing"]
ENVIRONMENTS = ["", "production", "staging", "development", "test"]
DESTINATIONS = ["", "internal", "external"]


def _set(path: str, value: Any) -> Callable[[Context], None]:
    keys = path.split(".")

    def apply(ctx: Context) -> None:
        node = ctx
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = copy.deepcopy(value)

    return apply


def _drop(path: str) -> Callable[[Context], None]:
    keys = path.split(".")

    def apply(ctx: Context) -> None:
        node = ctx
        for k in keys[:-1]:
            node = node.get(k, {})
        node.pop(keys[-1], None)

    return apply


def _get(ctx: Context, path: str, default: Any) -> Any:
    node: Any = ctx
    for k in path.split("."):
        if not isinstance(node, dict) or k not in node:
            return default
        node = node[k]
    return node


def _list_variants(ctx: Context, path: str, vocabulary: set[str]) -> Iterator[Mutation]:
    """Empty, missing, each entry removed, each known entry added, all known entries."""
    current = list(_get(ctx, path, []))
    yield f"{path}=[]", _set(path, [])
    yield f"{path} missing", _drop(path)
    for i, entry in enumerate(current):
        yield f"{path} without {entry}", _set(path, current[:i] + current[i + 1 :])
    for extra in sorted(vocabulary - set(current)):
        yield f"{path} + {extra}", _set(path, [*current, extra])
    yield f"{path}=all known", _set(path, sorted(vocabulary | set(current)))


def mutations(ctx: Context) -> list[Mutation]:
    """Every single-field adversarial change of the asserted fields of ``ctx`` (proto3 JSON)."""
    out: list[Mutation] = []
    for field in ("agent.version", "agent.owner", "agent.model"):
        out += [(f"{field}=''", _set(field, "")), (f"{field} missing", _drop(field))]
    out += [("agent.version=0.0.1", _set("agent.version", "0.0.1")), ("agent.owner=x", _set("agent.owner", "x"))]
    out += [("principal missing", _drop("principal")), ("principal.id=''", _set("principal.id", ""))]
    out += [(f"principal.id={p}", _set("principal.id", p)) for p in sorted(KNOWN["principals"])]
    out += [(f"principal.type={t}", _set("principal.type", t)) for t in ("", "user", "service", "admin")]
    out += [("principal.tenant=other", _set("principal.tenant", "other"))]
    out += list(_list_variants(ctx, "principal.roles", KNOWN["roles"]))
    out += [("resource.owner=''", _set("resource.owner", "")), ("resource.owner missing", _drop("resource.owner"))]
    principal = _get(ctx, "principal.id", "")
    for owner in sorted(KNOWN["owners"] | KNOWN["principals"] | {principal} - {""}):
        out.append((f"resource.owner={owner}", _set("resource.owner", owner)))
    out += [(f"resource.classification={c}", _set("resource.classification", c)) for c in CLASSIFICATIONS]
    out += [("resource.classification missing", _drop("resource.classification"))]
    out += list(_list_variants(ctx, "resource.dataCategories", KNOWN["categories"]))
    out += list(_list_variants(ctx, "resource.compartments", KNOWN["compartments"]))
    out += [(f"destination.kind={k}", _set("action.destination.kind", k)) for k in DESTINATIONS]
    out += _lineage_variants(ctx)
    out += [(f"environment.name={e}", _set("environment.name", e)) for e in ENVIRONMENTS]
    out += [("environment missing", _drop("environment"))]
    out += [(f"environment.changeRef={c}", _set("environment.changeRef", c)) for c in ["", *sorted(KNOWN["changes"])]]
    out += [("environment.region=eu", _set("environment.region", "eu"))]
    out += [("environment.sessionId=s", _set("environment.sessionId", "s"))]
    score = float(_get(ctx, "risk.score", 0))
    out += [(f"risk.score={s:g}", _set("risk.score", s)) for s in sorted({0.0, score / 2, max(score - 1, 0)})]
    out += [("risk missing", _drop("risk")), ("risk.indicators=[]", _set("risk.indicators", []))]
    out += [(f"purposeOfUse={p}", _set("purposeOfUse", p)) for p in PURPOSES]
    out += [("purposeOfUse missing", _drop("purposeOfUse"))]
    if ctx.get("principalToken"):
        out += [(f"principal token without purpose, purposeOfUse={p}", _token_without_purpose(p)) for p in PURPOSES]
    out += [("attributes={}", _set("attributes", {})), ("attributes.trusted", _set("attributes", {"trusted": True}))]
    out += [("approvals by every known approver", _self_approved)]
    return out


def _token_without_purpose(purpose: str) -> Callable[[Context], None]:
    """The principal's token re-issued, validly, without its ``purpose_of_use`` claim (as by an
    identity provider that issues none), while the caller asserts ``purpose``: the lie that used to
    work, since an asserted purpose counted when the token carried none."""

    def apply(ctx: Context) -> None:
        claims = jwt.decode(ctx["principalToken"], options={"verify_signature": False})
        kept = {k: v for k, v in claims.items() if k not in ("purpose_of_use", "iss", "aud", "iat", "exp", "jti")}
        ctx["principalToken"] = devissuer.mint(dev_issuers(), "principal", kept)
        ctx["purposeOfUse"] = purpose

    return apply


def _lineage_variants(ctx: Context) -> list[Mutation]:
    current = list(ctx.get("lineage", []))
    out: list[Mutation] = [("lineage=[]", _set("lineage", [])), ("lineage missing", _drop("lineage"))]
    for i in range(len(current)):
        out.append((f"lineage without [{i}]", _set("lineage", current[:i] + current[i + 1 :])))
        better = [dict(e) for e in current]
        better[i] |= {"verified": True, "quality": 1.0}
        out.append((f"lineage[{i}] verified, quality 1", _set("lineage", better)))
    for source in sorted(KNOWN["sources"] | {"made-up-source"}):
        entry = {"source": source, "kind": "database", "quality": 1.0, "verified": True}
        out.append((f"lineage + {source} (verified: true)", _set("lineage", [*current, entry])))
    return out


def _self_approved(ctx: Context) -> None:
    """The caller writes its own approvals, naming every approver it knows, bound to the right action,
    into the one place a caller can still write anything (attributes: context.approvals, field 8, is
    reserved since approvals are PDP-signed tokens)."""
    request = json_format.ParseDict({"context": ctx}, pb.DecideRequest())
    digest = digest_of(request.context)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    ctx.setdefault("attributes", {})["approvals"] = [
        {"approverId": p, "actionDigest": digest, "expiresAt": expires, "approverRoles": sorted(KNOWN["roles"])}
        for p in sorted(KNOWN["principals"])
    ][:64]


def mutated(request: pb.DecideRequest, mutation: Mutation) -> pb.DecideRequest:
    """A copy of ``request`` with one mutation applied to its context; its tokens kept as they were."""
    doc = json_format.MessageToDict(request)
    mutation[1](doc["context"])
    out = json_format.ParseDict(doc, pb.DecideRequest())
    out.request_id = ""  # a new request: each is decided, none replays another's record
    return out


# ---- token attacks --------------------------------------------------------------------------

_ROGUE = Ed25519PrivateKey.generate()  # nobody trusts this key


def _encode(claims: dict[str, Any], key: Any = _ROGUE, kid: str = "rogue") -> str:
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _favourable(kind: str, ctx: pb.ActionContext, digest: str) -> list[dict[str, Any]]:
    """Claims as good as they get for ``kind``: every role, treatment, risk 0, trusted lineage."""
    if kind == "principal":
        principal = ctx.principal.id or "bob@bank.example"
        return [
            {
                "sub": principal,
                "roles": sorted(KNOWN["roles"]),
                "groups": sorted(KNOWN["roles"]),
                "purpose_of_use": ctx.purpose_of_use or "treatment",
                "principal_type": "user",
            }
        ]
    if kind == "risk":
        return [{"action_digest": digest, "score": 0, "indicators": []}]
    sources = {e.source for e in ctx.lineage} | KNOWN["sources"]
    return [{"sub": s, "kind": "database", "quality": 1.0, "action_digest": digest} for s in sorted(sources)]


def _attach(request: pb.DecideRequest, kind: str, tokens: list[str]) -> pb.DecideRequest:
    out = pb.DecideRequest()
    out.CopyFrom(request)
    out.request_id = ""
    if kind == "principal":
        out.context.principal_token = tokens[0]
    elif kind == "risk":
        out.context.risk_assertion = tokens[0]
    else:
        del out.context.lineage_attestations[:]
        out.context.lineage_attestations.extend(tokens)
    return out


def token_attacks(request: pb.DecideRequest, issuers: Path) -> list[tuple[str, pb.DecideRequest]]:
    """``request`` with one of its tokens replaced by a bad one carrying the most favourable claims.

    Bad: forged (signed by an unknown key, under the trusted issuer's name and key id), expired,
    from an untrusted issuer, for another audience, and (risk, lineage) bound to another action.
    """
    ctx = request.context
    digest = digest_of(ctx)
    now = int(time.time())
    kid_of = {
        kind: json.loads((issuers / f"{kind}.jwks.json").read_text())["keys"][0]["kid"] for kind in devissuer.ISSUERS
    }
    out: list[tuple[str, pb.DecideRequest]] = []
    for kind, iss in devissuer.ISSUERS.items():
        claims = _favourable(kind, ctx, digest)
        good = {"iss": iss, "aud": devissuer.AUDIENCE, "iat": now, "exp": now + 120}
        variants: dict[str, list[str]] = {
            "forged": [_encode({**good, **c}, kid=kid_of[kind]) for c in claims],
            "expired": [devissuer.mint(issuers, kind, {**c, "iat": now - 400}, ttl_s=-300) for c in claims],
            "wrong issuer": [_encode({**good, **c, "iss": "https://issuer.evil.example"}) for c in claims],
            "wrong audience": [devissuer.mint(issuers, kind, {**c, "aud": "another-service"}) for c in claims],
        }
        if kind != "principal":
            other = "sha256:" + "0" * 64
            variants["wrong action"] = [devissuer.mint(issuers, kind, {**c, "action_digest": other}) for c in claims]
        for name, tokens in variants.items():
            out.append((f"{kind}: {name}", _attach(request, kind, tokens)))
    return out
