"""Coalescing OPA client: concurrent single queries from different threads go to OPA as one batch.

Under load, gRPC worker threads each ask OPA for one decision at the same moment; OPA spends about
half the CPU per decision on a batched query (the bundle's batch rule, ``pdp/decisions``) as on
single ones, and the PDP makes one HTTP exchange instead of many. The scheme is adaptive and
never waits to fill a batch:

- a call that finds fewer than ``max_inflight`` queries at OPA goes at once, alone, on the
  single-decision path: at low load nothing changes;
- otherwise it queues; when a query in flight comes back, the thread that sent it hands
  everything queued (up to ``max_batch``) to the first queued caller, which sends it as one batch
  on its own thread and hands each caller its own answer.

Fail-closed rules are those of :class:`~pdp.opa.OpaClient`: a batch that fails (OPA unreachable,
an error, a timeout, an answer that is not one decision per input) raises the same
:class:`~pdp.errors.NoVerdict` in every caller of it; an element that is malformed is passed to
its own caller only, whose pipeline fails it closed when it interprets it. A caller whose
deadline passes while it waits fails closed with ``pdp.opa_timeout`` alone; a batch waits no
longer than the nearest deadline among its callers. Queries that ask for an explanation bypass
the coalescer. Each caller gets its own ``pdp.opa.coalesced`` span, linked to the one OPA client
span of its batch.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace

from pdp.config import Settings
from pdp.errors import NoVerdict, OpaError, OpaTimeout
from pdp.opa import OpaAnswer, OpaClient
from pdp.telemetry import SPAN_COALESCED

if TYPE_CHECKING:
    from pdp.telemetry import Telemetry


class _Slot:
    """One caller's query while it waits: its input, its deadline, and what it gets."""

    __slots__ = ("answer", "batch", "batch_size", "deadline", "done", "error", "input", "links", "queued_ns")

    def __init__(self, input_doc: dict[str, Any], deadline: float) -> None:
        self.input = input_doc
        self.deadline = deadline
        self.queued_ns = time.time_ns()
        self.done = threading.Event()
        self.answer: OpaAnswer | None = None
        self.error: NoVerdict | None = None
        self.batch: list[_Slot] | None = None  # set when this caller is told to send a batch
        self.batch_size = 0
        self.links: list[trace.Link] = []  # to the OPA client span of its batch


class CoalescingOpaClient(OpaClient):
    """An :class:`OpaClient` whose :meth:`query` coalesces concurrent calls (see the module docs).

    Args:
        url: ``http://host:port`` or ``unix:///path``.
        decision_path: the rule path of one decision, e.g. ``pdp/decision``.
        telemetry: traces each query; each caller's span links to its batch's OPA span.
        batch_path: the rule that evaluates the decision for each of ``input.requests``.
        max_batch: most queries sent in one batch.
        max_inflight: most queries at OPA at once before callers queue.
    """

    def __init__(
        self,
        url: str,
        decision_path: str,
        telemetry: Telemetry | None = None,
        *,
        batch_path: str = Settings.batch_path,
        max_batch: int = Settings.max_batch,
        max_inflight: int = 1,
    ) -> None:
        super().__init__(url, decision_path, telemetry, batch_path=batch_path)
        self._traced = telemetry
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []  # non-empty only while max_inflight queries are at OPA
        self._inflight = 0
        self.queries_sent = 0  # OPA queries sent (single or batched): for tests and the bench
        self.batches_sent = 0  # of which batches of more than one

    def queued(self) -> int:
        """How many callers wait for a query in flight to come back."""
        with self._lock:
            return len(self._queue)

    def query(self, input_doc: dict[str, Any], *, timeout_s: float, explain: int = 0) -> OpaAnswer:
        """As :meth:`OpaClient.query`; without ``explain``, possibly in one batch with concurrent calls."""
        if explain:
            return super().query(input_doc, timeout_s=timeout_s, explain=explain)
        if timeout_s <= 0:
            raise OpaTimeout("no time left before the caller's deadline")
        slot = _Slot(input_doc, time.monotonic() + timeout_s)
        with self._lock:
            if self._inflight < self._max_inflight:
                self._inflight += 1
                slot.batch = [slot]
            else:
                self._queue.append(slot)
        if slot.batch is None:
            self._wait(slot)
        if slot.batch is not None:  # this caller sends: alone at once, or the batch handed to it
            self._send(slot.batch)
        if self._traced is not None and slot.batch_size > 1:  # in this caller's own trace
            self._traced.tracer.start_span(
                SPAN_COALESCED,
                links=slot.links,
                start_time=slot.queued_ns,
                attributes={"pdp.opa.batch_size": slot.batch_size},
            ).end()
        if slot.error is not None:
            raise slot.error
        assert slot.answer is not None
        return slot.answer

    def _wait(self, slot: _Slot) -> None:
        """Waits to be answered or told to send; at the caller's deadline, fails it alone."""
        if slot.done.wait(max(0.0, slot.deadline - time.monotonic())):
            return
        with self._lock:
            if slot.batch is not None or slot.done.is_set():
                return  # told to send (or answered) just now
            if slot in self._queue:
                self._queue.remove(slot)
            slot.error = OpaTimeout("no answer from OPA before the caller's deadline (queued behind a batch)")

    def _send(self, batch: list[_Slot]) -> None:
        """Sends one query for ``batch`` on this thread, answers each caller, hands on the queue."""
        live: list[_Slot] = []
        try:
            now = time.monotonic()
            live = [s for s in batch if s.deadline > now]
            for s in batch:
                if s.deadline <= now:
                    s.error = OpaTimeout("no time left before the caller's deadline")
            if live:
                self._answer(live, min(s.deadline for s in live) - now)
        finally:
            with self._lock:
                self.queries_sent += 1 if live else 0
                self.batches_sent += 1 if len(live) > 1 else 0
                if self._queue:
                    handed, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                    handed[0].batch = handed
                    handed[0].done.set()
                else:
                    self._inflight -= 1
            for s in batch:
                if s.answer is None and s.error is None:
                    s.error = OpaError("the batched OPA query broke before it was answered")
                if s is not batch[0]:
                    s.done.set()

    def _answer(self, live: list[_Slot], timeout_s: float) -> None:
        if len(live) == 1:
            try:
                live[0].answer = super().query(live[0].input, timeout_s=timeout_s)
            except NoVerdict as e:
                live[0].error = e
            return
        try:
            answers = self.query_batch([s.input for s in live], timeout_s=timeout_s)
        except NoVerdict as e:
            for s in live:
                s.error = e
        else:
            for s, a in zip(live, answers, strict=True):
                s.answer = a
        links = self._links()
        for s in live:
            s.batch_size = len(live)
            s.links = links

    def _links(self) -> list[trace.Link]:
        """A link to the OPA client span this thread just made (none when untraced)."""
        headers = self.trace_headers()
        if not headers:
            return []
        ctx = trace.get_current_span(propagate.extract(headers)).get_span_context()
        return [trace.Link(ctx)] if ctx.is_valid else []
