"""The trust model through a real PDP and a real OPA with the project's bundle (issue 13).

A lying enforcement point may change anything it asserts, and forward bad tokens: no such change
turns a non-ALLOW answer into ALLOW. Records say what the decision rested on, and a PEP can check
that a record answers the whole request it sent, for itself.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from google.protobuf import json_format

from pdp import client, devissuer
from pdp.digest import request_digest
from pdp.records import unverified_claims as claims_of
from pdp.v1 import decision_pb2 as pb
from tests.helpers import EXAMPLES, ROOT, Pdp, dev_issuers, load_request
from tests.mutations import mutated, mutations, token_attacks

pytestmark = pytest.mark.integration


def _expected(example: str) -> int:
    """The outcome an example's name says (README: examples are named for their outcome)."""
    for part, outcome in (("require-approval", pb.OUTCOME_REQUIRE_APPROVAL), ("deny", pb.OUTCOME_DENY)):
        if part in example:
            return outcome
    return pb.OUTCOME_ALLOW


EXAMPLE_NAMES = sorted(p.name for p in EXAMPLES.glob("*.json"))
NOT_ALLOWED = [e for e in EXAMPLE_NAMES if _expected(e) != pb.OUTCOME_ALLOW]
ALLOWED = [e for e in EXAMPLE_NAMES if _expected(e) == pb.OUTCOME_ALLOW]


def decide_all(pdp: Pdp, requests: Sequence[pb.DecideRequest]) -> list[pb.DecideResponse]:
    """Decides many requests in DecideBatch calls (each answer is what Decide gives alone)."""
    answers: list[pb.DecideResponse] = []
    for i in range(0, len(requests), 32):
        batch = pb.DecideBatchRequest(requests=requests[i : i + 32])
        answers.extend(pdp.stub.DecideBatch(batch, timeout=30).responses)
    return answers


def test_examples_are_split_by_outcome() -> None:
    assert len(NOT_ALLOWED) >= 7 and len(ALLOWED) >= 4
    assert all(_expected(e) != pb.OUTCOME_ALLOW for e in NOT_ALLOWED)


@pytest.mark.parametrize("example", EXAMPLE_NAMES)
def test_each_example_gives_its_outcome_with_the_right_tokens(pdp: Pdp, example: str) -> None:
    req = load_request(example)
    resp = pdp.stub.Decide(req, timeout=5)
    assert resp.outcome == _expected(example), [r.code for r in resp.reasons]
    trust = claims_of(resp.record.encode())["pdp"]["trust"]
    assert trust["rejected"] == []
    assert trust["principal"] == {"issuer": devissuer.ISSUERS["principal"], "id": req.context.principal.id}
    if req.context.HasField("risk"):
        assert trust["risk"] == {"issuer": devissuer.ISSUERS["risk"]}


@pytest.mark.parametrize("example", NOT_ALLOWED)
def test_no_lie_about_an_asserted_field_turns_a_non_allow_into_allow(pdp: Pdp, example: str) -> None:
    original = load_request(example)
    assert pdp.stub.Decide(original, timeout=5).outcome == _expected(example)
    without_tokens = load_request(example, tokens=False)
    cases = [(f"{m[0]} (right tokens)", mutated(original, m)) for m in mutations(_context(original))]
    cases += [(f"{m[0]} (no tokens)", mutated(without_tokens, m)) for m in mutations(_context(without_tokens))]
    answers = decide_all(pdp, [r for _, r in cases])
    allowed = [name for (name, _), a in zip(cases, answers, strict=True) if a.outcome == pb.OUTCOME_ALLOW]
    assert allowed == [], f"{example}: these lies were believed"
    assert len(cases) > 100


@pytest.mark.parametrize("example", NOT_ALLOWED)
def test_no_bad_token_turns_a_non_allow_into_allow(pdp: Pdp, example: str) -> None:
    cases = token_attacks(load_request(example), dev_issuers())
    answers = decide_all(pdp, [r for _, r in cases])
    allowed = [name for (name, _), a in zip(cases, answers, strict=True) if a.outcome == pb.OUTCOME_ALLOW]
    assert allowed == [], f"{example}: these tokens were believed"
    for (name, _), answer in zip(cases, answers, strict=True):
        rejected = claims_of(answer.record.encode())["pdp"]["trust"]["rejected"]
        field = {"principal": "principal_token", "risk": "risk_assertion", "lineage": "lineage_attestations"}
        assert any(r["field"].startswith(field[name.split(":")[0]]) for r in rejected), (name, rejected)


@pytest.mark.parametrize("example", ALLOWED)
def test_bad_tokens_are_rejected_and_recorded_on_allowed_examples_too(pdp: Pdp, example: str) -> None:
    for name, req in token_attacks(load_request(example), dev_issuers()):
        claims = claims_of(pdp.stub.Decide(req, timeout=5).record.encode())["pdp"]
        problems = {r["problem"].split(" (")[0] for r in claims["trust"]["rejected"]}
        expected = {
            "forged": "bad signature",
            "expired": "expired",
            "wrong issuer": "untrusted issuer 'https://issuer.evil.example'",
            "wrong audience": "wrong audience",
            "wrong action": "wrong action",
        }[name.split(": ")[1]]
        assert expected in problems, (name, problems)


