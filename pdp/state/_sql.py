"""The SQL both backends run: the schema and every operation, written once.

A backend supplies a connection (:meth:`SqlStore._connect`), a transaction that serialises
writers the way its engine can (:meth:`SqlStore._transaction`), its locks (:meth:`SqlStore._lock`)
and the exceptions that mean "the backend failed". Statements use ``?`` placeholders;
:meth:`SqlStore._q` rewrites them for drivers that want another style.
"""

# Interpolated into SQL: only this module's own column lists and WHERE clauses; values are bound.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from pdp.state import (
    ESCALATION_STATUSES,
    SUSPENSION_KINDS,
    BudgetClaim,
    Escalation,
    EscalationError,
    StateUnavailable,
    Suspension,
    Vote,
)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pdp_single_use (
        key TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS pdp_escalations (
        id TEXT PRIMARY KEY,
        decision_id TEXT NOT NULL,
        action_digest TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        principal_id TEXT NOT NULL,
        reasons TEXT NOT NULL,
        role TEXT NOT NULL,
        required_count INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        status TEXT NOT NULL,
        votes TEXT NOT NULL,
        context TEXT NOT NULL,
        closed_at BIGINT,
        closed_reason TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS pdp_escalations_status ON pdp_escalations (status, expires_at)",
    "CREATE INDEX IF NOT EXISTS pdp_escalations_agent ON pdp_escalations (agent_id, status)",
    """CREATE TABLE IF NOT EXISTS pdp_reservations (
        reservation_id TEXT NOT NULL,
        key TEXT NOT NULL,
        amount BIGINT NOT NULL,
        reserved_at BIGINT NOT NULL,
        horizon BIGINT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (reservation_id, key))""",
    "CREATE INDEX IF NOT EXISTS pdp_reservations_window ON pdp_reservations (key, reserved_at)",
    # A running total per counter and window: ``used`` is the sum of the key's reservations made
    # after ``edge``; moving the edge subtracts only what left the window since (no full re-sum).
    """CREATE TABLE IF NOT EXISTS pdp_budget_windows (
        key TEXT NOT NULL,
        window_s BIGINT NOT NULL,
        used BIGINT NOT NULL,
        edge BIGINT NOT NULL,
        PRIMARY KEY (key, window_s))""",
    """CREATE TABLE IF NOT EXISTS pdp_suspensions (
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        reason TEXT NOT NULL,
        suspended_by TEXT NOT NULL,
        suspended_at BIGINT NOT NULL,
        until_ts BIGINT,
        PRIMARY KEY (kind, value))""",
)

_ESCALATION_COLUMNS = (
    "id, decision_id, action_digest, agent_id, principal_id, reasons, role, required_count,"
    " created_at, expires_at, status, votes, context, closed_at, closed_reason"
)
_SUSPENSION_COLUMNS = "kind, value, reason, suspended_by, suspended_at, until_ts"
_PRUNE_EVERY_S = 60.0
_WINDOW_COLUMNS = (("key", "TEXT"), ("window_s", "BIGINT"), ("edge", "BIGINT"))  # a counter seen through a window


def _escalation(row: Sequence[Any]) -> Escalation:
    return Escalation(
        id=row[0],
        decision_id=row[1],
        action_digest=row[2],
        agent_id=row[3],
        principal_id=row[4],
        reasons=json.loads(row[5]),
        role=row[6],
        count=int(row[7]),
        created_at=int(row[8]),
        expires_at=int(row[9]),
        status=row[10],
        votes=[Vote.from_dict(v) for v in json.loads(row[11])],
        context=json.loads(row[12]),
        closed_at=None if row[13] is None else int(row[13]),
        closed_reason=row[14],
    )


def _ordered(rows: list[Any]) -> list[Escalation]:
    return sorted((_escalation(r) for r in rows), key=lambda e: (e.created_at, e.id))


class SqlStore:
    """Every :class:`pdp.state.StateStore` operation over a small pool of DB-API connections."""

    _for_update: ClassVar[str] = ""  # appended to the SELECT that locks an escalation row
    _backend_errors: ClassVar[tuple[type[Exception], ...]] = ()
    _retry_stale: ClassVar[bool] = False

    def __init__(self, *, name: str) -> None:
        self._name = name
        self._idle: list[Any] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._next_prune = 0.0
        self._next_prune_reservations = 0.0
        with self._tx() as conn:
            self._lock(conn, ["pdp-state-schema"])
            for statement in SCHEMA:
                conn.execute(statement)

    # --- what a backend provides -------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _check(self) -> None:
        """Raises StateUnavailable if the database is known to be gone before a connection is used."""

    def _transaction(self, conn: Any, *, read_only: bool = False) -> contextlib.AbstractContextManager[Any]:
        """A transaction on ``conn``; a ``read_only`` one is a single statement that needs no writer's lock
        (backends may run it on its own, without BEGIN and COMMIT)."""
        raise NotImplementedError

    def _lock(self, conn: Any, keys: Sequence[str]) -> None:
        """Serialises transactions on ``keys`` until this one ends (no-op where writers are serial)."""

    def _q(self, sql: str) -> str:
        return sql

    # --- plumbing --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, *, read_only: bool = False) -> Iterator[Any]:
        """One transaction on a pooled connection; any backend error becomes StateUnavailable."""
        if self._closed:
            raise StateUnavailable(f"{self._name}: the state store is closed")
        self._check()
        conn = None
        try:
            with contextlib.ExitStack() as stack:
                conn = self._begin(stack, read_only=read_only)
                yield conn
        except self._backend_errors as e:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            raise StateUnavailable(f"{self._name}: {type(e).__name__}: {e}".rstrip()) from e
        except BaseException:
            if conn is not None:
                self._give_back(conn)
            raise
        self._give_back(conn)

    def _begin(self, stack: contextlib.ExitStack[Any], *, read_only: bool = False) -> Any:
        """A connection in a new transaction (ended by ``stack``). Where ``_retry_stale`` is set, a
        pooled connection that cannot even begin one (the server restarted since it was pooled) is
        dropped for a fresh one: nothing was sent on it yet, so that retry cannot do anything twice."""
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            try:
                stack.enter_context(self._transaction(conn, read_only=read_only))
                return conn
            except self._backend_errors:
                with contextlib.suppress(Exception):
                    conn.close()
                if not self._retry_stale:
                    raise
        conn = self._connect()
        try:
            stack.enter_context(self._transaction(conn, read_only=read_only))
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    def _give_back(self, conn: Any) -> None:
        with self._pool_lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)

    def _exec(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._q(sql), tuple(params))

    def healthy(self) -> bool:
        """True if a read on the schema succeeds now."""
        try:
            with self._tx() as conn:
                self._exec(conn, "SELECT count(*) FROM pdp_suspensions").fetchone()
        except StateUnavailable:
            return False
        return True

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()

    # --- single use ------------------------------------------------------------------------------
    def first_use(self, key: str, expires_at: int, *, now: int | None = None) -> bool:
        """Records ``key`` until ``expires_at``; False if it is recorded and not yet expired."""
        t = int(time.time()) if now is None else now
        with self._tx() as conn:
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + _PRUNE_EVERY_S
                self._exec(conn, "DELETE FROM pdp_single_use WHERE expires_at < ?", [t])
            row = self._exec(
                conn,
                "INSERT INTO pdp_single_use (key, expires_at) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
                " WHERE pdp_single_use.expires_at < ? RETURNING key",
                [key, expires_at, t],
            ).fetchone()
        return row is not None

    # --- escalations -----------------------------------------------------------------------------
    def open_escalation(self, e: Escalation) -> None:
        """Stores a new escalation as given (normally ``open`` without votes).

        Raises:
            EscalationError: ``exists`` if the id is taken.
        """
        with self._tx() as conn:
            row = self._exec(
                conn,
                f"INSERT INTO pdp_escalations ({_ESCALATION_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING RETURNING id",
                [
                    e.id,
                    e.decision_id,
                    e.action_digest,
                    e.agent_id,
                    e.principal_id,
                    json.dumps(e.reasons),
                    e.role,
                    e.count,
                    e.created_at,
                    e.expires_at,
                    e.status,
                    json.dumps([v.to_dict() for v in e.votes]),
                    json.dumps(e.context),
                    e.closed_at,
                    e.closed_reason,
                ],
            ).fetchone()
        if row is None:
            raise EscalationError(e.id, "exists", "an escalation with this id already exists")

    def get_escalation(self, escalation_id: str) -> Escalation | None:
        """The escalation as stored (an open one past its expiry stays open until ``expire_due``)."""
        with self._tx() as conn:
            row = self._select_escalation(conn, escalation_id, lock=False)
        return None if row is None else _escalation(row)

    def _select_escalation(self, conn: Any, escalation_id: str, *, lock: bool) -> Any:
        sql = f"SELECT {_ESCALATION_COLUMNS} FROM pdp_escalations WHERE id = ?"
        return self._exec(conn, sql + (self._for_update if lock else ""), [escalation_id]).fetchone()

    def list_escalations(self, *, status: str | None = None, now: int) -> list[Escalation]:
        """Escalations by status as of ``now``, oldest first: an open one past its expiry is listed
        (and returned) as ``expired`` though only ``expire_due`` moves its row."""
        if status is not None and status not in ESCALATION_STATUSES:
            raise ValueError(f"status: must be one of {ESCALATION_STATUSES}, not {status!r}")
        where, params = {
            None: ("", []),
            "open": (" WHERE status = 'open' AND expires_at > ?", [now]),
            "expired": (" WHERE status = 'expired' OR (status = 'open' AND expires_at <= ?)", [now]),
        }.get(status, (" WHERE status = ?", [status]))
        with self._tx() as conn:
            rows = self._exec(conn, f"SELECT {_ESCALATION_COLUMNS} FROM pdp_escalations{where}", params).fetchall()
        return [
            dataclasses.replace(e, status="expired") if e.status == "open" and e.expires_at <= now else e
            for e in _ordered(rows)
        ]

    def record_vote(self, escalation_id: str, vote: Vote, *, now: int) -> Escalation:
        """Adds one approver's vote, atomically, and returns the escalation after it.

        Raises:
            EscalationError: ``not_found``, ``decided`` (not open), ``expired`` (``now >= expires_at``)
                or ``duplicate_approver``; nothing is written then.
        """
        with self._tx() as conn:
            row = self._select_escalation(conn, escalation_id, lock=True)
            if row is None:
                raise EscalationError(escalation_id, "not_found", "no such escalation")
            e = _escalation(row)
            if e.status != "open":
                raise EscalationError(escalation_id, "decided", f"already {e.status}; votes are closed")
            if now >= e.expires_at:
                raise EscalationError(escalation_id, "expired", f"expired at {e.expires_at} (now {now})")
            if any(v.approver == vote.approver for v in e.votes):
                raise EscalationError(escalation_id, "duplicate_approver", f"{vote.approver} has already voted")
            after = dataclasses.replace(e, votes=[*e.votes, vote])
            if not vote.approve:
                after = dataclasses.replace(after, status="rejected", closed_at=now)
            elif len(after.approvers()) >= e.count:
                after = dataclasses.replace(after, status="approved", closed_at=now)
            self._exec(
                conn,
                "UPDATE pdp_escalations SET votes = ?, status = ?, closed_at = ? WHERE id = ?",
                [json.dumps([v.to_dict() for v in after.votes]), after.status, after.closed_at, escalation_id],
            )
        return after

    def consume_escalation(self, escalation_id: str, *, now: int) -> Escalation:
        """Moves an approved escalation to ``consumed``, once: of two racing callers one succeeds.

        Raises:
            EscalationError: ``not_found``, or ``not_approved`` naming its status.
        """
        with self._tx() as conn:
            row = self._exec(
                conn,
                f"UPDATE pdp_escalations SET status = 'consumed', closed_at = ? WHERE id = ? AND status = 'approved'"
                f" RETURNING {_ESCALATION_COLUMNS}",
                [now, escalation_id],
            ).fetchone()
            current = None if row is not None else self._select_escalation(conn, escalation_id, lock=False)
        if row is not None:
            return _escalation(row)
        if current is None:
            raise EscalationError(escalation_id, "not_found", "no such escalation")
        raise EscalationError(escalation_id, "not_approved", f"is {_escalation(current).status}, not approved")

    def expire_due(self, *, now: int) -> list[Escalation]:
        """Moves every open escalation with ``expires_at <= now`` to ``expired``; returns those."""
        with self._tx() as conn:
            rows = self._exec(
                conn,
                "UPDATE pdp_escalations SET status = 'expired', closed_at = ?, closed_reason = 'expired'"
                f" WHERE status = 'open' AND expires_at <= ? RETURNING {_ESCALATION_COLUMNS}",
                [now, now],
            ).fetchall()
        return _ordered(rows)

    def close_for_agent(self, agent_id: str, *, now: int, reason: str) -> list[Escalation]:
        """Rejects every open escalation of ``agent_id`` (the kill switch) with ``reason``; returns those."""
        with self._tx() as conn:
            rows = self._exec(
                conn,
                "UPDATE pdp_escalations SET status = 'rejected', closed_at = ?, closed_reason = ?"
                f" WHERE agent_id = ? AND status = 'open' RETURNING {_ESCALATION_COLUMNS}",
                [now, reason, agent_id],
            ).fetchall()
        return _ordered(rows)

    # --- budgets ---------------------------------------------------------------------------------
    def usage(self, keys: Sequence[tuple[str, int]], *, now: int) -> dict[str, int]:
        """What is used of each ``(key, window_s)`` in ``(now - window_s, now]`` (held and kept)."""
        with self._tx(read_only=True) as conn:
            return {key: used for (key, _), used in self._windows(conn, keys, now)().items()}

    def _windows(
        self, conn: Any, keys: Sequence[tuple[str, int]], now: int
    ) -> Callable[[], dict[tuple[str, int], int]]:
        """The sum in ``(now - window_s, now]`` of each ``(key, window_s)``, in one statement: the running
        total corrected by the reservations between its edge and this window's (a short range either
        way), or a full sum for a counter without a total yet. The statement is sent at once; the function
        returned reads its answer (where the backend pipelines, everything sent so far makes one round
        trip then)."""
        if not keys:
            return dict
        q, params = _values("q", _WINDOW_COLUMNS, [(key, window_s, now - window_s) for key, window_s in keys])
        cursor = self._exec(
            conn,
            f"WITH {q} SELECT q.key, q.window_s, CASE WHEN w.key IS NULL"
            " THEN (SELECT COALESCE(SUM(r.amount), 0) FROM pdp_reservations r"
            "       WHERE r.key = q.key AND r.reserved_at > q.edge)"
            " ELSE w.used"
            " - (SELECT COALESCE(SUM(r.amount), 0) FROM pdp_reservations r"
            "    WHERE r.key = q.key AND r.reserved_at > w.edge AND r.reserved_at <= q.edge)"
            " + (SELECT COALESCE(SUM(r.amount), 0) FROM pdp_reservations r"
            "    WHERE r.key = q.key AND r.reserved_at > q.edge AND r.reserved_at <= w.edge) END"
            " FROM q LEFT JOIN pdp_budget_windows w ON w.key = q.key AND w.window_s = q.window_s",
            params,
        )
        return lambda: {(r[0], int(r[1])): int(r[2]) for r in cursor.fetchall()}

    def _advance(self, conn: Any, windows: Sequence[tuple[str, int]], now: int) -> None:
        """Moves the running totals of ``windows`` (``(key, window_s)``, each once) to ``now``, in one
        statement: a total not made yet is made from a full sum; one whose edge is behind subtracts what
        left the window since, a relative update so that a release committed meanwhile is neither lost nor
        counted twice; one at or ahead of this edge (another replica's clock is ahead) is left as it is."""
        q, params = _values("q", _WINDOW_COLUMNS, [(key, window_s, now - window_s) for key, window_s in windows])
        self._exec(
            conn,
            f"WITH {q} INSERT INTO pdp_budget_windows (key, window_s, used, edge)"
            " SELECT q.key, q.window_s, CASE WHEN EXISTS (SELECT 1 FROM pdp_budget_windows w"
            "   WHERE w.key = q.key AND w.window_s = q.window_s) THEN 0"
            " ELSE (SELECT COALESCE(SUM(r.amount), 0) FROM pdp_reservations r"
            "   WHERE r.key = q.key AND r.reserved_at > q.edge) END, q.edge"
            " FROM q WHERE NOT EXISTS (SELECT 1 FROM pdp_budget_windows w"
            "   WHERE w.key = q.key AND w.window_s = q.window_s AND w.edge >= q.edge)"
            " ON CONFLICT (key, window_s) DO UPDATE SET used = pdp_budget_windows.used"
            " - (SELECT COALESCE(SUM(r.amount), 0) FROM pdp_reservations r"
            "   WHERE r.key = pdp_budget_windows.key AND r.reserved_at > pdp_budget_windows.edge"
            "   AND r.reserved_at <= excluded.edge), edge = excluded.edge",
            params,
        )

    def reserve(self, reservation_id: str, claims: Sequence[BudgetClaim], *, now: int) -> bool:
        """All or nothing: reserves every claim if each still fits its limit, else nothing.

        Several claims may name one key (one counter seen through several windows); they must then
        carry the same amount, which is reserved once.

        Raises:
            ValueError: an empty or already used ``reservation_id``, or one key with two amounts.
        """
        return self.reserve_many([(reservation_id, claims)], now=now)[0]

    def reserve_many(self, requests: Sequence[tuple[str, Sequence[BudgetClaim]]], *, now: int) -> list[bool]:
        """:meth:`reserve` for each ``(reservation_id, claims)`` in order, in one transaction (one
        commit, one sync: how concurrent decisions share the cost of durability). Each request is
        all or nothing on its own and sees the ones before it; the answers are in request order.

        A fixed number of statements however many requests and claims: the keys' locks; the running
        totals moved to ``now``; the ids and the totals read (the only answer waited for before the
        writes); one insert of every reservation granted; one update of the totals of their keys.

        Raises:
            ValueError: any request :meth:`reserve` would refuse; then nothing is written.
        """
        planned = [(rid, claims, *_plan(rid, claims, now)) for rid, claims in requests]
        ids = [rid for rid, *_ in planned]
        if len(set(ids)) != len(ids):
            raise ValueError("reservation_id: one id twice in one batch")
        if not planned:
            return []
        windows = sorted({(c.key, c.window_s) for _, claims, *_ in planned for c in claims})
        answers = []
        with self._tx() as conn:
            self._lock(conn, sorted({key for *_, amounts, _ in planned for key in amounts}))
            if windows:
                self._advance(conn, windows, now)
            if time.monotonic() >= self._next_prune_reservations:
                self._next_prune_reservations = time.monotonic() + _PRUNE_EVERY_S
                # Gone only once out of every running total of their key (a total never loses a row it counts).
                self._exec(
                    conn,
                    "DELETE FROM pdp_reservations WHERE horizon <= ? AND reserved_at <="
                    " (SELECT COALESCE(MIN(w.edge), ?) FROM pdp_budget_windows w WHERE w.key = pdp_reservations.key)",
                    [now, now],
                )
            q, params = _values("q", [("reservation_id", "TEXT")], [(rid,) for rid in ids])
            taken = self._exec(
                conn,
                f"WITH {q} SELECT q.reservation_id FROM q WHERE (SELECT 1 FROM pdp_reservations r"
                " WHERE r.reservation_id = q.reservation_id LIMIT 1) IS NOT NULL",  # an index lookup per id, not a join
                params,
            )
            totals = self._windows(conn, windows, now)
            used_ids = taken.fetchall()  # the one wait: locks, totals, ids and usage answered together
            if used_ids:
                raise ValueError(f"reservation_id: {used_ids[0][0]!r} was already used")
            used = totals()
            rows: list[tuple[str, str, int, int]] = []
            added: dict[str, int] = {}
            for rid, claims, amounts, horizons in planned:
                fits = all(used[c.key, c.window_s] + c.amount <= c.limit for c in claims)
                answers.append(fits)
                for key, amount in amounts.items() if fits else ():
                    rows.append((rid, key, amount, horizons[key]))
                    added[key] = added.get(key, 0) + amount
                    for w in windows:
                        used[w] += amount if w[0] == key else 0
            if rows:
                q, params = _values(
                    "q",
                    [("reservation_id", "TEXT"), ("key", "TEXT"), ("amount", "BIGINT"), ("horizon", "BIGINT")],
                    rows,
                )
                self._exec(
                    conn,
                    f"WITH {q} INSERT INTO pdp_reservations (reservation_id, key, amount, reserved_at, horizon, state)"
                    " SELECT q.reservation_id, q.key, q.amount, CAST(? AS BIGINT), q.horizon, 'held' FROM q",
                    [*params, now],
                )
                # Into every running total of the key whose window holds ``now`` (its edge is before it).
                d, params = _values("d", [("key", "TEXT"), ("amount", "BIGINT")], sorted(added.items()))
                self._exec(
                    conn,
                    f"WITH {d} UPDATE pdp_budget_windows SET used = used"
                    " + (SELECT d.amount FROM d WHERE d.key = pdp_budget_windows.key)"
                    " WHERE key IN (SELECT key FROM d) AND edge < ?",
                    [*params, now],
                )
        return answers

    def settle(self, reservation_id: str, *, keep: bool) -> None:
        """Keeps a held reservation for good (the action ran) or releases it (it did not); a kept or
        unknown reservation is left as it is."""
        with self._tx() as conn:
            if keep:
                self._exec(
                    conn,
                    "UPDATE pdp_reservations SET state = 'kept' WHERE reservation_id = ? AND state = 'held'",
                    [reservation_id],
                )
                return
            # Serialised with reservations on the same counters, whose running totals this changes.
            keys = self._exec(
                conn, "SELECT key FROM pdp_reservations WHERE reservation_id = ? AND state = 'held'", [reservation_id]
            ).fetchall()
            if not keys:
                return
            self._lock(conn, sorted(k for (k,) in keys))
            released = self._exec(
                conn,
                "DELETE FROM pdp_reservations WHERE reservation_id = ? AND state = 'held'"
                " RETURNING key, amount, reserved_at",
                [reservation_id],
            ).fetchall()
            if not released:
                return
            # Out of every running total that counts it (one row per key: the key is part of the row's id).
            d, params = _values(
                "d", [("key", "TEXT"), ("amount", "BIGINT"), ("reserved_at", "BIGINT")], [tuple(r) for r in released]
            )
            self._exec(
                conn,
                f"WITH {d} UPDATE pdp_budget_windows SET used = used - (SELECT d.amount FROM d"
                "   WHERE d.key = pdp_budget_windows.key AND pdp_budget_windows.edge < d.reserved_at)"
                " WHERE EXISTS (SELECT 1 FROM d WHERE d.key = pdp_budget_windows.key"
                "   AND pdp_budget_windows.edge < d.reserved_at)",
                params,
            )

    # --- suspensions -----------------------------------------------------------------------------
    def suspend(self, s: Suspension) -> None:
        """Suspends ``(kind, value)``, replacing an earlier suspension of the same."""
        with self._tx() as conn:
            self._exec(
                conn,
                f"INSERT INTO pdp_suspensions ({_SUSPENSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (kind, value) DO UPDATE SET reason = excluded.reason,"
                " suspended_by = excluded.suspended_by, suspended_at = excluded.suspended_at,"
                " until_ts = excluded.until_ts",
                [s.kind, s.value, s.reason, s.by, s.at, s.until],
            )

    def resume(self, kind: str, value: str, *, by: str, now: int) -> bool:
        """Lifts the suspension of ``(kind, value)``; True if one was active. ``by`` is for the
        caller's signed log record; the store keeps no history."""
        if kind not in SUSPENSION_KINDS:
            raise ValueError(f"kind: must be one of {SUSPENSION_KINDS}, not {kind!r}")
        with self._tx() as conn:
            rows = self._exec(
                conn, "DELETE FROM pdp_suspensions WHERE kind = ? AND value = ? RETURNING until_ts", [kind, value]
            ).fetchall()
        return any(r[0] is None or int(r[0]) > now for r in rows)

    def suspensions(self, *, now: int) -> list[Suspension]:
        """The active suspensions (``until`` None or after ``now``), by kind and value."""
        with self._tx(read_only=True) as conn:
            rows = self._exec(
                conn,
                f"SELECT {_SUSPENSION_COLUMNS} FROM pdp_suspensions WHERE until_ts IS NULL OR until_ts > ?"
                " ORDER BY kind, value",
                [now],
            ).fetchall()
        return [
            Suspension(
                kind=r[0], value=r[1], reason=r[2], by=r[3], at=int(r[4]), until=None if r[5] is None else int(r[5])
            )
            for r in rows
        ]


