"""What every state store backend must do: the test bodies, written once.

``tests/unit/test_state_sqlite.py`` and ``tests/integration/test_state_postgres.py`` subclass
:class:`StateStoreContract` and give its tests a ``backend`` fixture (:class:`Backend`) for their
database. Races run in real separate processes released together, each opening its own
store on the same database (often a new one, so the processes race to create it as well).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pdp.state import (
    BudgetClaim,
    Escalation,
    EscalationError,
    StateReplayCache,
    StateStore,
    StateUnavailable,
    Suspension,
    Vote,
    open_store,
)

PROCESSES = 6
T0 = 1_800_000_000


@dataclasses.dataclass
class Backend:
    """A database for one test: ``target`` is what ``open_store`` takes; ``take_down`` makes it fail."""

    target: str
    take_down: Callable[[], None]
    opened: list[StateStore] = dataclasses.field(default_factory=list)

    def open(self) -> StateStore:
        store = open_store(self.target)
        self.opened.append(store)
        return store


def backend_fixture(target: str, take_down: Callable[[], None]) -> Iterator[Backend]:
    """The body of each test module's ``backend`` fixture: closes what the test opened."""
    backend = Backend(target, take_down)
    yield backend
    for store in backend.opened:
        store.close()


def _child(target: str, fn: Callable[..., Any], args: tuple[Any, ...], ready: Any, go: Any, out: Any) -> None:
    try:
        ready.put(True)
        if not go.wait(timeout=60):
            raise TimeoutError("never released")
        store = open_store(target)  # replicas starting together: opening races too
        out.put(fn(store, *args))
        store.close()
    except Exception as e:
        out.put(f"error: {type(e).__name__}: {e}")


def in_processes(target: str, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
    """Runs ``fn(store, *a)`` for each ``a`` in its own process, all released at once; their results.

    The processes are spawned, not forked: a fork of the test runner would inherit whatever locks its
    other threads held at that moment. Each says it is ready; once all are, one event releases them.
    """
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(target, fn, a, ready, go, out)) for a in args]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=90)
        go.set()
        results = [out.get(timeout=90) for _ in procs]
    except queue.Empty:
        pytest.fail("a racing process did not start or gave no result within 90 s")
    finally:
        go.set()
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = [r for r in results if isinstance(r, str) and r.startswith("error:")]
    assert not errors, errors
    return results


def escalation(**overrides: Any) -> Escalation:
    fields: dict[str, Any] = {
        "id": "esc-1",
        "decision_id": "dec-1",
        "action_digest": "sha256:" + "ab" * 32,
        "agent_id": "payments-agent",
        "principal_id": "bob@bank.example",
        "reasons": ["approval.required"],
        "role": "payments-approver",
        "count": 2,
        "created_at": T0,
        "expires_at": T0 + 600,
        "context": {"tool": "transfer", "arguments": {"amount": 4900}},
    }
    return Escalation(**{**fields, **overrides})


def vote(approver: str, *, approve: bool = True, roles: tuple[str, ...] = ("payments-approver",), at: int = T0) -> Vote:
    return Vote(approver=approver, roles=list(roles), approve=approve, comment=f"by {approver}", at=at)


def _first_uses(store: StateStore, keys: list[str]) -> list[str]:
    return [k for k in keys if store.first_use(k, T0 + 60, now=T0)]


def _vote_once(store: StateStore, approver: str) -> str:
    return store.record_vote("esc-race", vote(approver), now=T0 + 1).status


def _reserve_many(store: StateStore, process: int, amount: int, limit: int) -> int:
    claim = BudgetClaim(key="payments-agent/bob/day", amount=amount, limit=limit, window_s=86_400)
    return sum(store.reserve(f"r-{process}-{i}", [claim], now=T0 + i) for i in range(8))


