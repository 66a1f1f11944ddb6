"""The kill switch: suspend an agent, a principal or a tool on every replica, and say so in the log.

Suspensions live in the shared state store (:meth:`pdp.state.StateStore.suspend`). Each replica
reads the active list at most every :data:`REFRESH_S` seconds (:class:`SuspensionList`), so a
suspension made on any replica is in force on every other within that time plus one decision;
the replica that made it sees it at once. A decision whose agent, principal or tool is suspended is
a DENY (``agent.suspended``, ``principal.suspended``, ``tool.suspended``) made before the policy is
asked, so it never reaches OPA as an allow candidate. When the list cannot be read, decisions fail
closed (``pdp.state_unavailable``).

:class:`KillSwitch` throws and lifts it: the store first (the agent stops at once), then the
agent's open escalations are closed, then one signed :class:`pdp.schema.SuspensionRecord` says who,
when, why and which escalations it closed.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pdp.errors import InvalidArgument, LedgerUnavailable
from pdp.recorder import Recorder, Signed
from pdp.schema import SuspensionRecord
from pdp.state import SUSPENSION_KINDS, StateStore, Suspension
from pdp.verdict import RULE_SUSPENSIONS, Outcome, Reason, Verdict, duration_s

REFRESH_S = 0.5
"""Longest a replica decides on a suspension list read earlier (measured: reading it per decision
costs a store round trip, ~0.1 ms on SQLite, ~0.3 ms on PostgreSQL; twice a second costs nothing)."""


class SuspensionList:
    """The active suspensions, read from the store at most every ``refresh_s`` seconds.

    Raises :class:`pdp.state.StateUnavailable` from :meth:`match` when the list is due for a read
    and the store cannot give it: no decision is made on a list older than ``refresh_s``.
    """

    def __init__(
        self, store: StateStore, *, refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._active: dict[tuple[str, str], Suspension] = {}

    def invalidate(self) -> None:
        """Forgets the list, so the next decision reads it (after a change made here)."""
        with self._lock:
            self._read_at = -float("inf")

    def active(self) -> dict[tuple[str, str], Suspension]:
        """The active suspensions by ``(kind, value)``, read again when older than ``refresh_s``."""
        with self._lock:
            if self._clock() - self._read_at >= self._refresh_s:
                now = int(time.time())
                self._active = {(s.kind, s.value): s for s in self._store.suspensions(now=now)}
                self._read_at = self._clock()
            return self._active

    def match(self, input_doc: dict[str, Any]) -> Suspension | None:
        """The suspension that stops this decision (agent first, then principal, then tool), or None."""
        active = self.active()
        if not active:
            return None
        now = int(time.time())
        for kind, value in subjects(input_doc):
            s = active.get((kind, value))
            if s is not None and (s.until is None or s.until > now):
                return s
        return None


def subjects(input_doc: dict[str, Any]) -> list[tuple[str, str]]:
    """What a suspension can name in a policy input: the agent, every principal id it carries
    (verified or asserted: either one being suspended stops the action), and the tool."""
    principals = [
        p.get("id", "")
        for p in (
            input_doc.get("principal"),
            input_doc.get("verified", {}).get("principal"),
            input_doc.get("asserted", {}).get("principal"),
        )
        if isinstance(p, dict)
    ]
    found = [("agent", input_doc["agent"]["id"])]
    found += [("principal", p) for p in dict.fromkeys(principals) if p]
    found.append(("tool", input_doc["action"]["tool"]))
    return found


def suspended_verdict(s: Suspension) -> Verdict:
    """The DENY for a decision stopped by ``s`` (a definite answer, not a failure)."""
    until = f" until {rfc3339(s.until)}" if s.until is not None else ""
    return Verdict(
        outcome=Outcome.DENY,
        reasons=(
            Reason(
                code=f"{s.kind}.suspended",
                message=f"{s.kind} {s.value} is suspended{until} by {s.by}: {s.reason}",
                rule=RULE_SUSPENSIONS,
                severity="critical",
            ),
        ),
    )


@dataclasses.dataclass(frozen=True)
class Thrown:
    """What a suspend or resume did: its signed record, and the escalations it closed."""

    signed: Signed
    record: SuspensionRecord


class KillSwitch:
    """Suspends and resumes, in the store and in the signed log.

    Args:
        store: the shared state store.
        recorder: signs and appends the suspension records.
        suspensions: this replica's list, refreshed at once after a change made here.
    """

    def __init__(self, *, store: StateStore, recorder: Recorder, suspensions: SuspensionList) -> None:
        self._store = store
        self._recorder = recorder
        self._suspensions = suspensions

    def suspend(self, *, kind: str, value: str, reason: str, until: str, by: str, operator: str) -> Thrown:
        """Suspends ``kind`` ``value`` (until ``until``, RFC 3339 or a duration like ``2h``; empty:
        until resumed); closes the agent's open escalations; records who, when, why.

        Raises:
            InvalidArgument: a field is missing or malformed.
            StateUnavailable: the store cannot be written (nothing changed).
            LedgerUnavailable: suspended, but the record could not be written (the message says so).
        """
        _check(kind, value)
        if not reason.strip():
            raise InvalidArgument("reason", "is required: say why, for the record")
        now = int(time.time())
        until_ts = parse_until(until, now=now)
        self._store.suspend(Suspension(kind=kind, value=value, reason=reason, by=by, at=now, until=until_ts))
        self._suspensions.invalidate()
        closed = []
        if kind == "agent":
            closed = [e.id for e in self._store.close_for_agent(value, now=now, reason=f"agent suspended: {reason}")]
        record = _record(
            "suspend", kind=kind, value=value, reason=reason, by=by, operator=operator, now=now, until=until_ts
        )
        return self._signed(dataclasses.replace(record, closed_escalations=tuple(closed)))

    def resume(self, *, kind: str, value: str, reason: str, by: str, operator: str) -> Thrown:
        """Lifts a suspension and records who, when, why (and whether one was in force).

        Raises:
            InvalidArgument: a field is missing or malformed.
            StateUnavailable: the store cannot be written (nothing changed).
            LedgerUnavailable: resumed, but the record could not be written.
        """
        _check(kind, value)
        now = int(time.time())
        was_active = self._store.resume(kind, value, by=by, now=now)
        self._suspensions.invalidate()
        record = _record("resume", kind=kind, value=value, reason=reason, by=by, operator=operator, now=now, until=None)
        return self._signed(dataclasses.replace(record, was_active=was_active))

    def _signed(self, record: SuspensionRecord) -> Thrown:
        try:
            return Thrown(self._recorder.record(record), record)
        except LedgerUnavailable as e:
            raise LedgerUnavailable(f"the {record.action} of {record.kind} {record.value} is in force, but {e}") from e


def _record(
    action: str, *, kind: str, value: str, reason: str, by: str, operator: str, now: int, until: int | None
) -> SuspensionRecord:
    return SuspensionRecord(
        action=action,
        kind=kind,
        value=value,
        reason=reason,
        timestamp=rfc3339(now),
        requested_by=by,
        operator=operator,
        until="" if until is None else rfc3339(until),
        iat=now,
        jti=str(uuid.uuid4()),
    )


def _check(kind: str, value: str) -> None:
    if kind not in SUSPENSION_KINDS:
        raise InvalidArgument("kind", f"must be one of {', '.join(SUSPENSION_KINDS)}, not {kind!r}")
    if not value:
        raise InvalidArgument("value", f"is required: the {kind} to suspend or resume")


def parse_until(until: str, *, now: int) -> int | None:
    """``until`` as unix seconds: RFC 3339 (``2026-11-25T18:00:00Z``), or a duration from ``now``
    (``90s``, ``15m``, ``2h``, ``7d``); empty is None (until resumed).

    Raises:
        InvalidArgument: neither, or not in the future.
    """
    if not until:
        return None
    seconds = duration_s(until)
    if seconds is not None:
        return now + seconds
    try:
        at = datetime.datetime.fromisoformat(until.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument("until", f"{until!r} is neither RFC 3339 nor a duration like 2h") from None
    if at.tzinfo is None:
        raise InvalidArgument("until", f"{until!r} has no time zone (add Z for UTC)")
    ts = int(at.timestamp())
    if ts <= now:
        raise InvalidArgument("until", f"{until!r} is not in the future")
    return ts


def rfc3339(ts: int) -> str:
    """Unix seconds as RFC 3339 UTC (``2026-11-25T18:00:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