def _values(name: str, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """A ``WITH`` item ``name (columns) AS (VALUES ...)`` holding ``rows`` (at least one), and its parameters;
    ``columns`` are ``(name, SQL type)``. (On PostgreSQL a VALUES list is planned from the rows it has, so
    a prepared statement gets a generic plan after a few runs; ``unnest`` of arrays, the same text for any
    count, was re-planned at every run and cost three times as much server time per usage read.)"""
    one = "(" + ", ".join(f"CAST(? AS {t})" for _, t in columns) + ")"
    names = ", ".join(c for c, _ in columns)
    return f"{name} ({names}) AS (VALUES {', '.join([one] * len(rows))})", [v for row in rows for v in row]


def _plan(reservation_id: str, claims: Sequence[BudgetClaim], now: int) -> tuple[dict[str, int], dict[str, int]]:
    """Each key's amount and horizon (when it leaves its largest window) for one reservation.

    Raises:
        ValueError: an empty ``reservation_id``, or one key with two amounts.
    """
    if not reservation_id:
        raise ValueError("reservation_id: must not be empty")
    amounts: dict[str, int] = {}
    horizons: dict[str, int] = {}
    for c in claims:
        if amounts.setdefault(c.key, c.amount) != c.amount:
            raise ValueError(f"claims: key {c.key!r} has two amounts; one key is one counter")
        horizons[c.key] = max(horizons.get(c.key, 0), now + c.window_s)
    return amounts, horizons
