"""Budgets the policy declares and the PDP enforces: usage bound into the input, reservations atomic.

A policy's decision document may carry ``budgets``: claims ``{"budget", "key", "amount", "limit",
"window"}`` (:class:`pdp.verdict.BudgetClaim`; rego/README.md). Around the policy the PDP:

1. **binds usage** before the policy runs: ``input.bound.usage[budget][key][window]`` is what is
   used of that counter in that sliding window (held and kept reservations), so a rule can escalate
   or deny near a limit. Which counters a request touches is known only from the policy's claims,
   so each replica remembers the claims it saw per agent, principal and tool; when a verdict
   claims a counter that was not bound, that request is evaluated once more with its usage bound.
2. **reserves** every claim of an ALLOW atomically in the shared store
   (:meth:`pdp.state.StateStore.reserve`, reservation id = decision id) before the record is made. A
   reservation that would exceed a limit turns the answer into DENY ``budget.exceeded``: replicas
   racing for the last of a budget get exactly as many ALLOWs as fit.
3. **settles** on the outcome report: ``executed`` keeps the reservation, ``failed`` and
   ``blocked`` release it. An ALLOW never reported stays counted until it leaves its window.

The store being unreachable makes every decision with a budget fail closed (``pdp.state_unavailable``).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, cast

from pdp.state import BudgetClaim as StoredClaim
from pdp.state import StateStore
from pdp.suspensions import subjects
from pdp.telemetry import Telemetry
from pdp.verdict import RULE_BUDGETS, BudgetClaim, Outcome, Reason, Verdict, duration_s

T = TypeVar("T")
R = TypeVar("R")

Counter = tuple[str, str, str]
"""One counter seen through one window: (budget, key, window)."""

_REMEMBERED = 10_000  # subjects whose claims a replica remembers; forgotten all at once past this


class Budgets:
    """Usage, reservations and settling on the shared store.

    Args:
        store: the shared state store.
        telemetry: where budget metrics go.
    """

    def __init__(self, store: StateStore, telemetry: Telemetry) -> None:
        self._store = store
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._claimed: dict[tuple[tuple[str, str], ...], frozenset[Counter]] = {}
        self._read: _Grouped[list[tuple[str, int]], dict[str, int]] = _Grouped(_read_group(store))
        self._reserve: _Grouped[tuple[str, Sequence[StoredClaim]], bool] = _Grouped(_reserve_group(store))

    def bind_usage(self, input_doc: dict[str, Any], extra: frozenset[Counter] = frozenset()) -> frozenset[Counter]:
        """Puts the usage of the counters this request's subjects claimed before (and ``extra``) into
        ``input.bound.usage``; returns the counters bound.

        Raises:
            StateUnavailable: the store cannot be read.
        """
        subject = tuple(subjects(input_doc))
        with self._lock:
            counters = self._claimed.get(subject, frozenset()) | extra
        usage: dict[str, dict[str, dict[str, int]]] = {}
        if counters:
            ordered = sorted(counters)
            used = self._read([(f"{b}:{k}", duration_s(w) or 0) for b, k, w in ordered])
            for b, k, w in ordered:
                usage.setdefault(b, {}).setdefault(k, {})[w] = used[f"{b}:{k}"]
        input_doc.setdefault("bound", {})["usage"] = usage
        return counters

    def unbound(self, input_doc: dict[str, Any], verdict: Verdict, bound: frozenset[Counter]) -> frozenset[Counter]:
        """The counters ``verdict`` claims that were not bound for it (remembered for next time)."""
        claimed = frozenset((c.budget, c.key, c.window) for c in verdict.budgets)
        missing = claimed - bound
        if missing:
            subject = tuple(subjects(input_doc))
            with self._lock:
                if len(self._claimed) >= _REMEMBERED:
                    self._claimed.clear()
                self._claimed[subject] = self._claimed.get(subject, frozenset()) | claimed
        return missing

    def reserve(self, decision_id: str, verdict: Verdict) -> Verdict:
        """Reserves an ALLOW's claims under ``decision_id``; the verdict as it stands after that.

        Raises:
            StateUnavailable: the store cannot be used (the caller fails closed).
            ValueError: the claims name one counter with two amounts (a policy defect).
        """
        if verdict.outcome is not Outcome.ALLOW or not verdict.budgets:
            return verdict
        stored = [
            StoredClaim(key=c.counter, amount=c.amount, limit=c.cap, window_s=c.window_s) for c in verdict.budgets
        ]
        if self._reserve((decision_id, stored)):
            now = int(time.time())
            exporting = self._telemetry.exporting  # the usage share costs one more read: only when it goes somewhere
            used = self._store.usage([(c.key, c.window_s) for c in stored], now=now) if exporting else {}
            for c in verdict.budgets:
                self._telemetry.budget_reserved.add(c.amount, {"budget": c.budget})
                if c.limit and used:
                    self._telemetry.budget_usage.record(used[c.counter] / c.limit, {"budget": c.budget})
            return verdict
        return self._refused(verdict, stored, int(time.time()))

    def _refused(self, verdict: Verdict, stored: Sequence[StoredClaim], now: int) -> Verdict:
        used = self._store.usage([(c.key, c.window_s) for c in stored], now=now)
        over = [c for c in verdict.budgets if used[c.counter] + c.amount > c.cap] or list(verdict.budgets)
        for c in over:
            self._telemetry.budget_refused.add(1, {"budget": c.budget})
        return Verdict(
            outcome=Outcome.DENY,
            reasons=tuple(_refusal(c, used[c.counter]) for c in over),
            budgets=verdict.budgets,
            facts=verdict.facts,
        )

    def settle(self, decision_id: str, *, status: str) -> None:
        """Keeps (``executed``) or releases (``failed``, ``blocked``) the decision's reservation.

        Raises:
            StateUnavailable: the store cannot be written (the reservation stays held: counted).
        """
        self._store.settle(decision_id, keep=status == "executed")


def _refusal(c: BudgetClaim, used: int) -> Reason:
    """Why ``c`` could not be reserved: over its limit, or (usage having moved while the policy
    decided) past the review threshold the policy let it through under."""
    if used + c.amount > c.limit or c.ceiling is None:
        return Reason(
            code="budget.exceeded",
            message=f"budget {c.budget} for {c.key}: {used} used + {c.amount} "
            f"would exceed the limit of {c.limit} per {c.window}",
            rule=RULE_BUDGETS,
            severity="high",
        )
    return Reason(
        code="budget.review_threshold",
        message=f"budget {c.budget} for {c.key}: {used} used + {c.amount} would pass {c.ceiling} per {c.window}, "
        "above which a human approves; other decisions used it meanwhile: asked again, this one escalates",
        rule=RULE_BUDGETS,
        severity="medium",
    )


class _Grouped(Generic[T, R]):
    """Calls from concurrent threads run together, as the log's group commit does for records: a
    caller that finds no group running runs one for everything queued so far; the others wait for
    its answer. ``run`` answers each item of a group, in order (an exception for those it concerns);
    when it raises, every caller of that group gets the exception."""

    def __init__(self, run: Callable[[list[T]], list[R | Exception]]) -> None:
        self._run = run
        self._done = threading.Condition()
        self._queue: list[_Pending[T, R]] = []
        self._running = False

    def __call__(self, item: T) -> R:
        mine: _Pending[T, R] = _Pending(item)
        with self._done:
            self._queue.append(mine)
            while self._running and not mine.answered:
                self._done.wait()
            if not mine.answered:
                self._running = True
                group, self._queue = self._queue, []
        if not mine.answered:
            try:
                answers = self._run([p.item for p in group])
            except Exception as e:  # the store's error, or a defect: the group's, and the next group still runs
                answers = [e] * len(group)
            with self._done:
                for p, answer in zip(group, answers, strict=True):
                    p.answer, p.answered = answer, True
                self._running = False
                self._done.notify_all()
        if isinstance(mine.answer, Exception):
            raise mine.answer
        return cast("R", mine.answer)  # answered: an R


class _Pending(Generic[T, R]):
    """One caller's item waiting in a group, and its answer once the group ran."""

    __slots__ = ("answer", "answered", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.answer: R | Exception | None = None
        self.answered = False


def _read_group(store: StateStore) -> Callable[[list[list[tuple[str, int]]]], list[dict[str, int] | Exception]]:
    """Usage reads of concurrent decisions as one read of every counter they need."""

    def run(group: list[list[tuple[str, int]]]) -> list[dict[str, int] | Exception]:
        now = int(time.time())
        wanted = sorted({k for keys in group for k in keys})
        if len({key for key, _ in wanted}) < len(wanted):  # one key through two windows: a read each
            return [_answer(functools.partial(store.usage, keys, now=now)) for keys in group]
        used = store.usage(wanted, now=now)  # raises: every caller of the group gets it (_Grouped)
        return [{key: used[key] for key, _ in keys} for keys in group]

    return run


def _reserve_group(
    store: StateStore,
) -> Callable[[list[tuple[str, Sequence[StoredClaim]]]], list[bool | Exception]]:
    """Reservations of concurrent decisions in one store transaction (one commit, one sync). Each
    reservation is still all or nothing and sees the ones before it."""

    def run(group: list[tuple[str, Sequence[StoredClaim]]]) -> list[bool | Exception]:
        now = int(time.time())
        try:
            return list(store.reserve_many(group, now=now))  # any other error: the whole group's (_Grouped)
        except ValueError:
            if len(group) == 1:
                raise
        # one bad request: each on its own, so only it is refused
        return [_answer(functools.partial(store.reserve, rid, claims, now=now)) for rid, claims in group]

    return run


def _answer(call: Callable[[], R]) -> R | Exception:
    """What ``call`` returns, or what it raised (an error is the answer of the one it concerns)."""
    try:
        return call()
    except Exception as e:  # StateUnavailable, ValueError, or anything else
        return e
