"""The bundled policy on the input v2, through the real OPA: every example gives the outcome its
name says when the PEP forwards the right tokens, and no lie in an asserted field, and no missing
token, turns a non-ALLOW answer into ALLOW (issue 13's first list of attacks among them)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.policy import v2

EXAMPLES = sorted(p.stem for p in (v2.ROOT / "examples").glob("*.json"))
EXPECTED = {"allow": "allow", "deny": "deny", "require": "require_approval"}


def expected(name: str) -> str:
    for prefix, outcome in EXPECTED.items():
        if prefix in name.split("-"):
            return outcome
    raise AssertionError(f"example {name} does not say its outcome")


def test_every_example_gives_its_outcome_with_tokens() -> None:
    decisions = v2.decide_many([v2.build(v2.example(n)) for n in EXAMPLES])
    assert {n: d["outcome"] for n, d in zip(EXAMPLES, decisions, strict=True)} == {n: expected(n) for n in EXAMPLES}
    for d in decisions:
        assert d["facts"]["catalog_revision"]
        assert d["facts"]["resource"]["catalogued"] is True or d["facts"]["resource"]["level"] >= 2


def test_without_tokens_principal_based_allows_fall() -> None:
    names = ["defense-allow-read", "fintech-allow-transfer", "healthcare-allow-treatment"]
    decisions = v2.decide_many([v2.build(v2.example(n), tokens=False) for n in names])
    assert [d["outcome"] for d in decisions] == ["deny", "deny", "deny"]


# Adversarial values for each asserted field: empty, missing (...), other enum values, other ids,
# lowered scores, extra or removed list entries.
PRINCIPALS = ["", "bob@bank.example", "carol@bank.example", "dr.jones@hospital.example", "col.diaz@army.example"]
LEVELS = ["", "public", "internal", "confidential", "restricted", "secret", "top_secret"]
GOOD_LINEAGE = {"source": "core-banking", "kind": "ledger", "quality": 1, "verified": True}
LIES: dict[tuple[str, ...], list[Any]] = {
    ("agent", "version"): [..., "", "1.4.1", "2.0.3", "4.0.0", "1.0.2", "5.2.0"],
    ("agent", "owner"): [..., "", "security"],
    ("principal", "id"): [..., *PRINCIPALS],
    ("principal", "roles"): [..., [], ["clinician"], ["billing"], ["treasurer", "security_officer"]],
    ("principal", "type"): [..., "", "service"],
    ("resource", "owner"): [..., "", "patient-4711", "patient-5020"],
    ("resource", "classification"): [..., *LEVELS],
    ("resource", "classification_level"): [..., 0, 1, 2],
    ("resource", "data_categories"): [..., [], ["marketing"]],
    ("resource", "compartments"): [..., [], ["SI"]],
    ("destination", "kind"): [..., "", "internal"],
    ("lineage",): [..., [], [GOOD_LINEAGE], [GOOD_LINEAGE, GOOD_LINEAGE]],
    ("environment", "name"): [..., "", "staging", "dev"],
    ("environment", "change_ref"): [..., "", "CHG-2026-1187", "CHG-1"],
    ("risk", "score"): [..., 0, 1],
    ("risk", "indicators"): [..., []],
    ("purpose_of_use",): [..., "", "treatment", "payment", "operations", "emergency"],
    ("attributes",): [..., {}, {"approved": True}],
    ("principal",): [...],
    ("resource",): [...],
}
# Every lie an attacker in issue 13 told, at once.
ALL_LIES = {
    "principal": {"id": "dr.jones@hospital.example", "roles": ["clinician"], "type": "user", "tenant": ""},
    "resource": {
        "owner": "patient-4711",
        "classification": "public",
        "classification_level": 1,
        "data_categories": [],
        "compartments": ["SI"],
    },
    "destination": {"kind": "internal"},
    "lineage": [GOOD_LINEAGE],
    "environment": {"name": "staging", "change_ref": "CHG-2026-1187", "region": "", "session_id": ""},
    "risk": {"score": 0, "indicators": []},
    "purpose_of_use": "treatment",
}


def mutations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = [v2.mutate(doc, ("asserted", *path), value) for path, values in LIES.items() for value in values]
    out.append({**doc, "asserted": {**doc["asserted"], **ALL_LIES}})
    return out


@pytest.mark.parametrize("tokens", [True, False], ids=["with-tokens", "without-tokens"])
def test_no_asserted_lie_turns_a_non_allow_into_allow(tokens: bool) -> None:
    originals = [v2.build(v2.example(n), tokens=tokens) for n in EXAMPLES]
    before = v2.decide_many(originals)
    bases = [doc for doc, d in zip(originals, before, strict=True) if d["outcome"] != "allow"]
    assert len(bases) >= 7  # every non-ALLOW example (more without tokens)
    mutated = list(itertools.chain.from_iterable(mutations(doc) for doc in bases))
    after = v2.decide_many(mutated)
    allowed = [m for m, d in zip(mutated, after, strict=True) if d["outcome"] == "allow"]
    assert allowed == [], (
        f"{len(allowed)} of {len(mutated)} lies allowed: {[m['bound']['request_id'] for m in allowed]}"
    )


def test_a_missing_or_lowered_verified_fact_never_allows_more() -> None:
    # A forged, expired, wrong-issuer or wrong-action token is absent from input.verified.
    originals = [v2.build(v2.example(n)) for n in EXAMPLES]
    before = v2.decide_many(originals)
    bases = [doc for doc, d in zip(originals, before, strict=True) if d["outcome"] != "allow"]
    stripped = [
        v2.mutate(doc, ("verified", *path), ...) for doc in bases for path in (("principal",), ("risk",), ("lineage",))
    ]
    # A valid principal token without a purpose of use, the caller asserting any purpose.
    stripped += [
        v2.mutate(v2.mutate(doc, ("verified", "principal", "purpose_of_use"), ...), ("asserted", "purpose_of_use"), p)
        for doc in bases
        if "principal" in doc["verified"]
        for p in LIES[("purpose_of_use",)]
    ]
    assert len(stripped) > 3 * len(bases)
    assert [d["outcome"] for d in v2.decide_many(stripped)].count("allow") == 0
