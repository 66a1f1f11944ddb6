"""Development token issuers: an identity provider, a risk engine and a lineage source, on local keys.

For trying the PDP and its examples, never for production. ``pdp dev-issuer init DIR`` makes one
Ed25519 key per kind of fact in DIR, their JWKS, and a ``trust.json`` naming them (point
``PDP_TRUST_FILE`` at it; ``pdp dev`` does this under ``.run/issuers``). Then a PEP, in
development, obtains tokens the way it would from the real systems:

- ``pdp dev-issuer token --dir DIR --sub alice@corp.example --roles treasurer``: an OIDC-style
  access token for the principal (audience: the PDP);
- ``pdp dev-issuer risk --dir DIR --request FILE --score 12``: a risk assessment of the action
  in the DecideRequest FILE (bound to its action digest, valid 5 minutes);
- ``pdp dev-issuer lineage --dir DIR --request FILE --source core-banking --kind ledger``: an
  attestation of the data the action carries;

and forwards them in ``context.principal_token``, ``context.risk_assertion`` and
``context.lineage_attestations``. ``pdp decide --dev-issuer DIR FILE`` does all of it: it mints
the tokens from what the example asserts and sends them along.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format

from pdp import keys
from pdp.client import digest_of
from pdp.errors import InvalidArgument
from pdp.v1 import decision_pb2 as pb

AUDIENCE = "pdp.local"
ISSUERS = {
    "principal": "https://idp.dev.pdp.local",
    "risk": "https://risk.dev.pdp.local",
    "lineage": "https://lineage.dev.pdp.local",
}
PRINCIPAL_TTL_S = 3600
ASSERTION_TTL_S = 300


def init(directory: Path) -> Path:
    """Creates the dev keys (if missing), their JWKS and ``trust.json``; returns the trust file.

    Existing keys are kept, so tokens minted earlier stay valid across restarts.
    """
    directory.mkdir(parents=True, exist_ok=True)
    trust: dict[str, Any] = {"version": 1, "leeway_seconds": 30}
    for kind, iss in ISSUERS.items():
        private = _private(directory, kind, create=True)
        (directory / f"{kind}.jwks.json").write_text(json.dumps({"keys": [keys.jwk(private.public_key())]}, indent=2))
        entry: dict[str, Any] = {"issuer": iss, "jwks_file": f"{kind}.jwks.json", "audience": AUDIENCE}
        if kind == "lineage":
            entry["sources"] = ["*"]  # the dev source system vouches for any source; name them in production
        if kind != "principal":
            entry["max_lifetime_seconds"] = ASSERTION_TTL_S
        trust[kind] = [entry]
    path = directory / "trust.json"
    path.write_text(json.dumps(trust, indent=2) + "\n")
    return path


def _private(directory: Path, kind: str, *, create: bool = False) -> Ed25519PrivateKey:
    path = directory / f"{kind}.key.pem"
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{path}: no dev {kind} issuer key; run `pdp dev-issuer init {directory}`")
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def mint(directory: Path, kind: str, claims: dict[str, Any], *, ttl_s: int | None = None) -> str:
    """A token of ``kind`` from the dev issuer in ``directory``: ``claims`` plus iss, aud, iat, exp, jti."""
    private = _private(directory, kind)
    now = int(time.time())
    ttl = ttl_s if ttl_s is not None else (PRINCIPAL_TTL_S if kind == "principal" else ASSERTION_TTL_S)
    body = {"iss": ISSUERS[kind], "aud": AUDIENCE, "iat": now, "exp": now + ttl, "jti": str(uuid.uuid4()), **claims}
    kid = keys.jwk(private.public_key())["kid"]
    return jwt.encode(body, private, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})


def forward_tokens(request: pb.DecideRequest, directory: Path) -> None:
    """What a PEP does before Decide, with the dev issuers standing in for the real ones: obtains a
    principal token, a risk assessment and lineage attestations for what the request asserts,
    and puts them into the request's context (tokens already present are kept)."""
    ctx = request.context
    try:
        digest = digest_of(ctx)
    except InvalidArgument:
        return  # malformed: nothing to vouch for; the PDP will say what is wrong
    if ctx.principal.id and not ctx.principal_token:
        ctx.principal_token = mint(directory, "principal", _principal_claims(ctx))
    if ctx.HasField("risk") and not ctx.risk_assertion:
        risk = {"action_digest": digest, "score": ctx.risk.score, "indicators": list(ctx.risk.indicators)}
        ctx.risk_assertion = mint(directory, "risk", risk)
    if not ctx.lineage_attestations:
        for e in ctx.lineage:
            if e.verified:  # the caller's own "unverified" entries stay unverified
                claims = {"sub": e.source, "kind": e.kind, "quality": e.quality, "action_digest": digest}
                ctx.lineage_attestations.append(mint(directory, "lineage", claims))


