"""Decisions and outcome reports → signed records in the durable log, and back out with proofs."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import trace

from pdp.encoding import sha256_digest
from pdp.errors import InvalidArgument, NotFound
from pdp.keys import KeyRing, public_keys
from pdp.ledger.log import Log
from pdp.policy.masking import NONE, Pointers
from pdp.records import redact, sign_record, unverified_claims
from pdp.schema import (
    DecisionRecord,
    EscalationRecord,
    OutcomeRecord,
    OutcomeReport,
    Record,
    RecordHead,
    ShadowRecord,
)

_ID_SPACE = uuid.UUID("6f1d2a52-4d0b-4e8e-9a43-3c1bd6c1a7e2")  # namespace of deterministic decision ids


@dataclasses.dataclass(frozen=True)
class Signed:
    """A record as logged: the exact JWS, and its leaf index."""

    record: str
    log_index: int


@dataclasses.dataclass(frozen=True)
class Proven:
    """A logged record with its inclusion proof against a checkpoint."""

    record: str
    log_index: int
    tree_size: int
    checkpoint: bytes
    inclusion_proof: list[bytes]


def decision_id(*, request_id: str, caller_subject: str) -> str:
    """Deterministic for a request id (per authenticated caller); random without one."""
    if not request_id:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_ID_SPACE, f"{caller_subject}\n{request_id}"))


class Recorder:
    """Signs decisions and outcome reports, appends them durably, finds them again.

    Args:
        ring: the signing key and JWKS.
        log: the open decision log.
        ttl_s: how long a decision record stays valid for a PEP (``exp``).
        mask, erase: JSON pointers into the input masked or removed before signing.
    """

    def __init__(
        self, *, ring: KeyRing, log: Log, ttl_s: float, mask: Sequence[str] = (), erase: Sequence[str] = ()
    ) -> None:
        self.ring = ring
        self.log = log
        self._ttl = ttl_s
        self._mask, self._erase = tuple(mask), tuple(erase)
        self._index: dict[str, int] = {}
        self._lock = threading.Lock()
        self._in_use: set[str] = set()
        self._released = threading.Condition()
        for i, entry in log.entries():
            head = RecordHead.from_dict(unverified_claims(entry))
            if head.kind == DecisionRecord.KIND:
                self._index[head.decision_id] = i

    @property
    def healthy(self) -> bool:
        return self.log.healthy

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks

    @contextlib.contextmanager
    def exclusive(self, decision_ids: Sequence[str]) -> Iterator[None]:
        """Serialises work on these decision ids (a retry racing its original).

        All of them are taken at once or none is, so two batches never deadlock, and only
        calls that share an id wait for each other.
        """
        ids = set(decision_ids)
        with self._released:
            while ids & self._in_use:
                self._released.wait()
            self._in_use |= ids
        try:
            yield
        finally:
            with self._released:
                self._in_use -= ids
                self._released.notify_all()

    def existing(self, decision_id: str, request_digest: str) -> Signed | None:
        """The logged record of a retried request, or None.

        Raises:
            InvalidArgument: the request id was used before for a different request.
        """
        index = self._index.get(decision_id)
        if index is None:
            return None
        entry = self.log.entry(index)
        if unverified_claims(entry)["pdp"]["request_digest"] != request_digest:
            raise InvalidArgument("request_id", "was already used for a different request")
        return Signed(entry.decode(), index)

    def record_decisions(
        self, decisions: Sequence[tuple[DecisionRecord, dict[str, Any]]], *, hide: Sequence[Pointers] = ()
    ) -> list[Signed]:
        """For each ``(record, input_doc)``: masks the input into the record (the static pointers,
        and the policy's ``hide`` for that decision), signs it with its own log index, and appends
        it; returns once all of them are durable (one group commit).

        Raises:
            LedgerUnavailable: not durable; the caller must not answer ALLOW.
        """
        now = int(time.time())
        span = trace.get_current_span().get_span_context()
        made: list[str] = []
        makers = []
        for i, (given, input_doc) in enumerate(decisions):
            extra = hide[i] if hide else NONE
            shown, masked, erased = redact(input_doc, mask=self._mask + extra.mask, erase=self._erase + extra.erase)
            record = dataclasses.replace(
                given,
                input=shown,
                masked=tuple(masked),
                erased=tuple(erased),
                trace_id=format(span.trace_id, "032x") if span.is_valid else "",
                span_id=format(span.span_id, "016x") if span.is_valid else "",
                requested_by=input_doc["bound"]["caller"]["subject"] or input_doc["bound"]["caller"]["peer"],
                pdp=dataclasses.replace(given.pdp, iat=now, exp=now + int(self._ttl), jti=str(uuid.uuid4())),
            )
            makers.append(functools.partial(self._sign_at, record, made))

        indexes = self.log.append_all(makers)
        with self._lock:
            for (record, _), index in zip(decisions, indexes, strict=True):
                self._index[record.decision_id] = index
        return [Signed(record, index) for record, index in zip(made, indexes, strict=True)]

    def _sign_at(self, record: Record, made: list[str], index: int) -> bytes:
        """The entry for log index ``index``: the record, with that index, signed (kept in ``made``)."""
        made.append(sign_record(record.at(index), self.ring))
        return made[-1].encode()

    def record_outcome(self, *, decision_id: str, report: OutcomeReport, reporter: str) -> Signed:
        """Appends a PEP's report of what it did, linked to the decision and its record's digest.

        Raises:
            NotFound: no such decision in this log.
            LedgerUnavailable: not durable.
        """
        index = self._index.get(decision_id)
        if index is None:
            raise NotFound(f"no decision {decision_id} in this PDP's log")
        now = int(time.time())
        record = OutcomeRecord(
            decision_id=decision_id,
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            outcome=report,
            requested_by=reporter,
            decision_log_index=str(index),
            decision_record_digest=sha256_digest(self.log.entry(index)),
            iat=now,
            jti=str(uuid.uuid4()),
        )
        return self.record(record)

    def record(self, record: Record) -> Signed:
        """Signs ``record`` with its log index and appends it durably (outcomes, shadows, suspensions).

        Raises:
            LedgerUnavailable: not durable.
        """
        made: list[str] = []
        i = self.log.append(functools.partial(self._sign_at, record, made))
        return Signed(made[-1], i)

    def shown(self, input_doc: dict[str, Any]) -> dict[str, Any]:
        """The input as records show it: masked and erased by the configured pointers."""
        return redact(input_doc, mask=self._mask, erase=self._erase)[0]

    def record_escalation(self, record: EscalationRecord) -> Signed:
        """Appends one step of an escalation, linked to its decision's record when this log holds it
        (the decision may be in another replica's log).

        Raises:
            LedgerUnavailable: not durable.
        """
        index = self._index.get(record.decision_id)
        if index is not None:
            record = dataclasses.replace(
                record, decision_log_index=str(index), decision_record_digest=sha256_digest(self.log.entry(index))
            )
        return self.record_shadow(dataclasses.replace(record, iat=int(time.time()), jti=str(uuid.uuid4())))

    def record_shadow(self, record: ShadowRecord | EscalationRecord) -> Signed:
        """Appends a shadow candidate's divergence (:mod:`pdp.policy.shadow`), linked to its decision.

        Raises:
            LedgerUnavailable: not durable.
        """
        return self.record(record)

    def prove(self, decision_id: str) -> Proven:
        """The decision's record with an inclusion proof against a fresh checkpoint."""
        index = self._index.get(decision_id)
        if index is None:
            raise NotFound(f"no decision {decision_id} in this PDP's log")
        note = self.log.checkpoint_now()
        size = int(note.split(b"\n")[1])
        return Proven(
            record=self.log.entry(index).decode(),
            log_index=index,
            tree_size=size,
            checkpoint=note,
            inclusion_proof=self.log.inclusion_proof(index, size),
        )

    def close(self) -> None:
        self.log.close()


def open_recorder(
    *,
    ring: KeyRing,
    log_dir: Any,
    origin: str,
    ttl_s: float,
    mask: Sequence[str],
    erase: Sequence[str],
    checkpoint_every: int,
    checkpoint_interval_s: float,
    segment_max_bytes: int,
    on_sync: Callable[[float], None] | None = None,
) -> Recorder:
    """Opens the log under the key ring and returns the recorder on it."""
    log = Log.open(
        log_dir,
        signing_key=ring.private,
        public_keys=public_keys(ring.jwks),
        origin=origin,
        checkpoint_every=checkpoint_every,
        checkpoint_interval_s=checkpoint_interval_s,
        segment_max_bytes=segment_max_bytes,
        on_sync=on_sync,
    )
    return Recorder(ring=ring, log=log, ttl_s=ttl_s, mask=mask, erase=erase)
