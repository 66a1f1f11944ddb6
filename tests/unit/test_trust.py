"""Token verification (pdp.trust): what is verified, what is rejected and why, and the trust file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from pdp.errors import ConfigError
from pdp.trust import TrustConfig, TrustVerifier

DIGEST = "sha256:" + "ab" * 32
IDP, RISK, LINEAGE = "https://idp.example", "https://risk.example", "https://lineage.example"


def _keypair(alg: str) -> tuple[Any, dict[str, Any]]:
    if alg == "EdDSA":
        private: Any = ed25519.Ed25519PrivateKey.generate()
        public = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return private, {**public, "kid": f"{alg}-1", "alg": alg}


class Issuers:
    """Three issuers (principal/risk/lineage) with a trust file naming them, in ``tmp``."""

    def __init__(self, tmp: Path, alg: str = "EdDSA") -> None:
        self.alg = alg
        self.keys: dict[str, Any] = {}
        doc: dict[str, Any] = {"version": 1, "leeway_seconds": 5}
        for kind, iss in (("principal", IDP), ("risk", RISK), ("lineage", LINEAGE)):
            private, public = _keypair(alg)
            self.keys[kind] = private
            (tmp / f"{kind}.jwks.json").write_text(json.dumps({"keys": [public]}))
            entry: dict[str, Any] = {"issuer": iss, "jwks_file": f"{kind}.jwks.json", "audience": "pdp"}
            if kind == "lineage":
                entry["sources"] = ["core-banking"]
            doc[kind] = [entry]
        self.file = tmp / "trust.json"
        self.file.write_text(json.dumps(doc))
        self.verifier = TrustVerifier(TrustConfig.load(self.file))

    def mint(self, which: str, /, *, key: Any = None, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        iss = {"principal": IDP, "risk": RISK, "lineage": LINEAGE}[which]
        body = {"iss": iss, "aud": "pdp", "iat": now, "exp": now + 120, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(
            body, key or self.keys[which], algorithm=self.alg, headers={"kid": f"{self.alg}-1", **(headers or {})}
        )

    def check(self, *, principal: str = "", risk: str = "", lineage: tuple[str, ...] = ()) -> Any:
        return self.verifier.verify(
            action_digest=DIGEST, principal_token=principal, risk_assertion=risk, lineage_attestations=list(lineage)
        )


@pytest.fixture
def issuers(tmp_path: Path) -> Issuers:
    return Issuers(tmp_path)


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_valid_tokens_become_verified_facts(tmp_path: Path, alg: str) -> None:
    i = Issuers(tmp_path, alg)
    v = i.check(
        principal=i.mint(
            "principal", sub="bob", roles=["treasurer"], groups="ops audit", purpose_of_use="treatment", tenant="t1"
        ),
        risk=i.mint("risk", action_digest=DIGEST, score=12.5, indicators=["new_device"]),
        lineage=(i.mint("lineage", sub="core-banking", kind="ledger", quality=0.99, action_digest=DIGEST),),
    )
    assert v.rejected == ()
    assert v.to_input() == {
        "principal": {
            "id": "bob",
            "issuer": IDP,
            "type": "user",
            "roles": ["treasurer"],
            "groups": ["ops", "audit"],
            "tenant": "t1",
            "purpose_of_use": "treatment",
        },
        "risk": {"score": 12.5, "indicators": ["new_device"], "issuer": RISK},
        "lineage": [{"source": "core-banking", "kind": "ledger", "quality": 0.99, "issuer": LINEAGE}],
    }
    assert v.summary() == {
        "principal": {"issuer": IDP, "id": "bob"},
        "risk": {"issuer": RISK},
        "lineage": [{"issuer": LINEAGE, "source": "core-banking"}],
        "rejected": [],
    }


def _swap_claims(signed: str, wanted: str) -> str:
    """``wanted``'s claims under ``signed``'s signature (a tampered token)."""
    return ".".join([*wanted.split(".")[:2], signed.split(".")[2]])


def _forged() -> Any:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda i: i.mint("principal", key=_forged(), sub="bob"), "bad signature"),
        (lambda i: i.mint("principal", sub="bob", exp=int(time.time()) - 60), "expired"),
        (lambda i: i.mint("principal", sub="bob", nbf=int(time.time()) + 600), "not yet valid (nbf)"),
        (lambda i: i.mint("principal", sub="bob", aud="another-service"), "wrong audience"),
        (lambda i: i.mint("principal", sub="bob", aud=None), "missing claim aud"),
        (lambda i: i.mint("principal", sub="bob", iss="https://evil.example"), "untrusted issuer"),
        (lambda i: i.mint("principal", sub="bob", exp=None), "missing claim exp"),
        (lambda i: i.mint("principal"), "missing claim sub"),
        (lambda i: i.mint("principal", sub="bob", roles={"admin": True}), "claim roles is not a list"),
        (lambda i: i.mint("principal", sub="bob", headers={"kid": "other"}), "unknown key 'other'"),
        (lambda i: i.mint("principal", sub="bob", headers={"jku": "https://evil.example/jwks"}), "unexpected JWS"),
        # A token signed by the risk engine's key is no principal token, whatever it claims.
        (lambda i: i.mint("principal", key=i.keys["risk"], sub="bob"), "bad signature"),
        (lambda i: jwt.encode({"iss": IDP, "aud": "pdp", "sub": "bob"}, "s" * 32, algorithm="HS256"), "alg 'HS256'"),
        (lambda i: "not-a-jwt", "malformed"),
        (lambda i: _swap_claims(i.mint("principal", sub="bob"), i.mint("principal", sub="admin")), "bad signature"),
    ],
)
def test_bad_principal_tokens_are_rejected_with_the_reason(issuers: Issuers, make: Any, problem: str) -> None:
    v = issuers.check(principal=make(issuers))
    assert v.principal is None and "principal" not in v.to_input()
    ((rejected),) = v.rejected
    assert rejected.field == "principal_token"
    assert rejected.problem.startswith(problem), rejected.problem


def test_unsigned_tokens_are_rejected(issuers: Issuers) -> None:
    none = jwt.encode({"iss": IDP, "aud": "pdp", "sub": "bob", "exp": int(time.time()) + 60}, None, algorithm="none")
    v = issuers.check(principal=none)
    assert v.principal is None and v.rejected[0].problem == "alg 'none' is not allowed"


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"action_digest": "sha256:" + "00" * 32, "score": 1}, "wrong action"),
        ({"score": 1}, "wrong action"),
        ({"action_digest": DIGEST, "score": 101}, "claim score must be"),
        ({"action_digest": DIGEST, "score": "low"}, "claim score must be"),
        ({"action_digest": DIGEST, "score": 1, "iat": None}, "missing claim iat"),
        ({"action_digest": DIGEST, "score": 1, "exp": int(time.time()) + 3600}, "lives"),
        ({"action_digest": DIGEST, "score": 1, "exp": int(time.time()) - 30}, "expired"),
        ({"action_digest": DIGEST, "score": 1, "aud": "someone-else"}, "wrong audience"),
    ],
)
def test_bad_risk_assertions_are_rejected(issuers: Issuers, claims: dict[str, Any], problem: str) -> None:
    v = issuers.check(risk=issuers.mint("risk", **claims))
    assert v.risk is None and "risk" not in v.to_input()
    assert v.rejected[0].field == "risk_assertion" and v.rejected[0].problem.startswith(problem), v.rejected


def test_lineage_needs_an_issuer_allowed_for_the_source_and_the_action(issuers: Issuers) -> None:
    good = issuers.mint("lineage", sub="core-banking", kind="ledger", quality=0.9, action_digest=DIGEST)
    other_source = issuers.mint("lineage", sub="pastebin", kind="paste", quality=1, action_digest=DIGEST)
    other_action = issuers.mint("lineage", sub="core-banking", quality=1, action_digest="sha256:" + "11" * 32)
    as_principal = issuers.mint("principal", sub="core-banking", action_digest=DIGEST, quality=1)
    v = issuers.check(lineage=(good, other_source, other_action, as_principal, good))
    assert [e["source"] for e in v.lineage] == ["core-banking"]  # one entry per source
    assert [(r.field, r.problem.split(" (")[0]) for r in v.rejected] == [
        ("lineage_attestations[1]", "issuer may not vouch for source 'pastebin'"),
        ("lineage_attestations[2]", "wrong action"),
        ("lineage_attestations[3]", "untrusted issuer 'https://idp.example'"),
    ]


def test_nothing_is_verifiable_without_a_trust_file(issuers: Issuers) -> None:
    v = TrustVerifier().verify(
        action_digest=DIGEST,
        principal_token=issuers.mint("principal", sub="bob"),
        risk_assertion=issuers.mint("risk", action_digest=DIGEST, score=0),
        lineage_attestations=[],
    )
    assert v.to_input() == {"lineage": []}
    assert [r.problem for r in v.rejected] == [
        "no principal issuer is configured (PDP_TRUST_FILE)",
        "no risk issuer is configured (PDP_TRUST_FILE)",
    ]


def test_verified_tokens_are_cached_until_they_expire(issuers: Issuers) -> None:
    token = issuers.mint("principal", sub="bob", exp=int(time.time()) + 2)
    first = issuers.check(principal=token)
    started = time.perf_counter()
    for _ in range(200):
        assert issuers.check(principal=token).principal == first.principal
    assert (time.perf_counter() - started) / 200 < 0.001  # no signature check on the hot path
    assert len(issuers.verifier._cache) == 1
    # Past exp + leeway the cached entry no longer counts: the token is checked again, and fails.
    issuers.verifier._cache = {k: (c, i, time.time() - 1) for k, (c, i, _) in issuers.verifier._cache.items()}
    token_expired = issuers.mint("principal", sub="bob", exp=int(time.time()) - 60)
    assert issuers.check(principal=token_expired).rejected[0].problem == "expired"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"principal": {}}, "PDP_TRUST_FILE principal: must be a list"),
        ({"principal": [{"jwks_file": "principal.jwks.json", "audience": "pdp"}]}, "principal[0].issuer"),
        ({"principal": [{"issuer": IDP, "jwks_file": "principal.jwks.json"}]}, "principal[0].audience"),
        ({"principal": [{"issuer": IDP, "audience": "pdp"}]}, "principal[0].jwks_file"),
        ({"principal": [{"issuer": IDP, "audience": "pdp", "jwks_file": "missing.json"}]}, "principal[0].jwks_file"),
        ({"lineage": [{"issuer": LINEAGE, "jwks_file": "lineage.jwks.json"}]}, "lineage[0].sources"),
        ({"risk": [{"issuer": RISK, "jwks_file": "risk.jwks.json", "sources": ["x"]}]}, "risk[0].sources"),
        (
            {"risk": [{"issuer": RISK, "jwks_file": "risk.jwks.json", "max_lifetime_seconds": 0}]},
            "risk[0].max_lifetime_seconds",
        ),
        (
            {
                "principal": [
                    {"issuer": IDP, "audience": "pdp", "jwks_file": "principal.jwks.json", "claims": {"x": "y"}}
                ]
            },
            "principal[0].claims.x",
        ),
        ({"principal": [{"issuer": IDP, "audience": "pdp", "jwks_file": "hs.json"}]}, "principal[0].jwks_file"),
        ({"principal": [{"issuer": IDP, "audience": "pdp", "jwks_file": "private.json"}]}, "private key"),
        ({"leeway_seconds": -1}, "leeway_seconds"),
        ({"issuers": []}, "PDP_TRUST_FILE issuers: unknown field"),
    ],
)
def test_trust_file_errors_name_the_field(issuers: Issuers, tmp_path: Path, doc: dict[str, Any], field: str) -> None:
    (tmp_path / "hs.json").write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}]}))
    private = json.loads(OKPAlgorithm.to_jwk(ed25519.Ed25519PrivateKey.generate()))
    (tmp_path / "private.json").write_text(json.dumps({"keys": [private]}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        TrustConfig.load(bad)


def test_custom_claim_names(tmp_path: Path) -> None:
    i = Issuers(tmp_path)
    doc = json.loads(i.file.read_text())
    doc["principal"][0]["claims"] = {"roles": "realm_roles", "type": "typ_of_principal"}
    i.file.write_text(json.dumps(doc))
    verifier = TrustVerifier(TrustConfig.load(i.file))
    token = i.mint("principal", sub="svc", realm_roles=["reader"], roles=["admin"], typ_of_principal="service")
    v = verifier.verify(action_digest=DIGEST, principal_token=token, risk_assertion="", lineage_attestations=[])
    assert v.principal is not None
    assert (v.principal["roles"], v.principal["type"]) == (["reader"], "service")