def _principal_claims(ctx: pb.ActionContext) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": ctx.principal.id, "roles": list(ctx.principal.roles)}
    if ctx.principal.type:
        claims["principal_type"] = ctx.principal.type
    if ctx.principal.tenant:
        claims["tenant"] = ctx.principal.tenant
    if ctx.purpose_of_use:
        claims["purpose_of_use"] = ctx.purpose_of_use
    return claims


def add_parser(sub: Any) -> None:
    """Adds ``pdp dev-issuer`` to the ``pdp`` command's subparsers."""
    p = sub.add_parser("dev-issuer", help="development token issuers: init keys, mint principal/risk/lineage tokens")
    verbs = p.add_subparsers(required=True, metavar="ACTION")
    i = verbs.add_parser("init", help="create dev issuer keys and a trust file (PDP_TRUST_FILE) in DIR")
    i.add_argument("dir", type=Path)
    i.set_defaults(func=_init)

    t = verbs.add_parser("token", help="print a principal token (OIDC-style access token for the PDP)")
    t.add_argument("--sub", required=True, help="the principal id")
    t.add_argument("--roles", default="", help="comma-separated roles")
    t.add_argument("--groups", default="", help="comma-separated groups")
    t.add_argument("--tenant", default="")
    t.add_argument("--purpose", default="", help="purpose of use (e.g. treatment)")
    t.add_argument("--type", default="user", help="principal type (user | service)")
    t.set_defaults(kind_="principal")
    r = verbs.add_parser("risk", help="print a risk assertion for the action of a DecideRequest")
    r.add_argument("--score", type=float, required=True, help="0..100")
    r.add_argument("--indicators", default="", help="comma-separated indicators")
    r.set_defaults(kind_="risk")
    lin = verbs.add_parser("lineage", help="print a lineage attestation for the data of a DecideRequest's action")
    lin.add_argument("--source", required=True, help="the source system's id")
    lin.add_argument("--kind", default="", help="e.g. database, ledger, document")
    lin.add_argument("--quality", type=float, default=1.0, help="0..1")
    lin.set_defaults(kind_="lineage")
    for v in (r, lin):
        v.add_argument("--request", required=True, help="the DecideRequest (proto3 JSON) whose action it is bound to")
    for v in (t, r, lin):
        v.add_argument("--dir", type=Path, required=True, help="the dev issuer directory (pdp dev-issuer init)")
        v.add_argument("--ttl", type=int, default=None, help="lifetime in seconds")
        v.set_defaults(func=_mint)


def _init(args: argparse.Namespace) -> int:
    print(f"dev issuers in {args.dir}; PDP_TRUST_FILE={init(args.dir)}")
    return 0


def _mint(args: argparse.Namespace) -> int:
    try:
        if args.kind_ == "principal":
            claims: dict[str, Any] = {"sub": args.sub, "roles": _split(args.roles), "principal_type": args.type}
            claims |= {k: v for k, v in (("tenant", args.tenant), ("purpose_of_use", args.purpose)) if v}
            if args.groups:
                claims["groups"] = _split(args.groups)
        else:
            request = json_format.Parse(Path(args.request).read_text(), pb.DecideRequest())
            claims = {"action_digest": digest_of(request.context)}
            if args.kind_ == "risk":
                claims |= {"score": args.score, "indicators": _split(args.indicators)}
            else:
                claims |= {"sub": args.source, "kind": args.kind, "quality": args.quality}
        print(mint(args.dir, args.kind_, claims, ttl_s=args.ttl))
    except (OSError, ValueError, json_format.ParseError, InvalidArgument) as e:
        print(f"pdp dev-issuer: {e}", file=sys.stderr)
        return 2
    return 0


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]
