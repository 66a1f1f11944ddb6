"""The embedded backend: one SQLite file, ``state.sqlite3`` in ``PDP_STATE_DIR``.

Several processes on one machine may share the file. Every operation that writes is a ``BEGIN
IMMEDIATE`` transaction (reads of usage and suspensions are one statement on a WAL snapshot), so writers are
serialised by SQLite's database lock (waiting up to ``busy_timeout_s``)
and a read-check-write such as a budget reservation sees no other writer in between. The file is in
WAL mode with ``synchronous=FULL``: a committed "used" id survives a crash.

The file is created (with its schema) when the store opens, never afterwards: connections open it
``mode=rw``, and before each transaction the store checks that the path is still the file it opened.
A file removed or replaced (by one that is not a database, or by an empty one) makes every operation
raise :class:`pdp.state.StateUnavailable` rather than start again from an empty state that would
accept a replayed token.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pdp.state import StateUnavailable
from pdp.state._sql import SqlStore

FILENAME = "state.sqlite3"


class SqliteStore(SqlStore):
    """:class:`pdp.state.StateStore` on ``directory / state.sqlite3``."""

    _backend_errors: ClassVar[tuple[type[Exception], ...]] = (sqlite3.Error, OSError)

    def __init__(self, directory: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = directory / FILENAME
        self._busy_timeout_s = busy_timeout_s
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._opened: sqlite3.Connection | None = self._enter_wal()
            st = self.path.stat()
        except (sqlite3.Error, OSError) as e:
            raise StateUnavailable(f"{self.path}: {type(e).__name__}: {e}") from e
        self._identity = (st.st_dev, st.st_ino)
        super().__init__(name=str(self.path))

    def _enter_wal(self) -> sqlite3.Connection:
        """A first connection (creating the file), with the file in WAL mode (a setting the file keeps),
        waiting up to ``busy_timeout_s``.

        Switching the journal mode takes an exclusive lock without SQLite's busy handler, so processes
        opening a new file together get "database is locked" at once; this waits for them instead.
        The connection is kept (it becomes the pool's first): closing what may be the database's last
        connection checkpoints and removes the WAL under an exclusive lock, which a process opening the
        file at that moment would meet as "database is locked".
        """
        deadline = time.monotonic() + self._busy_timeout_s
        pause = 0.005
        while True:
            conn = self._connect(create=True)
            try:
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
                    return conn
                locked: sqlite3.Error = sqlite3.OperationalError("could not switch to WAL mode")
            except sqlite3.OperationalError as e:
                if "locked" not in str(e):
                    conn.close()
                    raise
                locked = e
            conn.close()
            if time.monotonic() >= deadline:
                raise locked
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _check(self) -> None:
        try:
            st = self.path.stat()
        except OSError as e:
            raise StateUnavailable(f"{self.path}: the state file is gone ({e.strerror})") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise StateUnavailable(f"{self.path}: the state file was replaced since it was opened")

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if not create and self._opened is not None:
            conn, self._opened = self._opened, None
            return conn
        conn = sqlite3.connect(
            self.path.absolute().as_uri() + ("?mode=rwc" if create else "?mode=rw"),
            uri=True,
            timeout=self._busy_timeout_s,
            isolation_level=None,  # transactions are ours: BEGIN IMMEDIATE ... COMMIT
            check_same_thread=False,  # a pooled connection serves one thread at a time
        )
        conn.execute("PRAGMA synchronous=FULL")
        # A statement that writes several rows keeps a statement journal (to undo just itself); in memory,
        # not in a temporary file, it costs what one-row statements do. The transaction's durability is the WAL's.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    @contextlib.contextmanager
    def _transaction(self, conn: sqlite3.Connection, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
        if read_only:  # one statement: its own WAL snapshot, waiting for no writer
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
