"""Decision id → log index and owner, in a derived SQLite file instead of two dicts on the heap.

``<log dir>/index/decisions.sqlite`` is rebuilt at every open from the log (the recorder reads
every entry at open anyway, for the outcome reports), so it needs no durability of its own:
journal and fsync are off, and a crash at any point costs nothing but the rebuild. Rows are
added once per group-commit batch (one ``executemany``), after the batch is durable, and read by
point lookups; memory is SQLite's bounded page cache, not a few hundred bytes an entry.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from pdp.ledger.treefiles import INDEX_DIR

log = logging.getLogger(__name__)

FILE = "decisions.sqlite"
_CACHE_KIB = 512  # SQLite's page cache: the index's whole memory (interior pages; leaves come from the OS cache)
T = TypeVar("T")


class DecisionIndex:
    """The log's decisions by id. Use :meth:`create`; thread-safe."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._spilled: dict[str, tuple[int, str]] = {}  # rows SQLite could not take yet
        self.indexes = _Get(self.index_of)
        self.owners = _Get(self.owner_of)

    @classmethod
    def create(cls, log_dir: Path) -> DecisionIndex:
        """An empty index in ``log_dir``/index (a file left by an earlier run is replaced).

        Raises:
            OSError, sqlite3.Error: the file cannot be made.
        """
        directory = log_dir / INDEX_DIR
        directory.mkdir(parents=True, exist_ok=True)
        for name in (FILE, f"{FILE}-journal", f"{FILE}-wal", f"{FILE}-shm"):
            (directory / name).unlink(missing_ok=True)
        db = sqlite3.connect(directory / FILE, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        db.execute(
            "CREATE TABLE decisions (id TEXT PRIMARY KEY, log_index INTEGER NOT NULL, owner TEXT NOT NULL)"
            " WITHOUT ROWID"
        )
        return cls(db)

    def add(self, rows: Sequence[tuple[str, int, str]]) -> None:
        """Records ``(decision id, log index, owner identity)`` for each row, in one transaction.

        The rows are durable in the log already, so this never fails: rows SQLite cannot take
        (e.g. the disk is full) wait in memory, are found there, and go in with the next batch.
        """
        with self._lock:
            pending = [*((i, *v) for i, v in self._spilled.items()), *rows]
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?)", pending)
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                if not self._spilled:
                    log.error("decision index: %s; keeping new decision ids in memory until it takes them", e)
                self._spilled.update((i, (index, owner)) for i, index, owner in rows)
            else:
                self._spilled.clear()

    def index_of(self, decision_id: str) -> int | None:
        """The log index of decision ``decision_id``, or None: not in this log."""
        row = self._row(decision_id)
        return None if row is None else int(row[0])

    def owner_of(self, decision_id: str) -> str | None:
        """The identity that asked for decision ``decision_id`` ("" anonymous), or None: not in this log."""
        row = self._row(decision_id)
        return None if row is None else str(row[1])

    def _row(self, decision_id: str) -> tuple[Any, ...] | None:
        with self._lock:
            if decision_id in self._spilled:
                return self._spilled[decision_id]
            row: tuple[Any, ...] | None = self._db.execute(
                "SELECT log_index, owner FROM decisions WHERE id = ?", (decision_id,)
            ).fetchone()
        return row

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM decisions").fetchone()
            return int(n) + len(self._spilled)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Get(Generic[T]):
    """A lookup with a mapping's ``get`` (``index.indexes.get(id)``, ``index.owners.get(id)``)."""

    def __init__(self, lookup: Callable[[str], T | None]) -> None:
        self.get = lookup
