"""Budget claims in the decision document, the kill switch's list and times, the suspension record;
against the real SQLite store where state is involved."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdp.budgets import Budgets, _Grouped
from pdp.errors import InvalidArgument, PolicyMalformed
from pdp.schema import RECORD_TYPES, TYP_SUSPENSION, SuspensionRecord
from pdp.state import StateStore, Suspension, open_store
from pdp.suspensions import SuspensionList, parse_until, subjects, suspended_verdict
from pdp.telemetry import Telemetry
from pdp.verdict import BudgetClaim, Outcome, interpret
from tests.helpers import wait_for

GRANT = {"code": "tool.granted"}
CLAIM = {"budget": "fintech.velocity", "key": "payments-agent", "amount": 1, "limit": 2, "window": "1h"}


def _allow(**extra: Any) -> dict[str, Any]:
    return {"outcome": "allow", "reasons": [GRANT], **extra}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    s = open_store(tmp_path / "state")
    yield s
    s.close()


def test_claims_are_read_into_the_verdict_and_back_into_the_document() -> None:
    v = interpret(_allow(budgets=[CLAIM, {**CLAIM, "amount": 2.0, "budget": "b"}]))
    assert v.budgets[0] == BudgetClaim(**CLAIM)
    assert v.budgets[1].amount == 2 and isinstance(v.budgets[1].amount, int)
    assert v.budgets[0].window_s == 3600
    assert v.budgets[0].counter == "fintech.velocity:payments-agent"
    assert v.to_dict()["budgets"][0] == CLAIM


def test_a_ceiling_is_read_back_and_caps_the_reservation() -> None:
    v = interpret(_allow(budgets=[{**CLAIM, "limit": 10, "ceiling": 8}]))
    assert v.budgets[0].ceiling == 8 and v.budgets[0].cap == 8
    assert v.to_dict()["budgets"][0] == {**CLAIM, "limit": 10, "ceiling": 8}
    assert interpret(_allow(budgets=[CLAIM])).budgets[0].cap == CLAIM["limit"]


def test_a_document_without_claims_keeps_its_shape() -> None:
    assert "budgets" not in interpret(_allow()).to_dict()


@pytest.mark.parametrize(
    ("claim", "where"),
    [
        ("x", "budgets[0] is not an object"),
        ({**CLAIM, "budget": ""}, "budgets[0].budget"),
        ({**CLAIM, "key": 7}, "budgets[0].key"),
        ({**CLAIM, "amount": 0.5}, "budgets[0].amount"),
        ({**CLAIM, "amount": True}, "budgets[0].amount"),
        ({**CLAIM, "limit": -1}, "budgets[0].limit"),
        ({**CLAIM, "window": "1 hour"}, "budgets[0].window"),
        ({**CLAIM, "window": "0s"}, "budgets[0].window"),
        ({**CLAIM, "ceiling": 3}, "budgets[0].ceiling 3 is above its limit 2"),
        ({**CLAIM, "ceiling": 1.5}, "budgets[0].ceiling"),
    ],
)
def test_a_malformed_claim_is_no_verdict(claim: Any, where: str) -> None:
    with pytest.raises(PolicyMalformed, match=where.replace("[", r"\[").replace("]", r"\]")):
        interpret(_allow(budgets=[claim]))


def test_budgets_not_a_list_is_no_verdict() -> None:
    with pytest.raises(PolicyMalformed, match="budgets is a dict"):
        interpret(_allow(budgets={}))


def _input(agent: str = "payments-agent", principal: str = "bob@bank.example") -> dict[str, Any]:
    return {"agent": {"id": agent}, "principal": {"id": principal}, "action": {"tool": "payments.transfer"}}


def test_usage_is_bound_for_counters_seen_before(store: StateStore) -> None:
    budgets = Budgets(store, Telemetry(env={}))
    doc = _input()
    assert budgets.bind_usage(doc) == frozenset()
    assert doc["bound"]["usage"] == {}
    v = interpret(_allow(budgets=[CLAIM]))
    missing = budgets.unbound(doc, v, frozenset())
    assert missing == {("fintech.velocity", "payments-agent", "1h")}
    assert budgets.reserve("d-1", v).outcome is Outcome.ALLOW
    again = _input()
    assert budgets.bind_usage(again) == missing  # remembered for this agent, principal and tool
    assert again["bound"]["usage"] == {"fintech.velocity": {"payments-agent": {"1h": 1}}}
    assert budgets.unbound(again, v, missing) == frozenset()


class _HeldReads:
    """The real store with its usage reads counted, the first one held until ``release`` is set."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self.reads: list[list[tuple[str, int]]] = []
        self.release = threading.Event()

    def usage(self, keys: list[tuple[str, int]], *, now: int) -> dict[str, int]:
        self.reads.append(list(keys))
        if len(self.reads) == 1:
            self.release.wait(10)
        return self._store.usage(keys, now=now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_concurrent_usage_reads_are_one_read_each_getting_its_own(store: StateStore) -> None:
    held = _HeldReads(store)
    budgets = Budgets(held, Telemetry(env={}))  # type: ignore[arg-type]
    agents = ["a0", "a1", "a2", "a3"]
    for n, agent in enumerate(agents):  # agent aN has used N + 1 of its counter
        v = interpret(_allow(budgets=[{**CLAIM, "key": agent, "limit": 10}]))
        budgets.unbound(_input(agent), v, frozenset())
        for i in range(n + 1):
            assert budgets.reserve(f"{agent}-{i}", v).outcome is Outcome.ALLOW
    docs = [_input(agent) for agent in agents]
    bind_behind_the_first(budgets, held, docs)
    assert len(held.reads) == 2  # the first, then one for the three that queued behind it
    assert sorted(held.reads[1]) == [(f"fintech.velocity:{a}", 3600) for a in agents[1:]]
    for n, (agent, doc) in enumerate(zip(agents, docs, strict=True)):
        assert doc["bound"]["usage"] == {"fintech.velocity": {agent: {"1h": n + 1}}}


def test_one_counter_through_two_windows_in_one_group_is_read_for_each(store: StateStore) -> None:
    held = _HeldReads(store)
    budgets = Budgets(held, Telemetry(env={}))  # type: ignore[arg-type]
    hourly = interpret(_allow(budgets=[{**CLAIM, "key": "shared", "limit": 10}]))
    minutely = interpret(_allow(budgets=[{**CLAIM, "key": "shared", "limit": 10, "window": "1m"}]))
    budgets.unbound(_input(principal="h@x"), hourly, frozenset())
    budgets.unbound(_input(principal="m@x"), minutely, frozenset())
    assert budgets.reserve("r-1", hourly).outcome is Outcome.ALLOW
    docs = [_input(principal="h@x"), _input(principal="h@x"), _input(principal="m@x")]
    bind_behind_the_first(budgets, held, docs)
    assert docs[1]["bound"]["usage"] == {"fintech.velocity": {"shared": {"1h": 1}}}
    assert docs[2]["bound"]["usage"] == {"fintech.velocity": {"shared": {"1m": 1}}}
    assert sorted(map(tuple, held.reads[1:])) == [
        (("fintech.velocity:shared", 60),),
        (("fintech.velocity:shared", 3600),),
    ]


def bind_behind_the_first(budgets: Budgets, held: _HeldReads, docs: list[dict[str, Any]]) -> None:
    """Binds usage into each of ``docs`` at once: the first read held until all the others queued."""
    with concurrent.futures.ThreadPoolExecutor(len(docs)) as pool:
        first = pool.submit(budgets.bind_usage, docs[0])
        wait_for(lambda: len(held.reads) == 1, what="the first read")
        rest = [pool.submit(budgets.bind_usage, doc) for doc in docs[1:]]
        wait_for(lambda: len(budgets._read._queue) == len(rest), what="the other reads to queue")
        held.release.set()
        for f in [first, *rest]:
            f.result(10)


def test_a_group_that_fails_gives_its_callers_the_error_and_the_next_group_runs() -> None:
    calls: list[list[int]] = []

    def run(items: list[int]) -> list[int | Exception]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("a defect")
        return [i * 2 for i in items]

    grouped: _Grouped[int, int] = _Grouped(run)
    with pytest.raises(RuntimeError, match="a defect"):
        grouped(1)
    assert grouped(2) == 4  # not stuck behind a group that never finished


def test_reservation_beyond_the_limit_is_a_deny_naming_the_budget(store: StateStore) -> None:
    budgets = Budgets(store, Telemetry(env={}))
    v = interpret(_allow(budgets=[CLAIM]))
    assert [budgets.reserve(f"d-{i}", v).outcome for i in range(3)] == [Outcome.ALLOW, Outcome.ALLOW, Outcome.DENY]
    refused = budgets.reserve("d-9", v)
    assert [r.code for r in refused.reasons] == ["budget.exceeded"]
    assert "2 used + 1 would exceed the limit of 2 per 1h" in refused.reasons[0].message
    assert refused.budgets == v.budgets
    budgets.settle("d-0", status="failed")
    assert budgets.reserve("d-10", v).outcome is Outcome.ALLOW
    budgets.settle("d-1", status="executed")
    budgets.settle("d-1", status="failed")  # kept stays kept
    assert budgets.reserve("d-11", v).outcome is Outcome.DENY


def test_past_its_ceiling_a_reservation_is_refused_as_past_the_review_threshold(store: StateStore) -> None:
    budgets = Budgets(store, Telemetry(env={}))
    # The policy saw 0 used and let each through under a threshold of 3 (of a limit of 5).
    v = interpret(_allow(budgets=[{**CLAIM, "limit": 5, "ceiling": 3}]))
    assert [budgets.reserve(f"d-{i}", v).outcome for i in range(3)] == [Outcome.ALLOW] * 3
    refused = budgets.reserve("d-3", v)
    assert refused.outcome is Outcome.DENY
    assert [r.code for r in refused.reasons] == ["budget.review_threshold"]
    assert "3 used + 1 would pass 3 per 1h, above which a human approves" in refused.reasons[0].message
    approved = interpret(_allow(budgets=[{**CLAIM, "limit": 5}]))  # escalated and approved: up to the limit
    assert [budgets.reserve(f"a-{i}", approved).outcome for i in range(3)] == [Outcome.ALLOW] * 2 + [Outcome.DENY]
    assert [r.code for r in budgets.reserve("a-9", v).reasons] == ["budget.exceeded"]  # past both: the limit


def test_a_deny_reserves_nothing(store: StateStore) -> None:
    budgets = Budgets(store, Telemetry(env={}))
    v = interpret({"outcome": "deny", "reasons": [{"code": "x"}], "budgets": [CLAIM]})
    for i in range(3):
        assert budgets.reserve(f"d-{i}", v) is v
    assert store.usage([("fintech.velocity:payments-agent", 3600)], now=int(time.time())) == {
        "fintech.velocity:payments-agent": 0
    }


def test_suspensions_are_read_at_most_every_refresh(store: StateStore) -> None:
    now = [0.0]
    listed = SuspensionList(store, refresh_s=0.5, clock=lambda: now[0])
    assert listed.match(_input()) is None
    store.suspend(Suspension(kind="agent", value="payments-agent", reason="r", by="me", at=int(time.time())))
    assert listed.match(_input()) is None  # read less than refresh_s ago
    now[0] = 0.5
    s = listed.match(_input())
    assert s is not None and s.kind == "agent"
    store.resume("agent", "payments-agent", by="me", now=int(time.time()))
    listed.invalidate()
    assert listed.match(_input()) is None


def test_subjects_cover_agent_every_principal_and_tool() -> None:
    doc = {
        "agent": {"id": "a"},
        "verified": {"principal": {"id": "v@x"}},
        "asserted": {"principal": {"id": "s@x"}},
        "action": {"tool": "t"},
    }
    assert subjects(doc) == [("agent", "a"), ("principal", "v@x"), ("principal", "s@x"), ("tool", "t")]


def test_suspended_verdict_says_who_and_why() -> None:
    v = suspended_verdict(Suspension(kind="tool", value="t", reason="incident", by="ops", at=0, until=3600))
    assert v.outcome is Outcome.DENY and not v.indeterminate
    assert v.reasons[0].code == "tool.suspended"
    assert v.reasons[0].message == "tool t is suspended until 1970-01-01T01:00:00Z by ops: incident"


def test_until_is_a_time_or_a_duration() -> None:
    assert parse_until("", now=100) is None
    assert parse_until("2h", now=100) == 7300
    assert parse_until("2030-01-01T00:00:00Z", now=100) == 1893456000
    for bad, why in [("soon", "neither"), ("2030-01-01T00:00:00", "time zone"), ("2001-01-01T00:00:00Z", "future")]:
        with pytest.raises(InvalidArgument, match=why):
            parse_until(bad, now=1_000_000_000)


def test_suspension_record_round_trips() -> None:
    r = SuspensionRecord(
        action="suspend",
        kind="agent",
        value="a",
        reason="r",
        timestamp="t",
        requested_by="ipv4:127.0.0.1:1",
        operator="ops",
        until="",
        iat=1,
        jti="j",
        closed_escalations=("e-1",),
    ).at(7)
    assert RECORD_TYPES[TYP_SUSPENSION] is SuspensionRecord
    assert SuspensionRecord.from_dict(r.to_dict()) == r
    assert r.to_dict()["pdp"] == {"type": "suspension", "iat": 1, "jti": "j", "log_index": "7"}
