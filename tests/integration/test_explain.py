"""Explanations: asked for after the verdict, one at a time at OPA, bounded in time and size; when one
cannot be had, the answer says why and the decision stands (pdp.explain).

The Explainer is exercised against a real OPA behind the tests' holding proxy, so "OPA is still
tracing" is a held query, not a guess about timing; the size cap through a real PDP.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pdp.context import Caller, build_input
from pdp.explain import Explainer
from pdp.opa import OpaClient
from pdp.records import digest
from pdp.sidecar import OpaSidecar
from pdp.v1 import decision_pb2 as pb
from tests.helpers import CountingProxy, Pdp, claims_of, load_request, wait_for

pytestmark = pytest.mark.integration

FAILS = int(pb.EXPLAIN_LEVEL_FAILS)  # a trace of every failed expression: never empty


@pytest.fixture
def proxy(opa: OpaSidecar) -> Iterator[CountingProxy]:
    p = CountingProxy(opa.url)
    yield p
    p.close()


@pytest.fixture
def doc() -> dict[str, Any]:
    caller = Caller(authenticated=False, peer="ipv4:127.0.0.1:1")
    request = load_request("allow-crm-lookup.json")
    return build_input(request, caller=caller, request_time="2026-12-06T00:00:00Z", max_depth=16)


@pytest.fixture
def revisions(opa: OpaSidecar, doc: dict[str, Any]) -> dict[str, str]:
    """The bundle revisions a verdict for ``doc`` is made with now."""
    return OpaClient(opa.url, "pdp/decision").query(doc, timeout_s=5).bundle_revisions


def test_an_explanation_is_opa_s_trace_of_the_decision(
    proxy: CountingProxy, doc: dict[str, Any], revisions: dict[str, str]
) -> None:
    got = Explainer(OpaClient(proxy.url, "pdp/decision"), timeout_s=5).explain(
        doc, FAILS, revisions=revisions, time_left_s=None
    )
    assert got.omitted == "" and got.events
    assert "explain=fails" in proxy.queries[0][0] and proxy.queries[0][0].startswith("/v1/data/pdp/decision?")


def test_while_one_explanation_is_traced_another_is_omitted_and_says_so(
    proxy: CountingProxy, doc: dict[str, Any], revisions: dict[str, str]
) -> None:
    explainer = Explainer(OpaClient(proxy.url, "pdp/decision"), timeout_s=5, lanes=1)
    proxy.gate.clear()  # OPA "is still tracing" the first one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(explainer.explain, doc, FAILS, revisions=revisions, time_left_s=None)
        wait_for(lambda: len(proxy.queries) == 1, what="the first trace at the proxy")
        second = explainer.explain(doc, FAILS, revisions=revisions, time_left_s=0.3)
        assert second.events == []
        assert second.omitted == "omitted: OPA was tracing 1 other explanation(s) for 0.25 s"
        assert len(proxy.queries) == 1  # the second never reached OPA
        proxy.gate.set()
        assert first.result(10).events and not first.result(10).omitted


def test_a_trace_opa_does_not_finish_in_time_is_omitted(
    proxy: CountingProxy, doc: dict[str, Any], revisions: dict[str, str]
) -> None:
    proxy.gate.clear()
    got = Explainer(OpaClient(proxy.url, "pdp/decision"), timeout_s=0.3).explain(
        doc, FAILS, revisions=revisions, time_left_s=None
    )
    assert got == type(got)([], "omitted: OPA did not finish the trace within 0.30 s")


def test_no_time_left_before_the_deadline_asks_opa_nothing(
    proxy: CountingProxy, doc: dict[str, Any], revisions: dict[str, str]
) -> None:
    got = Explainer(OpaClient(proxy.url, "pdp/decision"), timeout_s=5).explain(
        doc, FAILS, revisions=revisions, time_left_s=0.01
    )
    assert got.omitted == "omitted: no time was left before the caller's deadline"
    assert proxy.queries == []


def test_a_trace_of_another_policy_revision_than_the_verdict_s_is_omitted(
    opa: OpaSidecar, doc: dict[str, Any], revisions: dict[str, str]
) -> None:
    other = {name: rev + "-before" for name, rev in revisions.items()}
    got = Explainer(OpaClient(opa.url, "pdp/decision"), timeout_s=5).explain(
        doc, FAILS, revisions=other, time_left_s=None
    )
    assert got.events == [] and got.omitted == "omitted: the policy changed between the verdict and its trace"


def test_an_explanation_over_the_size_cap_is_omitted_and_the_decision_stands(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp]
) -> None:
    pdp = start_pdp(opa.url, max_explanation_bytes=64 * 1024)
    req = load_request("allow-crm-lookup.json")
    req.explain = pb.EXPLAIN_LEVEL_FULL  # the bundle's full trace of this request: megabytes
    resp = pdp.stub.Decide(req, timeout=10)
    assert resp.outcome == pb.OUTCOME_ALLOW
    assert resp.explanation.level == pb.EXPLAIN_LEVEL_FULL and not resp.explanation.events
    assert resp.explanation.omitted == "omitted: OPA's answer is larger than 65536 bytes"
    assert claims_of(resp.record)["pdp"]["explanation_digest"] == digest([])  # the record says: none given
