"""The state PDP replicas share: single-use ids, escalations, budget reservations, suspensions.

One small interface (:class:`StateStore`), two real backends picked by :func:`open_store`:

* **SQLite** (:mod:`pdp.state.sqlite`), the embedded default: one file, ``state.sqlite3``, in
  ``PDP_STATE_DIR``. Several processes on one machine may share it (``make run``, ``pdp dev``).
* **PostgreSQL** (:mod:`pdp.state.postgres`): ``PDP_STATE_URL=postgresql://...``, for several replicas.

Both run the same SQL (:mod:`pdp.state._sql`); the schema is created on open and is idempotent:

=================== =====================================================================================
table               rows
=================== =====================================================================================
``pdp_single_use``  ``key`` (primary key), ``expires_at``: ids already used (approval tokens, PEP replay
                    cache); a row past its expiry may be used again and is pruned later
``pdp_escalations`` one per escalation: the :class:`Escalation` fields as columns (``reasons``, ``votes``,
                    ``context`` as JSON text), ``status`` indexed with ``expires_at`` and ``agent_id``
``pdp_reservations`` ``(reservation_id, key)`` primary key, ``amount``, ``reserved_at``, ``horizon`` (when
                    it leaves the largest window it was claimed in), ``state`` ``held`` or ``kept``
``pdp_suspensions`` ``(kind, value)`` primary key, ``reason``, ``suspended_by``, ``suspended_at``, ``until_ts``
=================== =====================================================================================

Semantics (the same on both backends, and what the tests in ``tests/state_contract.py`` prove):

* Every operation is one transaction, atomic across processes and replicas. Any backend failure
  (server down, file replaced or not a database, timeout) raises :class:`StateUnavailable`; no
  operation ever answers from a default. Callers fail closed on it (``pdp.state_unavailable``).
* ``first_use(key, expires_at)``: an atomic insert-if-absent; True exactly once per key until the
  stored ``expires_at`` has passed (``expires_at < now``), then the key may be used again.
* Escalations move ``open`` → ``approved`` | ``rejected`` | ``expired``, and ``approved`` →
  ``consumed``; nothing else. ``record_vote`` refuses (:class:`EscalationError`, ``reason`` says
  which) an unknown escalation, one that is not open, one past its ``expires_at`` (even before
  ``expire_due`` has moved it), and an approver who already voted. An approve vote counts towards
  the quorum only if the approver holds the escalation's ``role``; ``count`` distinct such approvers
  approve it; one reject rejects it. ``expire_due`` and ``close_for_agent`` return exactly the rows
  they moved, so when replicas race each transition is returned (and signed in the log) once.
* Budgets: a key is one counter; a claim looks at it through a sliding window
  ``(now - window_s, now]``. ``reserve`` is all or nothing: for every claim
  ``used(key, window_s) + amount <= limit``, or nothing is written. Concurrent reservations on a key
  are serialised (SQLite: the database write lock; PostgreSQL: a transaction advisory lock per key,
  taken in key order), so replicas together never exceed a limit. ``settle(keep=True)`` keeps a held
  reservation for good, ``keep=False`` removes it (the amount is free again); a kept one stays kept.
  An ALLOW never settled stays counted until it leaves its window. ``reserve_many`` is ``reserve``
  for several requests in order, in one transaction (one commit: concurrent decisions share a sync).
* Suspensions (kill switch): ``kind`` is ``agent``, ``principal`` or ``tool``; one row per
  ``(kind, value)``, replaced by a later ``suspend``; active while ``until`` is None or ``until > now``.
  Nothing is cached: a second store on the same database sees a change at its next call.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pdp.errors import NoVerdict, PdpError

ESCALATION_STATUSES = ("open", "approved", "rejected", "expired", "consumed")
SUSPENSION_KINDS = ("agent", "principal", "tool")


class StateUnavailable(NoVerdict):
    """The state store cannot be used (down, unreadable, timed out): fail closed."""

    error_code = "pdp.state_unavailable"


class EscalationError(PdpError):
    """A step on an escalation is refused; ``reason`` is one of ``not_found``, ``exists``,
    ``expired``, ``decided`` (already approved/rejected/expired/consumed), ``duplicate_approver``,
    ``not_approved``."""

    def __init__(self, escalation_id: str, reason: str, message: str) -> None:
        super().__init__(f"escalation {escalation_id}: {message}")
        self.escalation_id = escalation_id
        self.reason = reason


def _require(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{field}: {problem}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Vote:
    """One approver's answer on an escalation; ``roles`` are the approver's at the time of voting."""

    approver: str
    roles: list[str]
    approve: bool
    comment: str = ""
    at: int

    def __post_init__(self) -> None:
        _require(bool(self.approver), "approver", "must not be empty")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vote:
        return cls(
            approver=d["approver"], roles=list(d["roles"]), approve=d["approve"], comment=d["comment"], at=d["at"]
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Escalation:
    """A REQUIRE_APPROVAL decision waiting for ``count`` distinct approvers holding ``role``.

    ``context`` is what the console shows (tool, arguments, resource, classification, risk, lineage).
    ``closed_at`` / ``closed_reason`` are set when the escalation leaves ``open`` (the reason for
    ``expire_due`` is ``"expired"``, for ``close_for_agent`` the caller's).
    """

    id: str
    decision_id: str
    action_digest: str
    agent_id: str
    principal_id: str
    reasons: list[str]
    role: str
    count: int
    created_at: int
    expires_at: int
    status: str = "open"
    votes: list[Vote] = dataclasses.field(default_factory=list)
    context: dict[str, Any] = dataclasses.field(default_factory=dict)
    closed_at: int | None = None
    closed_reason: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.id), "id", "must not be empty")
        _require(bool(self.role), "role", "must name the role approvers must hold")
        _require(self.count >= 1, "count", f"must be at least 1, not {self.count}")
        _require(self.expires_at > self.created_at, "expires_at", "must be after created_at")
        _require(self.status in ESCALATION_STATUSES, "status", f"must be one of {ESCALATION_STATUSES}")

    def approvers(self) -> list[str]:
        """The distinct approvers whose approve votes count (they hold ``role``), in voting order."""
        return [v.approver for v in self.votes if v.approve and self.role in v.roles]


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetClaim:
    """``amount`` (integer, minor units or calls) against ``key``, at most ``limit`` per ``window_s``."""

    key: str
    amount: int
    limit: int
    window_s: int

    def __post_init__(self) -> None:
        _require(bool(self.key), "key", "must not be empty")
        _require(self.amount >= 0, "amount", f"must not be negative, not {self.amount}")
        _require(self.limit >= 0, "limit", f"must not be negative, not {self.limit}")
        _require(self.window_s > 0, "window_s", f"must be positive, not {self.window_s}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Suspension:
    """The kill switch for one agent, principal or tool; ``until`` None means until resumed."""

    kind: str
    value: str
    reason: str
    by: str
    at: int
    until: int | None = None

    def __post_init__(self) -> None:
        _require(self.kind in SUSPENSION_KINDS, "kind", f"must be one of {SUSPENSION_KINDS}, not {self.kind!r}")
        _require(bool(self.value), "value", "must not be empty")


class StateStore(Protocol):
    """The shared state; see the module docstring for the semantics every backend keeps."""

    def healthy(self) -> bool: ...
    def close(self) -> None: ...
    def first_use(self, key: str, expires_at: int, *, now: int | None = None) -> bool: ...
    def open_escalation(self, e: Escalation) -> None: ...
    def get_escalation(self, escalation_id: str) -> Escalation | None: ...
    def list_escalations(self, *, status: str | None = None, now: int) -> list[Escalation]: ...
    def record_vote(self, escalation_id: str, vote: Vote, *, now: int) -> Escalation: ...
    def consume_escalation(self, escalation_id: str, *, now: int) -> Escalation: ...
    def expire_due(self, *, now: int) -> list[Escalation]: ...
    def close_for_agent(self, agent_id: str, *, now: int, reason: str) -> list[Escalation]: ...
    def usage(self, keys: Sequence[tuple[str, int]], *, now: int) -> dict[str, int]: ...
    def reserve(self, reservation_id: str, claims: Sequence[BudgetClaim], *, now: int) -> bool: ...
    def reserve_many(self, requests: Sequence[tuple[str, Sequence[BudgetClaim]]], *, now: int) -> list[bool]: ...
    def settle(self, reservation_id: str, *, keep: bool) -> None: ...
    def suspend(self, s: Suspension) -> None: ...
    def resume(self, kind: str, value: str, *, by: str, now: int) -> bool: ...
    def suspensions(self, *, now: int) -> list[Suspension]: ...


def open_store(url_or_dir: str | Path) -> StateStore:
    """Opens the store: ``postgresql://`` / ``postgres://`` URLs → PostgreSQL, anything else is the
    directory of the SQLite file (created if missing). The schema is created if absent.

    Raises:
        StateUnavailable: the database cannot be reached or read.
    """
    target = str(url_or_dir)
    if target.startswith(("postgresql://", "postgres://")):
        from pdp.state.postgres import PostgresStore

        return PostgresStore(target)
    from pdp.state.sqlite import SqliteStore

    return SqliteStore(Path(target))


class StateReplayCache:
    """:class:`pdp.client.ReplayCache` on a store: a record's ``jti`` is used once across every PEP
    sharing the database. Raises :class:`StateUnavailable` (never answers "first use") when it is down."""

    def __init__(self, store: StateStore, *, prefix: str = "pep-record:") -> None:
        self._store = store
        self._prefix = prefix

    def first_use(self, jti: str, expires_at: int) -> bool:
        return self._store.first_use(self._prefix + jti, expires_at, now=int(time.time()))
