"""Coalescing: concurrent Decide calls reach a real OPA as one batched query, each with its own answer.

A small HTTP proxy of the test's own (``CountingProxy``) sits between the PDP and OPA: it counts and
records the queries, can hold the first one (so that the next callers queue behind it,
deterministically), and can break an answer on its way back.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pdp.coalesce import CoalescingOpaClient
from pdp.context import Caller, build_input
from pdp.errors import NoVerdict, OpaError, OpaTimeout
from pdp.opa import OpaAnswer, OpaClient
from pdp.sidecar import OpaSidecar
from pdp.telemetry import SPAN_COALESCED, Telemetry
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import interpret
from tests.helpers import CountingProxy, Pdp, assert_fail_closed, claims_of, load_request, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = ["allow-crm-lookup.json", "deny-tool-not-granted.json", "require-approval-high-risk.json"]


def is_batch(path: str) -> bool:
    """Whether a query goes to a batch rule (``pdp/decisions``, or ``pdp/mask/answers`` with policy masking)."""
    return path.split("?", 1)[0].endswith(("/decisions", "/answers"))


@pytest.fixture
def proxy(opa: OpaSidecar) -> Iterator[CountingProxy]:
    p = CountingProxy(opa.url)
    yield p
    p.close()


def inputs(n: int) -> list[dict[str, Any]]:
    """``n`` OPA inputs cycling through the allow, deny and approval examples."""
    caller = Caller(authenticated=False, peer="ipv4:127.0.0.1:1")
    return [
        build_input(load_request(EXAMPLES[i % 3]), caller=caller, request_time="2026-11-25T00:00:00Z", max_depth=16)
        for i in range(n)
    ]


def queued_behind_first(
    client: CoalescingOpaClient,
    proxy: CountingProxy,
    docs: list[dict[str, Any]],
    *,
    timeouts: list[float] | None = None,
) -> list[concurrent.futures.Future[OpaAnswer]]:
    """Sends ``docs[0]`` (held at the proxy), then the rest once it is in flight; returns when they all queue."""
    proxy.gate.clear()
    pool = concurrent.futures.ThreadPoolExecutor(len(docs))
    timeouts = timeouts or [5.0] * len(docs)
    futures = [pool.submit(client.query, docs[0], timeout_s=timeouts[0])]
    wait_for(lambda: len(proxy.queries) == 1, what="the first query at the proxy")
    futures += [pool.submit(client.query, d, timeout_s=t) for d, t in zip(docs[1:], timeouts[1:], strict=True)]
    wait_for(lambda: client.queued() == len(docs) - 1, what="the other callers to queue")
    pool.shutdown(wait=False)
    return futures


def test_concurrent_calls_go_to_opa_as_one_batch_each_with_its_own_answer(
    opa: OpaSidecar, proxy: CountingProxy
) -> None:
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    docs = inputs(7)
    futures = queued_behind_first(client, proxy, docs)
    proxy.gate.set()
    answers = [f.result(10) for f in futures]

    assert proxy.paths() == ["/v1/data/pdp/decision", "/v1/data/pdp/decisions"]  # 7 calls, 2 OPA queries
    assert proxy.queries[1][1]["input"]["requests"] == docs[1:]
    alone = OpaClient(opa.url, "pdp/decision")
    for doc, answer in zip(docs, answers, strict=True):
        assert answer.result == alone.query(doc, timeout_s=5).result
    assert len({interpret(a.result).outcome for a in answers}) > 1  # not one answer for all
    assert (client.queries_sent, client.batches_sent) == (2, 1)


def test_a_lone_call_goes_alone_at_once(proxy: CountingProxy) -> None:
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    for doc in inputs(3):
        client.query(doc, timeout_s=5)
    assert proxy.paths() == ["/v1/data/pdp/decision"] * 3


def test_a_broken_batch_fails_every_caller_of_it_closed(proxy: CountingProxy) -> None:
    proxy.rewrite = lambda path, raw: (
        (500, b'{"code":"internal_error","message":"boom"}')
        if "decisions" in path
        else (
            200,
            raw,
        )
    )
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    futures = queued_behind_first(client, proxy, inputs(5))
    proxy.gate.set()
    assert futures[0].result(10).defined  # the first went alone, before the batch broke
    errors = [f.exception(10) for f in futures[1:]]
    assert all(isinstance(e, OpaError) for e in errors), errors
    assert {e.error_code for e in errors if isinstance(e, NoVerdict)} == {"pdp.opa_error"}


def test_a_malformed_element_fails_only_its_own_caller(opa: OpaSidecar, proxy: CountingProxy) -> None:
    def break_third(path: str, raw: bytes) -> tuple[int, bytes]:
        if "decisions" not in path:
            return 200, raw
        body = json.loads(raw)
        body["result"][2] = {"outcome": "allow"}  # no reasons, no obligations: not the contract
        return 200, json.dumps(body).encode()

    proxy.rewrite = break_third
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    docs = inputs(5)
    futures = queued_behind_first(client, proxy, docs)
    proxy.gate.set()
    answers = [f.result(10) for f in futures]
    with pytest.raises(NoVerdict):
        interpret(answers[3].result)  # batch element 2 is the fourth caller's
    alone = OpaClient(opa.url, "pdp/decision")
    for i, (doc, answer) in enumerate(zip(docs, answers, strict=True)):
        if i != 3:
            assert interpret(answer.result) == interpret(alone.query(doc, timeout_s=5).result)


def test_a_queued_caller_whose_deadline_passes_fails_closed_alone(proxy: CountingProxy) -> None:
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    futures = queued_behind_first(client, proxy, inputs(4), timeouts=[5.0, 5.0, 0.2, 5.0])
    assert isinstance(futures[2].exception(5), OpaTimeout)  # while the first query is still held
    proxy.gate.set()
    assert [f.result(10).defined for i, f in enumerate(futures) if i != 2] == [True, True, True]
    assert len(proxy.queries[1][1]["input"]["requests"]) == 2


def test_explain_queries_bypass_the_coalescer(proxy: CountingProxy) -> None:
    client = CoalescingOpaClient(proxy.url, "pdp/decision")
    docs = inputs(3)
    futures = queued_behind_first(client, proxy, docs[:2])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        explained = pool.submit(client.query, docs[2], timeout_s=5, explain=1)
        # reaches OPA while one query is in flight and another caller is queued behind it
        wait_for(lambda: len(proxy.queries) == 2, what="the explained query at the proxy")
        assert "explain=notes" in proxy.queries[1][0]
        assert client.queued() == 1
        proxy.gate.set()
        assert explained.result(10).defined
    assert [f.result(10).defined for f in futures] == [True, True]


def test_each_caller_keeps_its_own_span_linked_to_the_shared_opa_span(proxy: CountingProxy) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(env={})
    telemetry.tracer_provider, telemetry.tracer = provider, provider.get_tracer("pdp")
    client = CoalescingOpaClient(proxy.url, "pdp/decision", telemetry)

    def call(i: int, doc: dict[str, Any]) -> OpaAnswer:
        with telemetry.tracer.start_as_current_span(f"caller-{i}"):
            return client.query(doc, timeout_s=5)

    docs = inputs(4)
    proxy.gate.clear()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        first = pool.submit(call, 0, docs[0])
        wait_for(lambda: len(proxy.queries) == 1, what="the first query at the proxy")
        rest = [pool.submit(call, i, d) for i, d in enumerate(docs[1:], start=1)]
        wait_for(lambda: client.queued() == 3, what="the other callers to queue")
        proxy.gate.set()
        [f.result(10) for f in [first, *rest]]
    spans = exporter.get_finished_spans()
    batch_span = next(s for s in spans if s.name == "POST /v1/data/pdp/decisions")
    callers = {s.name: s for s in spans if s.name.startswith("caller-")}
    waits = [s for s in spans if s.name == SPAN_COALESCED]
    assert len(waits) == 3
    for w in waits:
        assert w.parent is not None
        owner = next(c for c in callers.values() if c.context.span_id == w.parent.span_id)
        assert owner.context.trace_id == w.context.trace_id  # in the caller's own trace
        assert [link.context.span_id for link in w.links] == [batch_span.context.span_id]
        assert w.attributes is not None and w.attributes["pdp.opa.batch_size"] == 3
    assert len({w.parent.span_id for w in waits if w.parent is not None}) == 3


def decide_queued_behind_first(pdp: Pdp, proxy: CountingProxy, reqs: list[pb.DecideRequest]) -> list[pb.DecideResponse]:
    """Decide calls through the PDP: the first held at the proxy, the others queued behind it; then released."""
    client = pdp.server.opa
    assert isinstance(client, CoalescingOpaClient)
    proxy.gate.clear()
    futures = [pdp.stub.Decide.future(reqs[0], timeout=10)]
    wait_for(lambda: len(proxy.paths()) == 1, what="the first query at the proxy")
    futures += [pdp.stub.Decide.future(r, timeout=10) for r in reqs[1:]]
    wait_for(lambda: client.queued() == len(reqs) - 1, what="the other Decide calls to queue")
    proxy.gate.set()
    return [f.result() for f in futures]


def test_decide_calls_coalesced_through_the_pdp_each_get_their_own_signed_record(
    proxy: CountingProxy, start_pdp: Callable[..., Pdp]
) -> None:
    reqs = [load_request(EXAMPLES[i % 3]) for i in range(6)]
    responses = decide_queued_behind_first(start_pdp(proxy.url), proxy, reqs)

    # 6 calls, 2 OPA queries: the first alone, then the 5 queued behind it as one batch
    assert [len(body["input"].get("requests", [body["input"]])) for _, body in proxy.decisions()] == [1, 5]
    assert [r.outcome for r in responses] == [pb.OUTCOME_ALLOW, pb.OUTCOME_DENY, pb.OUTCOME_REQUIRE_APPROVAL] * 2
    for req, resp in zip(reqs, responses, strict=True):
        assert claims_of(resp.record)["pdp"]["request_id"] == req.request_id
    assert len({r.log_index for r in responses}) == 6


def test_a_broken_batch_through_the_pdp_is_a_deny_for_each_caller(
    proxy: CountingProxy, start_pdp: Callable[..., Pdp]
) -> None:
    proxy.rewrite = lambda path, raw: (200, b"not json") if is_batch(path) else (200, raw)
    reqs = [load_request(EXAMPLES[0]) for _ in range(4)]
    responses = decide_queued_behind_first(start_pdp(proxy.url), proxy, reqs)
    assert responses[0].outcome == pb.OUTCOME_ALLOW
    for resp in responses[1:]:
        assert_fail_closed(resp, "pdp.opa_error")
