"""The append-only, durable decision log: group commit, sealing segments, checkpoints, recovery.

The files and their framing are :mod:`pdp.ledger.files` (shared with the auditor). A full
segment is sealed: a checkpoint at its last entry, fsync, then mode 0444. Bytes cut from a torn
tail at start-up are kept aside as ``*.torn-<time>`` for inspection.

Leaf i of the RFC 6962 tree is entry i across the segments in order. :meth:`Log.append` returns
only after the entry is fsynced; concurrent appends share one fsync (group commit).

The tree's hashes live in ``index/level-HH.hash`` (:mod:`pdp.ledger.treefiles`): derived data,
rebuilt at every open from the segments recovery reads anyway, written per batch without fsync,
cut with the log; so are the entries' positions (``index/positions.bin``, :mod:`pdp.ledger.positions`).
Memory holds only the tree's right edge: O(log n), not O(n).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pdp.errors import CheckpointError, LedgerCorrupt, LedgerUnavailable, PdpError
from pdp.ledger import checkpoint, merkle
from pdp.ledger.checkpoint import note_verifiers
from pdp.ledger.files import CHECKPOINTS, Damage, Frame, frame, read_frames, read_payload_at, segment_name, segments
from pdp.ledger.positions import Positions
from pdp.ledger.treefiles import INDEX_DIR, DiskTree

__all__ = ["CHECKPOINTS", "Damage", "Frame", "Log", "frame", "note_verifiers", "read_frames", "segments"]

log = logging.getLogger(__name__)

_PROBE_BYTES = 1 << 20  # room a recovering log must find free past its end


class Log:
    """One PDP's decision log. Use :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        *,
        signing_key: Ed25519PrivateKey,
        verifiers: dict[tuple[str, bytes], Ed25519PublicKey],
        origin: str,
        checkpoint_every: int,
        checkpoint_interval_s: float,
        segment_max_bytes: int,
        on_sync: Callable[[float], None] | None = None,
    ) -> None:
        self.directory = directory
        self._on_sync = on_sync
        self.origin = origin
        self._key = signing_key
        self._verifiers = verifiers
        self._every = checkpoint_every
        self._interval = checkpoint_interval_s
        self._segment_max = segment_max_bytes
        self.tree = DiskTree(directory / INDEX_DIR)  # replaced by DiskTree.create when opened
        self._where: Positions | None = None  # entry index → segment number, frame offset (a file; set at open)
        self._segment_first = 0  # the index of the current segment's first entry
        self._lock = threading.Lock()  # appends, rotation, checkpoints
        self._cond = threading.Condition()  # group commit
        self._written = self._synced = 0
        self._syncing = False
        self._failure: str | None = None
        self._notes: list[bytes] = []
        self._checkpointed = 0
        self._segment_no = 0
        self._segment_bytes = 0
        self._fd = -1
        self._cp_fd = -1
        self._cp_bytes = 0  # the checkpoint file's size after its last whole, fsynced note
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._checkpointer, name="ledger-checkpoints", daemon=True)

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        signing_key: Ed25519PrivateKey,
        public_keys: dict[str, Ed25519PublicKey],
        origin: str,
        checkpoint_every: int = 1000,
        checkpoint_interval_s: float = 1.0,
        segment_max_bytes: int = 64 << 20,
        on_sync: Callable[[float], None] | None = None,
    ) -> Log:
        """Opens (or creates) the log, recovering a torn tail and refusing a damaged past.

        ``on_sync`` is told how long each group commit's fdatasync took (seconds).

        Raises:
            LedgerCorrupt: damage at or before the last checkpoint.
            LedgerUnavailable: the directory cannot be written.
        """
        self = cls(
            directory,
            signing_key=signing_key,
            verifiers=note_verifiers(origin, public_keys),
            origin=origin,
            checkpoint_every=checkpoint_every,
            checkpoint_interval_s=checkpoint_interval_s,
            segment_max_bytes=segment_max_bytes,
            on_sync=on_sync,
        )
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self.tree = DiskTree.create(directory / INDEX_DIR)
            self._where = Positions.create(directory / INDEX_DIR)
            self._recover()
        except OSError as e:
            raise LedgerUnavailable(f"cannot open the decision log in {directory}: {e}") from None
        self._thread.start()
        return self

    # -- recovery -------------------------------------------------------------------------

    def _recover(self) -> None:
        notes = self._recover_checkpoints()
        by_size = {cp.size: cp for cp, _ in notes}
        last = notes[-1][0] if notes else None
        files = segments(self.directory)
        where = self._positions()
        for no, path in enumerate(files):
            if path.name != segment_name(no):
                raise LedgerCorrupt(f"{path.name}: segment {no} is missing (entries deleted?)")
            self._segment_first = len(self.tree)
            frames, damage = read_frames(path.read_bytes())
            for f in frames:
                self.tree.append(f.payload)
                where.append(no, f.offset)
                cp = by_size.get(len(self.tree))
                if cp is not None and cp.root != self.tree.root():
                    raise LedgerCorrupt(
                        f"{path.name}: the entries up to index {len(self.tree) - 1} do not hash to the "
                        f"checkpointed root of size {cp.size}: an entry was changed, removed or reordered"
                    )
            if damage is not None:
                index = len(self.tree)
                if (last is not None and index < last.size) or no != len(files) - 1:
                    raise LedgerCorrupt(
                        f"{path.name} offset {damage.offset}: {damage.why} at entry {index}, "
                        "before the last checkpoint: refusing to start"
                    )
                self._cut_torn_tail(path, damage, index)
        self.tree.flush()
        where.flush()
        if last is not None and len(self.tree) < last.size:
            raise LedgerCorrupt(
                f"the log holds {len(self.tree)} entries but checkpoint says {last.size}: entries were removed"
            )
        self._written = self._synced = len(self.tree)
        self._notes = [raw for _, raw in notes]
        self._checkpointed = last.size if last else 0
        if files and files[-1].stat().st_mode & 0o222 == 0:
            self._segment_no = len(files)  # the last one was sealed
            self._segment_first = len(self.tree)
        else:
            self._segment_no = max(len(files) - 1, 0)
        self._open_segment()
        self._cp_fd = os.open(self.directory / CHECKPOINTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._cp_bytes = os.fstat(self._cp_fd).st_size
        _fsync_dir(self.directory)

    def _recover_checkpoints(self) -> list[tuple[checkpoint.Checkpoint, bytes]]:
        path = self.directory / CHECKPOINTS
        if not path.exists():
            return []
        frames, damage = read_frames(path.read_bytes())
        notes: list[tuple[checkpoint.Checkpoint, bytes]] = []
        for f in frames:
            try:
                cp = checkpoint.open_note(f.payload, self._verifiers)
            except CheckpointError as e:
                raise LedgerCorrupt(f"{CHECKPOINTS} offset {f.offset}: {e}") from None
            if cp.origin != self.origin or (notes and cp.size < notes[-1][0].size):
                raise LedgerCorrupt(f"{CHECKPOINTS} offset {f.offset}: a checkpoint of another log or out of order")
            notes.append((cp, f.payload))
        if damage is not None:
            self._cut_torn_tail(path, damage, None)
        return notes

    def _cut_torn_tail(self, path: Path, damage: Damage, index: int | None) -> None:
        aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        with path.open("r+b") as f:
            f.seek(damage.offset)
            aside.write_bytes(f.read())
            f.truncate(damage.offset)
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "decision log: cut a torn tail of %s at offset %d (%s)%s; the bytes are kept in %s",
            path.name,
            damage.offset,
            damage.why,
            "" if index is None else f", from entry {index} on (never answered: not yet durable)",
            aside.name,
        )

    def _open_segment(self) -> None:
        path = self.directory / segment_name(self._segment_no)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._segment_bytes = os.fstat(self._fd).st_size

    # -- appending ------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._failure is None

    def size(self) -> int:
        return self._synced

    def append(self, make_entry: Callable[[int], bytes]) -> int:
        """Appends ``make_entry(index)`` and returns its index once it is durable.

        Raises:
            LedgerUnavailable: the entry may not be durable; the log accepts nothing more.
        """
        return self.append_all([make_entry])[0]

    def append_all(self, make_entries: Sequence[Callable[[int], bytes]]) -> list[int]:
        """Appends ``make(index)`` for each of ``make_entries``, in order, at consecutive indexes,
        and returns the indexes once all of them are durable (one group commit for them all).

        Raises:
            LedgerUnavailable: the entries may not be durable; the log accepts nothing more.
        """
        if not make_entries:
            return []
        indexes = []
        if self._failure is not None:
            self.recover()  # space may be back
        with self._lock:
            self._check()
            where = self._positions()
            for make_entry in make_entries:
                index = len(self.tree)
                payload = make_entry(index)
                data = frame(payload)
                try:
                    _write_all(self._fd, data)
                except OSError as e:
                    self._fail(f"write failed: {e}")
                self.tree.append(payload)
                where.append(self._segment_no, self._segment_bytes)
                self._segment_bytes += len(data)
                self._written = index + 1
                indexes.append(index)
                if self._segment_bytes >= self._segment_max:
                    self._flush_tree()
                    self._rotate()
            self._flush_tree()
        self._sync_until(indexes[-1] + 1)
        if self._written - self._checkpointed >= self._every:
            self._wake.set()
        return indexes

    def _positions(self) -> Positions:
        if self._where is None:
            raise LedgerUnavailable("the decision log is not open")
        return self._where

    def _flush_tree(self) -> None:
        """The batch's tree hashes and positions to their files (page cache, no fsync: rebuilt at open),
        before it is answered."""
        try:
            self.tree.flush()
            self._positions().flush()
        except OSError as e:
            self._fail(f"cannot write the log's index files: {e}")

    def _check(self) -> None:
        if self._failure is not None:
            raise LedgerUnavailable(f"the decision log is not writable: {self._failure}")

    def _fail(self, why: str) -> NoReturn:
        self._mark_failed(why)
        raise LedgerUnavailable(f"the decision log is not writable: {why}")

    def recover(self) -> bool:
        """Re-probes a failed log (e.g. the disk was full and has space again); True: it takes entries.

        Only what was answered as durable is kept: entries written after the last successful
        fsync were refused to their callers, so they are cut off the segment (and the tree), as is
        a torn checkpoint frame. The probe reserves room past the end of the segment (fallocate)
        and gives it back; the segment is then re-read and must be exactly the entries kept.
        A closed log, or one that failed starting a new segment, stays failed (restart).
        """
        with self._lock, self._cond:
            if self._failure is None:
                return True
            if self._failure == "closed" or self._syncing or self._fd < 0:
                return False
            keep, where = self._synced, self._positions()
            try:
                seg, offset = where.get(keep) if keep < len(where) else (self._segment_no, self._segment_bytes)
            except (OSError, PdpError):
                seg, offset = -1, 0  # cannot tell where the kept entries end: restart to recover
            if seg != self._segment_no:
                return False
            try:
                os.posix_fallocate(self._fd, offset, _PROBE_BYTES)
                os.ftruncate(self._fd, offset)
                os.fdatasync(self._fd)
                os.ftruncate(self._cp_fd, self._cp_bytes)
                os.fsync(self._cp_fd)
                data = (self.directory / segment_name(seg)).read_bytes()
            except OSError:
                return False
            first = self._segment_first
            frames, damage = read_frames(data)
            if damage is not None or len(frames) != keep - first or not self._cut_tree(frames, first, keep):
                log.error("decision log: after the failure the segment is not the entries kept; restart to recover")
                return False
            self._written = keep
            self._segment_bytes = offset
            log.warning("decision log writable again (%d entries kept; was: %s)", keep, self._failure)
            self._failure = None
            return True

    def _cut_tree(self, frames: Sequence[Frame], first: int, keep: int) -> bool:
        """Whether ``frames`` are the tree's leaves from ``first`` on; then cuts the tree and its files to ``keep``."""
        try:
            if all(merkle.leaf_hash(f.payload) == self.tree.leaf(first + i) for i, f in enumerate(frames)):
                self.tree.truncate(keep)
                self._positions().truncate(keep)
                return True
        except (OSError, PdpError):
            pass
        return False

    def _mark_failed(self, why: str) -> None:
        """The log takes nothing more until :meth:`recover`; said once, and every waiter is woken to see it."""
        with self._cond:  # re-entrant: callers may already hold it
            if self._failure is None:
                log.error("decision log failed, no decision can be recorded until it recovers: %s", why)
                self._failure = why
            self._cond.notify_all()

    def _sync_until(self, n: int) -> None:
        with self._cond:
            while self._synced < n:
                self._check()
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, fd = self._written, self._fd
                self._cond.release()
                try:
                    began = time.perf_counter()
                    os.fdatasync(fd)
                    error = None
                    if self._on_sync is not None:
                        self._on_sync(time.perf_counter() - began)
                except OSError as e:
                    error = e
                finally:
                    self._cond.acquire()
                    self._syncing = False
                if error is not None:
                    self._mark_failed(f"fsync failed: {error}")
                else:
                    self._synced = max(self._synced, target)
                    self._cond.notify_all()

    def _quiesce(self) -> None:
        """Makes everything written durable; called with ``_lock`` held."""
        with self._cond:
            while self._syncing:
                self._cond.wait()
            try:
                os.fdatasync(self._fd)
            except OSError as e:
                self._fail(f"fsync failed: {e}")
            self._synced = self._written
            self._cond.notify_all()

    def _rotate(self) -> None:
        self._quiesce()
        self._write_checkpoint()
        path = self.directory / segment_name(self._segment_no)
        try:
            os.close(self._fd)
            self._fd = -1
            path.chmod(0o444)
            self._segment_no += 1
            self._segment_first = self._written
            self._open_segment()
            _fsync_dir(self.directory)
        except OSError as e:  # e.g. the directory turned read-only: nothing more can be appended
            self._fail(f"cannot start segment {self._segment_no}: {e}")

    # -- checkpoints ----------------------------------------------------------------------

    def _checkpointer(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            # A failed log has said so once; appends refuse from then on.
            with contextlib.suppress(LedgerUnavailable):
                self.checkpoint_now()

    def checkpoint_now(self) -> bytes:
        """Signs and stores a checkpoint of everything appended so far (if there is anything new)."""
        with self._lock:
            self._check()
            if self._written > self._checkpointed or not self._notes:
                self._quiesce()
                self._write_checkpoint()
            return self._notes[-1]

    def _write_checkpoint(self) -> None:
        cp = checkpoint.Checkpoint(self.origin, len(self.tree), self.tree.root())
        note = checkpoint.sign(cp, name=self.origin, key=self._key)
        try:
            _write_all(self._cp_fd, frame(note))
            os.fsync(self._cp_fd)
        except OSError as e:
            self._fail(f"checkpoint write failed: {e}")
        self._cp_bytes += len(frame(note))
        self._notes.append(note)
        self._checkpointed = cp.size

    # -- reading and proofs ---------------------------------------------------------------

    def entry(self, index: int) -> bytes:
        no, offset = self._positions().get(index)
        return read_payload_at(self.directory / segment_name(no), offset)

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """Every durable entry with its index, reading each segment once."""
        index = 0
        for path in segments(self.directory):
            for f in read_frames(path.read_bytes())[0]:
                if index >= self._synced:
                    return
                yield index, f.payload
                index += 1

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        """PATH(index, D[tree_size]): O(log² n) reads of the tree's files, no rehashing of leaves."""
        return self.tree.inclusion_proof(index, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]): O(log² n) reads of the tree's files."""
        return self.tree.consistency_proof(old_size, new_size)

    def close(self) -> None:
        """Final checkpoint, then closes; appends after this fail."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)
        with self._lock:
            if self._failure is None:
                try:
                    if self._written > self._checkpointed:
                        self._quiesce()
                        self._write_checkpoint()
                except LedgerUnavailable:
                    pass
                self._failure = "closed"
            for fd in (self._fd, self._cp_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._cp_fd = -1
            self.tree.close()
            if self._where is not None:
                self._where.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
