"""Signed decision records through the real PDP and OPA: verification, binding, retries, reports, proofs."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from jwcrypto import jwk, jws

from pdp import client, keys, records
from pdp.ledger import checkpoint, merkle
from pdp.ledger.log import note_verifiers
from pdp.sidecar import OpaSidecar
from pdp.v1 import decision_pb2 as pb
from tests.helpers import PDP_COMMAND, ROOT, Pdp, assert_fail_closed, claims_of, load_request

pytestmark = pytest.mark.integration


def jwks_of(pdp: Pdp) -> dict[str, Any]:
    return json.loads(pdp.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks)


@pytest.mark.parametrize("example", ["allow-crm-lookup.json", "deny-tool-not-granted.json"])
def test_records_verify_with_an_independent_jose_library(pdp: Pdp, example: str) -> None:
    resp = pdp.stub.Decide(load_request(example), timeout=5)
    keyset = jwk.JWKSet.from_json(json.dumps(jwks_of(pdp)))
    token = jws.JWS()
    token.deserialize(resp.record)
    header = json.loads(token.objects["protected"])
    token.verify(keyset.get_key(header["kid"]), alg="EdDSA")
    claims = json.loads(token.payload)
    assert header["typ"] == "pdp-decision+jws"
    assert claims["decision_id"] == resp.decision_id
    assert claims["pdp"]["log_index"] == str(resp.log_index)
    assert claims["pdp"]["outcome"] == {pb.OUTCOME_ALLOW: "allow", pb.OUTCOME_DENY: "deny"}[resp.outcome]
    assert claims["bundles"] and claims["result"]["outcome"] == claims["pdp"]["outcome"]


def test_a_pep_verifies_the_record_for_the_action_it_is_about_to_run(pdp: Pdp) -> None:
    req = load_request("allow-crm-lookup.json")
    resp = pdp.stub.Decide(req, timeout=5)
    jwks, cache = jwks_of(pdp), client.MemoryReplayCache()
    verified = client.verify(resp.record, jwks, action=req.context, replay=cache)
    assert (verified.outcome, verified.decision_id) == ("allow", resp.decision_id)

    other = load_request("allow-crm-lookup.json").context
    other.action.arguments["customer_id"] = "C-9999"  # the agent swapped the record it reads
    with pytest.raises(client.VerificationError, match="different action"):
        client.verify(resp.record, jwks, action=other, replay=client.MemoryReplayCache())
    with pytest.raises(client.VerificationError, match="replay"):
        client.verify(resp.record, jwks, action=req.context, replay=cache)
    with pytest.raises(client.VerificationError, match="expired"):
        client.verify(resp.record, jwks, action=req.context, replay=client.MemoryReplayCache(), now=4e9)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_tampered_records_do_not_verify(pdp: Pdp) -> None:
    req = load_request("deny-tool-not-granted.json")
    record = pdp.stub.Decide(req, timeout=5).record
    jwks = jwks_of(pdp)
    h, p, s = record.split(".")
    claims = claims_of(record)
    claims["pdp"]["outcome"] = "allow"
    forged = [
        f"{h}.{_b64(claims)}.{s}",  # the outcome flipped
        f"{_b64({'alg': 'none', 'typ': 'pdp-decision+jws'})}.{p}.",  # alg none
        f"{_b64({'alg': 'EdDSA', 'kid': 'someone-else', 'typ': 'pdp-decision+jws'})}.{p}.{s}",
        f"{h}.{p}.{s[:-2]}{'A' if s[-2] != 'A' else 'B'}{s[-1]}",  # a signature byte
        record + "x",
    ]
    for token in forged:
        with pytest.raises(client.VerificationError):
            client.verify(token, jwks, action=req.context, replay=client.MemoryReplayCache())


def test_a_retry_returns_the_same_record_and_a_reused_anonymous_id_is_another_decision(pdp: Pdp) -> None:
    req = load_request("allow-crm-lookup.json")
    first, again = pdp.stub.Decide(req, timeout=5), pdp.stub.Decide(req, timeout=5)
    assert (again.decision_id, again.record, again.log_index) == (first.decision_id, first.record, first.log_index)
    assert again.outcome == first.outcome and [r.code for r in again.reasons] == [r.code for r in first.reasons]
    # Without mTLS callers cannot be told apart: the same request id with other content is another
    # decision, so nobody can squat a request id (an authenticated caller's reuse is refused: test_hardening).
    req.context.action.arguments["customer_id"] = "C-2"
    other = pdp.stub.Decide(req, timeout=5)
    assert other.decision_id != first.decision_id and other.log_index > first.log_index


def test_get_decision_proves_inclusion_under_a_signed_checkpoint(pdp: Pdp) -> None:
    resps = [pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5) for _ in range(5)]
    got = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=resps[2].decision_id), timeout=5)
    assert got.record == resps[2].record and got.log_index == resps[2].log_index
    ring_keys = keys.public_keys(jwks_of(pdp))
    origin = got.checkpoint.split("\n", 1)[0]
    cp = checkpoint.open_note(got.checkpoint.encode(), note_verifiers(origin, ring_keys))
    assert cp.size == got.tree_size >= 5
    leaf = merkle.leaf_hash(got.record.encode())
    merkle.verify_inclusion(leaf, got.log_index, cp.size, list(got.inclusion_proof), cp.root)
    bad = [bytes([got.inclusion_proof[0][0] ^ 1]) + got.inclusion_proof[0][1:], *got.inclusion_proof[1:]]
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(leaf, got.log_index, cp.size, bad, cp.root)

    # Later checkpoints extend earlier ones: the consistency proof connects the two roots.
    pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    later = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=resps[0].decision_id), timeout=5)
    cp2 = checkpoint.open_note(later.checkpoint.encode(), note_verifiers(origin, ring_keys))
    proof = pdp.stub.GetConsistencyProof(
        pb.GetConsistencyProofRequest(old_size=cp.size, new_size=cp2.size), timeout=5
    ).proof
    merkle.verify_consistency(cp.size, cp2.size, cp.root, cp2.root, list(proof))


def test_checkpoints_verify_with_gos_reference_signed_note_implementation(pdp: Pdp, tmp_path: Path) -> None:
    notecheck = ROOT / ".bin" / "notecheck"
    assert notecheck.exists(), "run `make tools`: notecheck is Go's sumdb/note verifier"
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    note = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=resp.decision_id), timeout=5).checkpoint
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_of(pdp)))
    cli = [*PDP_COMMAND, "keys", "note-keys", "--dir", str(tmp_path)]
    verifier_keys = subprocess.run(cli, check=True, capture_output=True, text=True).stdout.split()

    ok = subprocess.run([notecheck, *verifier_keys], input=note, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == note.split("\n\n")[0] + "\n"  # the checkpoint body, verified by Go

    origin, size = note.split("\n")[:2]
    forged = note.replace(f"{origin}\n{size}\n", f"{origin}\n{int(size) + 1}\n", 1)
    bad = subprocess.run([notecheck, *verifier_keys], input=forged, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "invalid signature" in bad.stderr
    other = keys.rotate(tmp_path / "other")
    stranger = checkpoint.verifier_key(origin, next(iter(keys.public_keys(other.jwks).values())))
    unknown = subprocess.run([notecheck, stranger], input=note, capture_output=True, text=True, check=False)
    assert unknown.returncode == 1 and "no verifiable signatures" in unknown.stderr


def test_unknown_decisions_and_bad_proof_requests_are_clear_errors(pdp: Pdp) -> None:
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id="no-such"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        pdp.stub.GetConsistencyProof(pb.GetConsistencyProofRequest(old_size=1, new_size=10**6), timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "new_size" in (e.value.details() or "")


def test_report_outcome_appends_a_signed_entry_linked_to_the_decision(pdp: Pdp) -> None:
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    report = client.Client(pdp.channel).report(
        resp.decision_id, pb.ACTION_STATUS_EXECUTED, result={"rows": 1}, impact={"records_read": 1}
    )
    claims = records.verify(report.record, keys.public_keys(jwks_of(pdp)), typ=records.TYP_OUTCOME)
    assert report.log_index > resp.log_index
    assert claims["decision_id"] == resp.decision_id
    assert claims["outcome"] == {"status": "executed", "result": {"rows": 1.0}, "impact": {"records_read": 1.0}}
    assert claims["pdp"]["decision_record_digest"] == "sha256:" + hashlib.sha256(resp.record.encode()).hexdigest()
    for bad, code in [
        (pb.ReportOutcomeRequest(decision_id="nope", status=pb.ACTION_STATUS_BLOCKED), grpc.StatusCode.NOT_FOUND),
        (pb.ReportOutcomeRequest(decision_id=resp.decision_id), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.ReportOutcomeRequest(status=pb.ACTION_STATUS_BLOCKED), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as e:
            pdp.stub.ReportOutcome(bad, timeout=5)
        assert e.value.code() == code


def test_a_fail_closed_deny_gets_no_outcome_report(start_opa: Any, start_pdp: Any) -> None:
    opa = start_opa()
    pdp = start_pdp(opa.url)
    opa.stop()
    resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert_fail_closed(resp, "pdp.opa_unavailable")
    size = pdp.server.recorder.log.size()
    with pytest.raises(grpc.RpcError) as e:
        client.Client(pdp.channel).report(resp.decision_id, pb.ACTION_STATUS_BLOCKED, result={"why": "no verdict"})
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "was DENY (fail-closed: pdp.opa_unavailable), not ALLOW" in (e.value.details() or "")
    assert pdp.server.recorder.log.size() == size


def test_masked_fields_never_reach_the_record_but_the_action_stays_bound(opa: OpaSidecar, start_pdp: Any) -> None:
    pdp = start_pdp(
        opa.url, mask_pointers=("/action/arguments/customer_id",), erase_pointers=("/asserted/principal/roles",)
    )
    req = load_request("allow-crm-lookup.json")
    req.context.action.arguments["customer_id"] = "C-SECRET-77"
    resp = pdp.stub.Decide(req, timeout=5)
    claims = claims_of(resp.record)
    assert claims["input"]["action"]["arguments"]["customer_id"] == "**masked**"
    assert "roles" not in claims["input"]["asserted"]["principal"]
    assert (claims["masked"], claims["erased"]) == (["/action/arguments/customer_id"], ["/asserted/principal/roles"])
    assert "C-SECRET-77" not in base64.urlsafe_b64decode(resp.record.split(".")[1] + "==").decode()
    client.verify(resp.record, jwks_of(pdp), action=req.context, replay=client.MemoryReplayCache())