def _reserve_groups(store: StateStore, process: int) -> list[tuple[str, bool]]:
    """Four groups of three requests: each claims ``shared`` (10 fit); every other one ``tight`` too (3 fit)."""
    shared = BudgetClaim(key="shared/hour", amount=1, limit=10, window_s=3600)
    tight = BudgetClaim(key="tight/minute", amount=1, limit=3, window_s=60)
    answers = []
    for g in range(4):
        requests = [(f"g-{process}-{g}-{i}", [tight, shared] if i % 2 else [shared]) for i in range(3)]
        granted = store.reserve_many(requests, now=T0 + g)
        answers += [(rid, ok) for (rid, _), ok in zip(requests, granted, strict=True)]
    return answers


class StateStoreContract:
    """The tests; a subclass named ``Test...`` gives them its ``backend`` fixture."""

    # --- single use -----------------------------------------------------------------------------------

    def test_first_use_is_once_until_expiry(self, backend: Backend) -> None:
        store, other = backend.open(), backend.open()
        assert store.first_use("jti-1", T0 + 60, now=T0) is True
        assert store.first_use("jti-1", T0 + 60, now=T0 + 1) is False
        assert other.first_use("jti-1", T0 + 60, now=T0 + 60) is False, "a second replica must see the use"
        assert other.first_use("jti-1", T0 + 200, now=T0 + 61) is True, "after expiry the id may be used again"
        assert store.first_use("jti-1", T0 + 200, now=T0 + 62) is False, "and then it is used until its new expiry"
        assert store.first_use("jti-2", T0 + 60, now=T0) is True

    def test_replay_cache_adapter_refuses_a_record_seen_by_another_pep(self, backend: Backend) -> None:
        pep_a, pep_b = StateReplayCache(backend.open()), StateReplayCache(backend.open())
        far = 4_000_000_000
        assert pep_a.first_use("record-jti", far) is True
        assert pep_b.first_use("record-jti", far) is False
        assert pep_a.first_use("record-jti", far) is False

    def test_first_use_race_across_processes_has_one_winner_per_key(self, backend: Backend) -> None:
        keys = [f"token-{i}" for i in range(20)]
        won = in_processes(backend.target, _first_uses, [(keys,)] * PROCESSES)
        winners = sorted(k for per_process in won for k in per_process)
        assert winners == sorted(keys), "each key is first used exactly once across all processes"

    def test_threads_sharing_one_store_have_one_winner_per_key(self, backend: Backend) -> None:
        store = backend.open()
        keys = [f"record-{i}" for i in range(20)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=PROCESSES) as pool:
            won = list(pool.map(lambda _: _first_uses(store, keys), range(PROCESSES)))
        assert sorted(k for per_thread in won for k in per_thread) == sorted(keys)

    # --- escalations ----------------------------------------------------------------------------------

    def test_escalation_open_get_list(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation())
        store.open_escalation(escalation(id="esc-2", created_at=T0 + 1, expires_at=T0 + 10))
        assert backend.open().get_escalation("esc-1") == escalation()
        assert store.get_escalation("nope") is None
        assert [e.id for e in store.list_escalations(now=T0)] == ["esc-1", "esc-2"]
        assert [e.id for e in store.list_escalations(status="open", now=T0 + 10)] == ["esc-1"]
        expired = store.list_escalations(status="expired", now=T0 + 10)
        assert [(e.id, e.status) for e in expired] == [("esc-2", "expired")]
        with pytest.raises(EscalationError, match="already exists") as err:
            store.open_escalation(escalation())
        assert err.value.reason == "exists"

    def test_two_distinct_approvers_approve_and_the_same_one_twice_is_refused(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation())
        assert store.record_vote("esc-1", vote("dan@bank.example"), now=T0 + 1).status == "open"
        with pytest.raises(EscalationError, match=r"dan@bank\.example has already voted") as err:
            store.record_vote("esc-1", vote("dan@bank.example", at=T0 + 2), now=T0 + 2)
        assert err.value.reason == "duplicate_approver"
        no_role = store.record_vote("esc-1", vote("eve@bank.example", roles=("teller",)), now=T0 + 3)
        assert (no_role.status, no_role.approvers()) == ("open", ["dan@bank.example"]), "without the role: counts 0"
        done = store.record_vote("esc-1", vote("fay@bank.example"), now=T0 + 4)
        assert (done.status, done.closed_at) == ("approved", T0 + 4)
        assert done.approvers() == ["dan@bank.example", "fay@bank.example"]
        assert backend.open().get_escalation("esc-1") == done
        with pytest.raises(EscalationError, match="already approved") as err:
            store.record_vote("esc-1", vote("gus@bank.example"), now=T0 + 5)
        assert err.value.reason == "decided"

    def test_one_reject_rejects(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation())
        store.record_vote("esc-1", vote("dan@bank.example"), now=T0 + 1)
        assert store.record_vote("esc-1", vote("fay@bank.example", approve=False), now=T0 + 2).status == "rejected"
        with pytest.raises(EscalationError, match="already rejected"):
            store.record_vote("esc-1", vote("gus@bank.example"), now=T0 + 3)

    def test_votes_on_expired_or_unknown_escalations_are_refused(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation(expires_at=T0 + 10))
        with pytest.raises(EscalationError, match="expired at") as err:
            store.record_vote("esc-1", vote("dan@bank.example"), now=T0 + 10)
        assert err.value.reason == "expired"
        assert store.get_escalation("esc-1") == escalation(expires_at=T0 + 10), "a refused vote writes nothing"
        with pytest.raises(EscalationError, match="no such escalation") as err:
            store.record_vote("nope", vote("dan@bank.example"), now=T0)
        assert err.value.reason == "not_found"

    def test_expire_due_moves_each_escalation_once(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation(id="due", expires_at=T0 + 10))
        store.open_escalation(escalation(id="later", expires_at=T0 + 100))
        assert store.expire_due(now=T0 + 9) == []
        expired = store.expire_due(now=T0 + 10)
        assert [(e.id, e.status, e.closed_reason) for e in expired] == [("due", "expired", "expired")]
        assert backend.open().expire_due(now=T0 + 11) == [], "another replica does not expire it again"
        with pytest.raises(EscalationError, match="already expired"):
            store.record_vote("due", vote("dan@bank.example"), now=T0 + 5)
        assert store.get_escalation("later").status == "open"  # type: ignore[union-attr]

    def test_close_for_agent_rejects_only_that_agents_open_escalations(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation(id="a1"))
        store.open_escalation(escalation(id="a2", created_at=T0 + 1))
        store.open_escalation(escalation(id="other", agent_id="hr-agent"))
        store.open_escalation(escalation(id="a3", count=1))
        store.record_vote("a3", vote("dan@bank.example"), now=T0 + 1)
        closed = store.close_for_agent("payments-agent", now=T0 + 2, reason="agent suspended")
        assert [(e.id, e.status, e.closed_reason, e.closed_at) for e in closed] == [
            ("a1", "rejected", "agent suspended", T0 + 2),
            ("a2", "rejected", "agent suspended", T0 + 2),
        ]
        assert store.get_escalation("other").status == "open"  # type: ignore[union-attr]
        assert store.get_escalation("a3").status == "approved"  # type: ignore[union-attr]

    def test_an_approved_escalation_is_consumed_once(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation(count=1))
        with pytest.raises(EscalationError, match="is open, not approved"):
            store.consume_escalation("esc-1", now=T0 + 1)
        store.record_vote("esc-1", vote("dan@bank.example"), now=T0 + 1)
        assert store.consume_escalation("esc-1", now=T0 + 2).status == "consumed"
        with pytest.raises(EscalationError, match="is consumed, not approved") as err:
            backend.open().consume_escalation("esc-1", now=T0 + 3)
        assert err.value.reason == "not_approved"

    def test_concurrent_votes_from_processes_are_all_counted(self, backend: Backend) -> None:
        backend.open().open_escalation(escalation(id="esc-race", count=PROCESSES))
        statuses = in_processes(backend.target, _vote_once, [(f"approver-{i}",) for i in range(PROCESSES)])
        final = backend.open().get_escalation("esc-race")
        assert final is not None and final.status == "approved"
        assert sorted(final.approvers()) == sorted(f"approver-{i}" for i in range(PROCESSES)), "no vote was lost"
        assert statuses.count("approved") == 1, "exactly one vote completes the quorum"

    # --- budgets --------------------------------------------------------------------------------------

    def test_concurrent_reservations_never_exceed_the_limit(self, backend: Backend) -> None:
        amount, limit = 4_900, 50_000  # 10 fit; 6 processes try 8 each
        granted = sum(in_processes(backend.target, _reserve_many, [(p, amount, limit) for p in range(PROCESSES)]))
        assert granted == limit // amount, f"{granted} reservations granted; exactly {limit // amount} fit"
        used = backend.open().usage([("payments-agent/bob/day", 86_400)], now=T0 + 8)
        assert used == {"payments-agent/bob/day": granted * amount}

    def test_sliding_window(self, backend: Backend) -> None:
        store = backend.open()

        def claim(amount: int) -> list[BudgetClaim]:
            return [BudgetClaim(key="calls", amount=amount, limit=100, window_s=10)]

        assert store.reserve("r1", claim(60), now=T0) is True
        assert store.reserve("r2", claim(50), now=T0 + 9) is False, "60 + 50 > 100 within 10 s"
        assert store.usage([("calls", 10)], now=T0 + 9) == {"calls": 60}
        assert store.usage([("calls", 10)], now=T0 + 10) == {"calls": 0}, "r1 left the window (now-10, now]"
        assert store.reserve("r2", claim(50), now=T0 + 10) is True
        assert store.reserve("r3", claim(50), now=T0 + 11) is True
        assert store.reserve("r4", claim(1), now=T0 + 12) is False

    def test_reserve_is_all_or_nothing(self, backend: Backend) -> None:
        store = backend.open()
        day = BudgetClaim(key="spend/day", amount=30, limit=100, window_s=86_400)
        velocity = BudgetClaim(key="agent/calls", amount=1, limit=1, window_s=60)
        assert store.reserve("r1", [day, velocity], now=T0) is True
        assert store.reserve("r2", [day, velocity], now=T0 + 1) is False
        used = store.usage([("spend/day", 86_400), ("agent/calls", 60)], now=T0 + 1)
        assert used == {"spend/day": 30, "agent/calls": 1}, "the refused reservation wrote nothing"
        with pytest.raises(ValueError, match="already used"):
            store.reserve("r1", [day], now=T0 + 2)
        with pytest.raises(ValueError, match="two amounts"):
            store.reserve("r3", [day, dataclasses.replace(day, amount=5)], now=T0 + 2)

    def test_settle_release_frees_and_keep_stays(self, backend: Backend) -> None:
        store = backend.open()
        claim = [BudgetClaim(key="spend", amount=40, limit=100, window_s=3600)]
        assert store.reserve("kept", claim, now=T0) and store.reserve("failed", claim, now=T0)
        assert store.reserve("third", claim, now=T0 + 1) is False
        store.settle("failed", keep=False)
        store.settle("kept", keep=True)
        assert store.usage([("spend", 3600)], now=T0 + 2) == {"spend": 40}
        store.settle("kept", keep=False)
        assert store.usage([("spend", 3600)], now=T0 + 2) == {"spend": 40}, "a kept reservation is not released"
        assert backend.open().reserve("third", claim, now=T0 + 2) is True

    def test_running_totals_follow_the_window_through_releases_and_two_windows(self, backend: Backend) -> None:
        store = backend.open()
        minute = BudgetClaim(key="calls", amount=1, limit=3, window_s=60)
        hour = dataclasses.replace(minute, limit=5, window_s=3600)
        assert store.reserve_many([(f"a{i}", [minute, hour]) for i in range(4)], now=T0) == [True, True, True, False]
        store.settle("a0", keep=False)  # released: out of both totals
        assert store.usage([("calls", 60), ("calls", 3600)], now=T0 + 1) == {"calls": 2}
        assert store.reserve("b", [minute, hour], now=T0 + 30) is True
        assert store.reserve("c", [minute, hour], now=T0 + 61) is True, "a1, a2 left the minute"
        assert store.reserve("d", [minute, hour], now=T0 + 62) is True
        assert store.reserve("e", [minute, hour], now=T0 + 63) is False, "the hour holds five"
        store.settle("b", keep=False)  # released after its minute total already moved past a1/a2
        assert store.usage([("calls", 60)], now=T0 + 63) == {"calls": 2}
        assert store.usage([("calls", 3600)], now=T0 + 63) == {"calls": 4}
        assert backend.open().reserve("e", [minute, hour], now=T0 + 64) is True
        assert store.usage([("calls", 3600)], now=T0 + 3660) == {"calls": 3}, "a1, a2 left the hour"

    def test_a_group_of_many_claims_on_many_keys(self, backend: Backend) -> None:
        store = backend.open()
        minute = BudgetClaim(key="agent/calls", amount=1, limit=3, window_s=60)
        hour = dataclasses.replace(minute, limit=8, window_s=3600)
        bob = BudgetClaim(key="bob/day", amount=600, limit=1000, window_s=86_400)
        carol = dataclasses.replace(bob, key="carol/day", amount=900)
        assert store.reserve("before", [hour], now=T0 - 1800) is True  # the hour has a total, the minute not yet
        group = [
            ("r1", [minute, hour, bob]),
            ("r2", [minute, hour, dataclasses.replace(bob, amount=500)]),  # bob: 600 + 500 > 1000, none of it
            ("r3", [carol, minute, hour]),
            ("r4", [dataclasses.replace(carol, amount=200)]),  # carol: 900 + 200 > 1000
            ("r5", [dataclasses.replace(bob, amount=400), dataclasses.replace(carol, amount=100)]),  # both to the limit
            ("r6", [hour, minute]),  # the third call of the minute
            ("r7", [minute, hour]),  # a fourth: no
        ]
        assert store.reserve_many(group, now=T0) == [True, False, True, False, True, True, False]
        expected = {"agent/calls": 3, "bob/day": 1000, "carol/day": 1000}
        windows = [("agent/calls", 60), ("bob/day", 86_400), ("carol/day", 86_400)]
        assert backend.open().usage(windows, now=T0) == expected
        assert store.usage([("agent/calls", 3600)], now=T0) == {"agent/calls": 4}
        assert store.usage([("agent/calls", 7200)], now=T0) == {"agent/calls": 4}, "the total agrees with a full sum"
        with pytest.raises(ValueError, match="'r3' was already used"):
            store.reserve_many([("r8", [hour]), ("r3", [bob])], now=T0 + 1)
        assert store.usage([("agent/calls", 3600)], now=T0 + 1) == {"agent/calls": 4}, "a refused group wrote nothing"
        store.settle("r5", keep=False)  # two keys at once
        assert store.usage(windows, now=T0 + 1) == {"agent/calls": 3, "bob/day": 600, "carol/day": 900}
        assert store.reserve("late", [minute], now=T0 - 10) is False, "a replica behind counts the minute's three"
        assert store.reserve_many([("r9", [minute, hour, bob]), ("r10", [hour])], now=T0 + 61) == [False, True]
        assert store.usage([("agent/calls", 60)], now=T0 + 61) == {"agent/calls": 1}, "r10 (one key, one counter)"
        assert store.usage([("agent/calls", 3600)], now=T0 + 61) == {"agent/calls": 5}
        assert store.usage([("agent/calls", 3600)], now=T0 + 1800) == {"agent/calls": 4}, "'before' left the hour"

    def test_a_replica_whose_clock_is_behind_leaves_the_totals_right(self, backend: Backend) -> None:
        ahead, behind = backend.open(), backend.open()
        minute = BudgetClaim(key="calls", amount=1, limit=5, window_s=60)
        assert ahead.reserve("a", [minute], now=T0 + 100) is True  # the minute's total: after T0 + 40
        assert behind.reserve("b", [minute], now=T0) is True  # before that edge: not in that total
        assert ahead.usage([("calls", 60)], now=T0 + 100) == {"calls": 1}, "b is not in (T0 + 40, T0 + 100]"
        assert behind.usage([("calls", 60)], now=T0 + 30) == {"calls": 2}
        behind.settle("b", keep=False)
        assert ahead.usage([("calls", 60)], now=T0 + 100) == {"calls": 1}
        assert behind.usage([("calls", 60)], now=T0 + 30) == {"calls": 1}

    def test_concurrent_groups_on_several_keys_never_exceed_a_limit(self, backend: Backend) -> None:
        per_process = in_processes(backend.target, _reserve_groups, [(p,) for p in range(PROCESSES)])
        granted = [rid for answers in per_process for rid, ok in answers if ok]
        with_tight = [rid for rid in granted if int(rid.rsplit("-", 1)[1]) % 2]
        assert len(granted) == 10, "the shared counter fills exactly: a refused request takes none of it"
        assert len(with_tight) <= 3
        used = backend.open().usage([("shared/hour", 3600), ("tight/minute", 60)], now=T0 + 3)
        assert used == {"shared/hour": 10, "tight/minute": len(with_tight)}

    # --- suspensions ----------------------------------------------------------------------------------

    def test_suspensions_are_visible_to_another_store_at_once(self, backend: Backend) -> None:
        store, replica = backend.open(), backend.open()
        assert replica.suspensions(now=T0) == []
        agent = Suspension(kind="agent", value="payments-agent", reason="runaway transfers", by="ops@bank", at=T0)
        tool = Suspension(kind="tool", value="wire", reason="incident", by="ops@bank", at=T0, until=T0 + 60)
        store.suspend(agent)
        store.suspend(tool)
        assert replica.suspensions(now=T0 + 1) == [agent, tool]
        assert replica.suspensions(now=T0 + 60) == [agent], "a suspension with until ends then"
        assert replica.resume("agent", "payments-agent", by="ops@bank", now=T0 + 2) is True
        assert store.suspensions(now=T0 + 2) == [tool]
        assert store.resume("agent", "payments-agent", by="ops@bank", now=T0 + 3) is False
        assert store.resume("tool", "wire", by="ops@bank", now=T0 + 61) is False, "it had already ended"
        with pytest.raises(ValueError, match="kind"):
            Suspension(kind="team", value="x", reason="", by="", at=T0)

    # --- the store is down ----------------------------------------------------------------------------

    def test_store_down_raises_state_unavailable_for_every_operation(self, backend: Backend) -> None:
        store = backend.open()
        store.open_escalation(escalation())
        store.first_use("seen", T0 + 60, now=T0)
        assert store.healthy() is True
        backend.take_down()
        assert store.healthy() is False
        claim = [BudgetClaim(key="k", amount=1, limit=10, window_s=60)]
        calls: list[Callable[[], object]] = [
            lambda: store.first_use("seen", T0 + 60, now=T0),
            lambda: store.first_use("new", T0 + 60, now=T0),
            lambda: store.open_escalation(escalation(id="esc-2")),
            lambda: store.get_escalation("esc-1"),
            lambda: store.list_escalations(now=T0),
            lambda: store.record_vote("esc-1", vote("dan@bank.example"), now=T0),
            lambda: store.consume_escalation("esc-1", now=T0),
            lambda: store.expire_due(now=T0),
            lambda: store.close_for_agent("payments-agent", now=T0, reason="x"),
            lambda: store.usage([("k", 60)], now=T0),
            lambda: store.reserve("r", claim, now=T0),
            lambda: store.settle("r", keep=True),
            lambda: store.suspend(Suspension(kind="agent", value="a", reason="", by="", at=T0)),
            lambda: store.resume("agent", "a", by="", now=T0),
            lambda: store.suspensions(now=T0),
        ]
        for call in calls:
            with pytest.raises(StateUnavailable) as err:
                call()
            assert err.value.error_code == "pdp.state_unavailable"
        with pytest.raises(StateUnavailable):
            open_store(backend.target)
