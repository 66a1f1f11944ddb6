"""DecideBatch through the real PDP and OPA: same answers as Decide, validated all first, fail-closed."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable

import grpc
import pytest

from pdp import client
from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from tests.helpers import ROOT, Pdp, assert_fail_closed, load_request

pytestmark = pytest.mark.integration

BUNDLES = ROOT / "tests" / "data" / "bundles"
MIX = ["allow-crm-lookup.json", "deny-tool-not-granted.json", "require-approval-high-risk.json"]


def batch(*requests: pb.DecideRequest) -> pb.DecideBatchRequest:
    return pb.DecideBatchRequest(requests=list(requests))


def verdict(resp: pb.DecideResponse) -> tuple[int, list[str], list[str]]:
    return resp.outcome, [r.code for r in resp.reasons], [o.type for o in resp.obligations]


def log_size(pdp: Pdp) -> int:
    """Entries in the PDP's log, from a fresh checkpoint (via GetDecision of a new decision)."""
    probe = pdp.stub.Decide(load_request("deny-tool-not-granted.json"), timeout=5)
    got = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=probe.decision_id), timeout=5)
    return got.tree_size - 1  # without the probe itself


def test_a_batch_answers_each_request_as_decide_would(pdp: Pdp) -> None:
    requests = [load_request(name) for name in MIX]
    answers = client.Client(pdp.channel).decide_batch(requests, timeout_s=5)
    alone = [pdp.stub.Decide(load_request(name), timeout=5) for name in MIX]

    assert [a.outcome for a in answers] == [pb.OUTCOME_ALLOW, pb.OUTCOME_DENY, pb.OUTCOME_REQUIRE_APPROVAL]
    assert [verdict(a) for a in answers] == [verdict(a) for a in alone]
    assert [a.request_id for a in answers] == [r.request_id for r in requests]
    assert len({a.decision_id for a in answers}) == 3
    assert [a.log_index for a in answers] == [answers[0].log_index + i for i in range(3)]
    jwks = json.loads(pdp.stub.GetJwks(pb.GetJwksRequest(), timeout=5).jwks)
    for req, answer in zip(requests, answers, strict=True):
        assert not answer.indeterminate
        assert answer.provenance.bundle_revisions == alone[0].provenance.bundle_revisions
        checked = client.verify(answer.record, jwks, action=req.context, replay=client.MemoryReplayCache())
        assert checked.decision_id == answer.decision_id
        got = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=answer.decision_id), timeout=5)
        assert got.record == answer.record


def test_a_retried_batch_gets_the_first_records_and_new_requests_are_decided(pdp: Pdp) -> None:
    first = [load_request(name) for name in MIX[:2]]
    once = pdp.stub.DecideBatch(batch(*first), timeout=5).responses
    fresh = load_request(MIX[2])
    again = pdp.stub.DecideBatch(batch(*first, fresh), timeout=5).responses

    assert [a.record for a in again[:2]] == [a.record for a in once]
    assert again[2].outcome == pb.OUTCOME_REQUIRE_APPROVAL
    assert again[2].log_index > once[1].log_index


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda rs: rs[1].context.ClearField("agent"), "requests[1].context.agent"),
        (lambda rs: rs[2].context.agent.__setattr__("id", "bad id with spaces"), "requests[2].context.agent.id"),
        (lambda rs: rs[0].__setattr__("explain", pb.EXPLAIN_LEVEL_NOTES), "requests[0].explain"),
        (lambda rs: rs[2].__setattr__("request_id", rs[0].request_id), "requests[2].request_id"),
    ],
    ids=["missing-agent", "bad-agent-id", "explain", "repeated-request-id"],
)
def test_one_bad_request_fails_the_whole_batch_naming_it_and_nothing_is_decided(
    pdp: Pdp, mutate: Callable[[list[pb.DecideRequest]], None], field: str
) -> None:
    requests = [load_request(name) for name in MIX]
    mutate(requests)
    before = log_size(pdp)
    with pytest.raises(grpc.RpcError) as err:
        pdp.stub.DecideBatch(batch(*requests), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")
    assert log_size(pdp) == before + 1  # only the probe: nothing of the batch was recorded


def test_an_anonymous_request_id_reused_for_another_request_is_another_decision(pdp: Pdp) -> None:
    first = load_request(MIX[0])
    decided = pdp.stub.Decide(first, timeout=5)
    other = load_request(MIX[1])
    other.request_id = first.request_id
    answers = pdp.stub.DecideBatch(batch(load_request(MIX[2]), other), timeout=5).responses
    assert answers[1].decision_id != decided.decision_id  # no squatting without mTLS (docs/authorization.md)


def test_empty_and_oversized_batches_are_refused(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> None:
    pdp = start_pdp(opa.url, max_batch=2)
    for requests, problem in (([], "is empty"), ([load_request(n) for n in MIX], "has 3 requests")):
        with pytest.raises(grpc.RpcError) as err:
            pdp.stub.DecideBatch(batch(*requests), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"requests: {problem}")


def _assert_all_fail_closed(answers: list[pb.DecideResponse], error_code: str) -> None:
    assert answers
    for a in answers:
        assert_fail_closed(a, error_code)
        assert a.record  # the denial is recorded too


def test_no_opa_means_every_answer_is_deny(start_pdp: Callable[..., Pdp]) -> None:
    pdp = start_pdp(f"http://127.0.0.1:{free_port()}")
    answers = pdp.stub.DecideBatch(batch(*(load_request(n) for n in MIX)), timeout=5).responses
    _assert_all_fail_closed(list(answers), "pdp.opa_unavailable")


@pytest.mark.parametrize(
    ("bundle", "error_code"),
    [
        ("undefined", "pdp.policy_undefined"),  # no batch rule (and no decision) in the bundle
        ("malformed", "pdp.policy_malformed"),  # each decision breaks the contract
        ("conflict", "pdp.opa_error"),  # evaluation error: OPA answers HTTP 500
        ("short-batch", "pdp.opa_error"),  # the batch rule answers one ALLOW for three requests
    ],
)
def test_a_broken_or_lying_batch_rule_fails_every_answer_closed(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], bundle: str, error_code: str
) -> None:
    opa = start_opa(bundle=BUNDLES / bundle)
    pdp = start_pdp(opa.url)
    answers = pdp.stub.DecideBatch(batch(*(load_request(n) for n in MIX)), timeout=5).responses
    _assert_all_fail_closed(list(answers), error_code)


def test_concurrent_retries_across_decide_and_batches_make_one_decision_each(pdp: Pdp) -> None:
    shared = [load_request(name) for name in MIX]
    before = log_size(pdp)

    def call(k: int) -> list[pb.DecideResponse]:
        if k % 3 == 0:
            return [pdp.stub.Decide(shared[k % 3], timeout=10)]
        order = shared[k % 3 :] + shared[: k % 3]  # overlapping batches, in different orders
        return list(pdp.stub.DecideBatch(batch(*order), timeout=10).responses)

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = [a for got in pool.map(call, range(24)) for a in got]
    records = {a.request_id: set() for a in answers}
    for a in answers:
        records[a.request_id].add(a.record)
    assert all(len(r) == 1 for r in records.values()), "a retry was decided twice"
    # the probe, one record per request, and the escalation the REQUIRE_APPROVAL one opened (once)
    assert log_size(pdp) == before + 1 + len(MIX) + 1
