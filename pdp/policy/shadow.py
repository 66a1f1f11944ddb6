"""Shadow candidates (LOG_ONLY): a candidate policy decides beside the live one; only the live one counts.

``PDP_SHADOW_OPA_URL`` names a second OPA serving the candidate bundle (``pdp dev --shadow-bundle``
starts one). After a decision is recorded and answered, its input (the full input, before
masking: the shadow sees what the live policy saw) goes on a bounded queue; a background thread
evaluates queued inputs on the candidate in batches, so the answer's critical path pays only the
enqueue. ``PDP_SHADOW_SAMPLE`` (0..1) is the share of decisions evaluated.

Every divergence (outcome or reason codes differ) is a signed ``shadow`` record in the log
(``typ: pdp-shadow+jws``), linked to the decision by its log index and the SHA-256 of its record
(as outcome reports are), and is counted in ``pdp.shadow.divergences`` by kind (``allow->deny``,
``deny->allow``, ..., ``reasons``). ``pdp.shadow.evaluated`` counts evaluations; ``pdp.shadow.dropped``
the decisions not evaluated because the queue was full or the candidate could not answer: the
shadow never slows down or fails a live answer.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import metrics

from pdp.encoding import sha256_digest
from pdp.errors import NoVerdict
from pdp.opa import OpaClient
from pdp.schema import ShadowRecord
from pdp.verdict import Verdict, fail_closed, interpret

log = logging.getLogger(__name__)

_BATCH = 64
_STOP = object()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Live:
    """A recorded live decision, as the shadow compares it."""

    decision_id: str
    log_index: int
    record: str
    outcome: str
    reasons: tuple[str, ...]
    input: dict[str, Any]


def kind(live_outcome: str, live_reasons: Sequence[str], candidate: Verdict) -> str | None:
    """``before->after``, ``reasons`` when only the reason codes differ, or None when they agree."""
    after = candidate.outcome.value
    if after != live_outcome:
        return f"{live_outcome}->{after}"
    if sorted(r.code for r in candidate.reasons) != sorted(live_reasons):
        return "reasons"
    return None


class Shadow:
    """Evaluates sampled live decisions on a candidate OPA in the background; records divergences.

    Args:
        opa_url: the OPA serving the candidate bundle.
        decision_path, batch_path: the rules queried (as for the live policy).
        sample: share of decisions evaluated, 0..1.
        record: signs and appends a :class:`~pdp.schema.ShadowRecord` durably.
        meter_provider: where the ``pdp.shadow.*`` counters go.
        queue_max: most decisions waiting; more are dropped (and counted).
        timeout_s: longest wait for the candidate per batch.
    """

    def __init__(
        self,
        *,
        opa_url: str,
        decision_path: str,
        batch_path: str,
        sample: float,
        record: Callable[[ShadowRecord], Any],
        meter_provider: metrics.MeterProvider | None = None,
        queue_max: int = 4096,
        timeout_s: float = 5.0,
    ) -> None:
        self._opa = OpaClient(opa_url, decision_path, batch_path=batch_path)
        self._sample = sample
        self._append = record
        self._timeout = timeout_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_max)
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("pdp")
        self.divergences = meter.create_counter(
            "pdp.shadow.divergences", unit="{decision}", description="Shadow candidate decided otherwise, by kind"
        )
        self.evaluated = meter.create_counter(
            "pdp.shadow.evaluated", unit="{decision}", description="Decisions evaluated on the shadow candidate"
        )
        self.dropped = meter.create_counter(
            "pdp.shadow.dropped", unit="{decision}", description="Sampled decisions not evaluated, by why"
        )
        self._thread = threading.Thread(target=self._run, name="pdp-shadow", daemon=True)
        self._idle = threading.Condition()
        self._pending = 0
        self._thread.start()

    def submit(self, decisions: Sequence[Live]) -> None:
        """Queues the sampled ones of these decisions; never blocks, never raises."""
        for d in decisions:
            if self._sample < 1.0 and random.random() >= self._sample:  # noqa: S311  (sampling, not secrets)
                continue
            with self._idle:
                self._pending += 1
            try:
                self._queue.put_nowait(d)
            except queue.Full:
                self._done(1)
                self.dropped.add(1, {"why": "queue_full"})

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until every queued decision was evaluated (tests, shutdown); whether it was."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Finishes what is queued (up to ``timeout_s``), then stops the thread."""
        self.wait_idle(timeout_s)
        self._queue.put(_STOP)
        self._thread.join(timeout=timeout_s)
        self._opa.close()

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            self._idle.notify_all()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(more)
            try:
                self._evaluate(batch)
            except Exception:  # the shadow must never take the PDP down
                log.exception("shadow evaluation failed for %d decision(s)", len(batch))
                self.dropped.add(len(batch), {"why": "error"})
            finally:
                self._done(len(batch))

    def _evaluate(self, batch: list[Live]) -> None:
        try:
            answers = self._opa.query_batch([d.input for d in batch], timeout_s=self._timeout)
        except NoVerdict as e:
            log.warning("shadow candidate could not answer %d decision(s): %s", len(batch), e)
            self.dropped.add(len(batch), {"why": e.error_code})
            return
        for live, answer in zip(batch, answers, strict=True):
            try:
                verdict = interpret(answer.result, defined=answer.defined)
            except NoVerdict as e:
                verdict = fail_closed(e)
            k = kind(live.outcome, live.reasons, verdict)
            if k is None:
                continue
            self._append(_record(live, verdict, k, answer.bundle_revisions))
            self.divergences.add(1, {"kind": k})
        self.evaluated.add(len(batch))  # after the records: a reader who sees the count sees them


def _record(live: Live, candidate: Verdict, divergence: str, revisions: dict[str, str]) -> ShadowRecord:
    now = int(time.time())
    return ShadowRecord(
        decision_id=live.decision_id,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        bundles={name: {"revision": rev} for name, rev in revisions.items()},
        result=candidate.to_dict(),
        divergence=divergence,
        live={"outcome": live.outcome, "reasons": list(live.reasons)},
        candidate={
            "outcome": candidate.outcome.value,
            "reasons": [r.code for r in candidate.reasons],
            "indeterminate": candidate.indeterminate,
            "error_code": candidate.error_code,
        },
        decision_log_index=str(live.log_index),
        decision_record_digest=sha256_digest(live.record.encode()),
        iat=now,
        jti=str(uuid.uuid4()),
    )
