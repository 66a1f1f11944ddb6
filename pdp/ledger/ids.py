"""Decision id → log index, owner and whether it has an outcome report, in a derived SQLite file
instead of dicts and sets on the heap.

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
from collections.abc import Iterable, Sequence
from pathlib import Path

from pdp.errors import LedgerUnavailable
from pdp.ledger.treefiles import INDEX_DIR

log = logging.getLogger(__name__)

FILE = "decisions.sqlite"
_CACHE_KIB = 512  # SQLite's page cache: the index's whole memory (interior pages; leaves come from the OS cache)


class DecisionIndex:
    """The log's decisions by id. Use :meth:`create`; thread-safe."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._spilled: dict[str, tuple[int, str]] = {}  # rows SQLite could not take yet
        self._reported_spilled: set[str] = set()  # outcome-report marks SQLite could not take yet

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
            "CREATE TABLE decisions (id TEXT PRIMARY KEY, log_index INTEGER NOT NULL, owner TEXT NOT NULL,"
            " reported INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
        )
        return cls(db)

    def add(self, rows: Sequence[tuple[str, int, str]]) -> None:
        """Records ``(decision id, log index, owner identity)`` for each row, in one transaction.

        The rows are durable in the log already, so this never fails: rows SQLite cannot take
        (e.g. the disk is full) wait in memory, are found there, and go in with the next batch.
        """
        with self._lock:
            self._write(rows)

    def mark_reported(self, decision_ids: Iterable[str]) -> None:
        """Marks decisions as having their outcome report (the log's reports, when it is rebuilt)."""
        with self._lock:
            self._reported_spilled.update(decision_ids)
            self._write(())

    def _write(self, rows: Sequence[tuple[str, int, str]]) -> None:
        pending = [*((i, *v) for i, v in self._spilled.items()), *rows]
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, 0)", pending)
            marks = [(i,) for i in self._reported_spilled]
            self._db.executemany("UPDATE decisions SET reported = 1 WHERE id = ?", marks)
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
            if not self._spilled:
                log.error("decision index: %s; keeping new decision ids in memory until it takes them", e)
            self._spilled.update((i, (index, owner)) for i, index, owner in rows)
        else:
            self._spilled.clear()
            self._reported_spilled.clear()

    def claim_report(self, decision_id: str) -> bool:
        """Marks decision ``decision_id`` (in the index) as reported; False: it was already.

        Raises:
            LedgerUnavailable: the index can be neither written nor read.
        """
        with self._lock:
            if decision_id in self._reported_spilled:
                return False
            if decision_id not in self._spilled:
                try:
                    return bool(
                        self._db.execute(
                            "UPDATE decisions SET reported = 1 WHERE id = ? AND reported = 0", (decision_id,)
                        ).rowcount
                    )
                except sqlite3.Error:
                    try:
                        row = self._db.execute("SELECT reported FROM decisions WHERE id = ?", (decision_id,)).fetchone()
                    except sqlite3.Error as e:
                        raise LedgerUnavailable(f"decision index: {e}") from None
                    if row is not None and row[0]:
                        return False
            self._reported_spilled.add(decision_id)  # goes in with the next batch
            return True

    def release_report(self, decision_id: str) -> None:
        """Undoes :meth:`claim_report` (the report could not be logged)."""
        with self._lock:
            if decision_id in self._reported_spilled:
                self._reported_spilled.discard(decision_id)
                return
            try:
                self._db.execute("UPDATE decisions SET reported = 0 WHERE id = ?", (decision_id,))
            except sqlite3.Error as e:  # rebuilt from the log at the next open, where no report is
                log.error("decision index: %s; decision %s stays marked reported until restart", e, decision_id)

    def find(self, decision_id: str) -> tuple[int, str] | None:
        """Decision ``decision_id``'s log index and the identity that asked ("" anonymous), or None:
        not in this log.

        Raises:
            LedgerUnavailable: the index cannot be read.
        """
        with self._lock:
            if decision_id in self._spilled:
                return self._spilled[decision_id]
            try:
                row = self._db.execute("SELECT log_index, owner FROM decisions WHERE id = ?", (decision_id,)).fetchone()
            except sqlite3.Error as e:
                raise LedgerUnavailable(f"decision index: {e}") from None
        return None if row is None else (int(row[0]), str(row[1]))

    def index_of(self, decision_id: str) -> int | None:
        """The log index of decision ``decision_id``, or None: not in this log."""
        found = self.find(decision_id)
        return None if found is None else found[0]

    def __len__(self) -> int:
        with self._lock:
            (n,) = self._db.execute("SELECT count(*) FROM decisions").fetchone()
            return int(n) + len(self._spilled)

    def close(self) -> None:
        with self._lock:
            self._db.close()