def _context(request: pb.DecideRequest) -> dict[str, Any]:
    return dict(json_format.MessageToDict(request)["context"])


def test_the_record_says_what_the_decision_rested_on(pdp: Pdp) -> None:
    req = load_request("fintech-require-approval-new-beneficiary.json")
    req.context.lineage_attestations.append("not-a-token")
    resp = pdp.stub.Decide(req, timeout=5)
    pdp_claims = claims_of(resp.record.encode())["pdp"]
    assert pdp_claims["principal"] == "bob@bank.example"  # the verified principal
    trust = pdp_claims["trust"]
    assert trust["principal"] == {"issuer": devissuer.ISSUERS["principal"], "id": "bob@bank.example"}
    assert trust["risk"] == {"issuer": devissuer.ISSUERS["risk"]}
    assert trust["lineage"] == [{"issuer": devissuer.ISSUERS["lineage"], "source": "core-banking"}]
    ((rejected),) = trust["rejected"]
    assert rejected["field"] == "lineage_attestations[1]" and rejected["problem"].startswith("malformed")
    # The policy's looked-up facts, as the decision document gave them (catalogue revision, labels).
    catalog = json.loads((ROOT / "rego/pdp/catalog/data.json").read_text())
    assert pdp_claims["facts"]["catalog_revision"] == catalog["revision"]
    labels = catalog["resources"]["account"]["ACC-1001"]
    assert pdp_claims["facts"]["resource"]["catalogued"] is True
    assert pdp_claims["facts"]["resource"]["classification"] == labels["classification"]
    assert claims_of(resp.record.encode())["result"]["facts"] == pdp_claims["facts"]
    # The record is made for this caller (no client certificate: its peer address).
    assert pdp_claims["aud"].startswith("ipv4:127.0.0.1:")
    assert pdp_claims["request_digest"] == request_digest(req)
    # The input in the record shows each attribute's provenance.
    recorded = claims_of(resp.record.encode())["input"]
    assert recorded["verified"]["principal"]["roles"] == ["treasurer"]
    assert recorded["asserted"]["principal"]["id"] == "bob@bank.example"


def test_unverified_facts_are_recorded_as_absent(pdp: Pdp) -> None:
    resp = pdp.stub.Decide(load_request("fintech-allow-transfer.json", tokens=False), timeout=5)
    claims = claims_of(resp.record.encode())
    assert claims["pdp"]["trust"] == {"principal": None, "risk": None, "lineage": [], "rejected": []}
    assert claims["pdp"]["principal"] == ""
    assert claims["input"]["verified"] == {"lineage": []}


def test_a_pep_checks_the_record_answers_its_whole_request_for_itself(pdp: Pdp) -> None:
    req = load_request("allow-crm-lookup.json")
    resp = pdp.stub.Decide(req, timeout=5)
    jwks = json.loads(pdp.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks)
    aud = claims_of(resp.record.encode())["pdp"]["aud"]
    verified = client.verify(resp.record, jwks, request=req, audience=aud, replay=client.MemoryReplayCache())
    assert verified.outcome == "allow"
    # The action path still works (same action, whatever else the request said).
    client.verify(resp.record, jwks, action=req.context, replay=client.MemoryReplayCache())

    other = pb.DecideRequest()
    other.CopyFrom(req)
    other.context.principal_token = devissuer.mint(dev_issuers(), "principal", {"sub": "mallory@example.com"})
    with pytest.raises(client.VerificationError, match="different request"):
        client.verify(resp.record, jwks, request=other, replay=client.MemoryReplayCache())
    other.CopyFrom(req)
    other.context.risk.score = 1  # asserted, outside the action digest, but part of the request
    with pytest.raises(client.VerificationError, match="different request"):
        client.verify(resp.record, jwks, request=other, replay=client.MemoryReplayCache())
    with pytest.raises(client.VerificationError, match="made for"):
        client.verify(
            resp.record, jwks, request=req, audience="spiffe://x/other-pep", replay=client.MemoryReplayCache()
        )
    with pytest.raises(client.VerificationError, match="give the action or the request"):
        client.verify(resp.record, jwks, replay=client.MemoryReplayCache())


def test_a_retry_with_the_same_tokens_replays_and_with_other_tokens_is_decided_afresh(pdp: Pdp) -> None:
    req = load_request("fintech-allow-transfer.json")
    first = pdp.stub.Decide(req, timeout=5)
    assert pdp.stub.Decide(req, timeout=5).record == first.record
    changed = pb.DecideRequest()
    changed.CopyFrom(req)
    changed.context.risk_assertion = ""
    # Without mTLS nobody owns a request id (docs/authorization.md: squatting must not block the
    # victim), so other tokens under the same id are another request: decided on their own facts,
    # never handed the first answer's record. (An authenticated caller reusing its own id gets
    # INVALID_ARGUMENT: tests/integration/test_hardening.py.)
    other = pdp.stub.Decide(changed, timeout=5)
    assert other.decision_id != first.decision_id and other.record != first.record
    assert claims_of(other.record)["pdp"]["trust"]["risk"] is None  # decided without the risk assertion
