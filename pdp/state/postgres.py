"""The replicated backend: PostgreSQL (``PDP_STATE_URL=postgresql://user@host:port/db``).

Every operation is one transaction at READ COMMITTED on a pooled connection (autocommit off only
inside it). Races are settled by the database, never by the PDP: single use is an
``INSERT ... ON CONFLICT ... RETURNING``; a vote locks its escalation row (``SELECT ... FOR UPDATE``);
a budget reservation takes a transaction advisory lock per key (``pg_advisory_xact_lock``, all its
keys in one statement, in key order, so two reservations never deadlock) before it sums the window,
so every statement after the lock sees the reservations committed before it; expiry and closing are
single ``UPDATE ... RETURNING`` statements, so of two replicas each row moves for exactly one. Schema
creation takes an advisory lock too (concurrent ``CREATE TABLE IF NOT EXISTS`` can otherwise collide).

Round trips: a transaction's ``BEGIN`` is one (alone, so that a stale pooled connection is found
before anything else is sent); then its statements go in pipeline mode, so that the server gets
every statement up to the first one whose answer is read in one exchange, and the writes after it
with the ``COMMIT`` in one more. A budget reservation group is three round trips whatever its size
(``BEGIN``; locks, totals moved and read; the writes and ``COMMIT``).

Connections are opened with ``connect_timeout`` and a ``statement_timeout``/``lock_timeout``: a
server that is down, unreachable or stuck raises :class:`pdp.state.StateUnavailable` within seconds.
A pooled connection broken by a server restart (or a failover) is noticed when its ``BEGIN`` fails and
is replaced by a fresh connection before anything else is sent; a connection that breaks inside a
transaction fails that call (StateUnavailable: the transaction did not commit, or its outcome is
unknown) and is never reused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import ClassVar

import psycopg

from pdp.state._sql import SqlStore


class PostgresStore(SqlStore):
    """:class:`pdp.state.StateStore` on a PostgreSQL database."""

    _for_update: ClassVar[str] = " FOR UPDATE"
    _backend_errors: ClassVar[tuple[type[Exception], ...]] = (psycopg.Error,)
    _retry_stale: ClassVar[bool] = True

    def __init__(self, url: str, *, connect_timeout_s: int = 3, statement_timeout_ms: int = 10_000) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._options = f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={statement_timeout_ms}"
        super().__init__(name=f"postgresql state store {psycopg.conninfo.conninfo_to_dict(url).get('dbname', '')}")

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self._connect_timeout_s,
            options=self._options,
            application_name="pdp-state",
        )

    @contextlib.contextmanager
    def _transaction(
        self, conn: psycopg.Connection[tuple[object, ...]], *, read_only: bool = False
    ) -> Iterator[object]:
        if read_only:  # one statement, atomic on its own: no BEGIN and COMMIT round trips
            yield conn
            return
        conn.execute("BEGIN")  # its own round trip: a connection the server dropped fails here, before anything
        try:
            with conn.pipeline():  # sent as they come, answered when one is read (a flush) and at COMMIT (a sync)
                yield conn
                conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")  # on a broken connection this fails too, and the connection is dropped
            raise

    def _lock(self, conn: psycopg.Connection[tuple[object, ...]], keys: Sequence[str]) -> None:
        if keys:  # one statement, in the order given: callers sort, so lockers never deadlock
            rows = ", ".join(f"({i}, CAST(%s AS TEXT))" for i in range(len(keys)))  # the keys are bound
            conn.execute(
                f"SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM (VALUES {rows}) AS u (i, k) ORDER BY i",  # noqa: S608
                tuple(keys),
            )

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")
