"""Decisions and outcome reports → signed records in the durable log, and back out with proofs."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry import trace

from pdp.authz import identity_of
from pdp.encoding import sha256_digest
from pdp.errors import AlreadyReported, InvalidArgument, NotAnAllow, NotFound
from pdp.keys import KeyRing, public_keys
from pdp.ledger.ids import DecisionIndex
from pdp.ledger.log import Log
from pdp.policy.masking import NONE, Pointers
from pdp.records import redact, sign_record, unverified_claims
from pdp.schema import (
    DecisionClaims,
    DecisionRecord,
    EscalationRecord,
    OutcomeRecord,
    OutcomeReport,
    Record,
    RecordHead,
    ShadowRecord,
)

_REBUILD_BATCH = 10_000  # decision ids per transaction while the index is rebuilt at open


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


def decision_id(*, secret: bytes, request_id: str, caller: str, request_digest: str) -> str:
    """A decision id nobody without the server's secret can compute: HMAC-SHA256 over the caller's
    identity and the request id (random without a request id).

    An authenticated caller's request ids are its own: another caller's equal request id is
    another decision. Anonymous callers (no mTLS) cannot be told apart, so their ids also cover
    the request itself: a request id sent first by someone else with other content does not
    block the real request (it only makes exact retries idempotent).
    """
    if not request_id:
        return str(uuid.uuid4())
    scope = f"caller\n{caller}" if caller else f"anonymous\n{request_digest}"
    mac = hmac.new(secret, f"{scope}\n{request_id}".encode(), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=mac[:16], version=4))


class Recorder:
    """Signs decisions and outcome reports, appends them durably, finds them again.

    Args:
        ring: the signing key and JWKS.
        log: the open decision log.
        ttl_s: how long a decision record stays valid for a PEP (``exp``).
        mask, erase: JSON pointers into the input masked or removed before signing.
    """

    def __init__(
        self,
        *,
        ring: KeyRing,
        log: Log,
        ttl_s: float,
        mask: Sequence[str] = (),
        erase: Sequence[str] = (),
        id_secret: bytes = b"",
    ) -> None:
        self.ring = ring
        self._id_secret = id_secret or uuid.uuid4().bytes + uuid.uuid4().bytes
        self.log = log
        self._ttl = ttl_s
        self._mask, self._erase = tuple(mask), tuple(erase)
        # decision id → log index, and → the identity that asked (pdp.authz.identity_of): on disk, rebuilt here
        self._ids = DecisionIndex.create(log.directory)
        self._in_use: set[str] = set()
        self._released = threading.Condition()
        rows: list[tuple[str, int, str]] = []
        reported: set[str] = set()  # decisions with an outcome report (into the index once all are in)
        for i, entry in log.entries():
            claims = unverified_claims(entry)
            head = RecordHead.from_dict(claims)
            if head.kind == DecisionRecord.KIND:
                rows.append((head.decision_id, i, identity_of(claims.get("pdp", {}).get("caller", {}))))
                if len(rows) >= _REBUILD_BATCH:
                    self._ids.add(rows)
                    rows.clear()
            elif head.kind == OutcomeRecord.KIND:
                reported.add(head.decision_id)
        self._ids.add(rows)
        self._ids.mark_reported(reported)

    @property
    def healthy(self) -> bool:
        """Whether the log takes entries; a failed log is re-probed first (space may be back)."""
        return self.log.healthy or self.log.recover()

    def decision_id(self, *, request_id: str, caller: str, request_digest: str) -> str:
        """This PDP's id for a request (:func:`decision_id` under its secret)."""
        return decision_id(secret=self._id_secret, request_id=request_id, caller=caller, request_digest=request_digest)

    def owner(self, decision_id: str) -> str | None:
        """The identity that asked for a logged decision ("" anonymous), or None: no such decision."""
        found = self._ids.find(decision_id)
        return None if found is None else found[1]

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
        index = self._ids.index_of(decision_id)
        if index is None:
            return None
        entry = self.log.entry(index)
        if DecisionRecord.from_dict(unverified_claims(entry)).pdp.request_digest != request_digest:
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
        self._ids.add(
            [
                (record.decision_id, index, identity_of(record.pdp.caller))
                for (record, _), index in zip(decisions, indexes, strict=True)
            ]
        )
        return [Signed(record, index) for record, index in zip(made, indexes, strict=True)]

    def _sign_at(self, record: Record, made: list[str], index: int) -> bytes:
        """The entry for log index ``index``: the record, with that index, signed (kept in ``made``)."""
        made.append(sign_record(record.at(index), self.ring))
        return made[-1].encode()

    def record_outcome(self, *, decision_id: str, report: OutcomeReport, reporter: str, owner: str) -> Signed:
        """Appends a PEP's report of what it did with an ALLOW, linked to the decision and its
        record's digest. Only an ALLOW can have been acted on (executed, failed, or blocked by the
        PEP itself, e.g. for an obligation it cannot carry out), and it has one report. A DENY or
        REQUIRE_APPROVAL has none: its signed record already says nothing may run. Nothing is
        appended when a report is refused.

        Args:
            decision_id: the decision reported on.
            report: what happened.
            reporter: who reports (recorded).
            owner: the identity the decision must belong to (the caller's, whatever its roles:
                nobody reports on someone else's decision).

        Raises:
            NotFound: no such decision in this log, or not one of ``owner``'s (checked first, so
                a caller learns nothing of others' decisions).
            NotAnAllow: the decision was not an ALLOW; the message names its verdict.
            AlreadyReported: the decision has a report already.
            LedgerUnavailable: not durable.
        """
        found = self._ids.find(decision_id)
        if found is None or found[1] != owner:
            raise NotFound(f"no decision {decision_id} of yours in this PDP's log")
        index = found[0]
        decided = self.log.entry(index)
        verdict = DecisionRecord.from_dict(unverified_claims(decided)).pdp
        if verdict.outcome != "allow":
            raise NotAnAllow(
                f"decision {decision_id} was {_verdict_name(verdict)}, not ALLOW: outcome reports are for ALLOWs "
                "only (its signed record already says the action may not run); nothing was logged"
            )
        if not self._ids.claim_report(decision_id):
            raise AlreadyReported(f"decision {decision_id} already has an outcome report; a decision has one")
        now = int(time.time())
        record = OutcomeRecord(
            decision_id=decision_id,
            timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            outcome=report,
            requested_by=reporter,
            decision_log_index=str(index),
            decision_record_digest=sha256_digest(decided),
            iat=now,
            jti=str(uuid.uuid4()),
        )
        try:
            return self.record(record)
        except BaseException:
            self._ids.release_report(decision_id)
            raise

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
        index = self._ids.index_of(record.decision_id)
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
        index = self._ids.index_of(decision_id)
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
        self._ids.close()


def _verdict_name(pdp: DecisionClaims) -> str:
    """A decision record's verdict as a PEP sees it: ``DENY``, ``REQUIRE_APPROVAL``, or
    ``DENY (fail-closed: pdp.opa_unavailable)`` when no policy verdict was reached."""
    name = pdp.outcome.upper() or "no verdict"
    if pdp.indeterminate:
        return f"{name} (fail-closed: {pdp.error_code or 'pdp.no_verdict'})"
    return name


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
    id_secret: bytes = b"",
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
    return Recorder(ring=ring, log=log, ttl_s=ttl_s, mask=mask, erase=erase, id_secret=id_secret)
