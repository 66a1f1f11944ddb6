"""The log's Merkle tree with its hashes on disk: one append-only file per level, the right edge in memory.

Files in ``<log dir>/index/`` (derived data: rebuilt from the segments at every open, never fsynced):

* ``level-HH.hash``: level 0 holds the leaf hashes, level h the hash of each complete, aligned
  subtree of 2^h leaves (node j covers leaves [j·2^h, (j+1)·2^h)), 32 bytes each, in order. These
  are exactly the nodes the compact tree's merges produce, so appending writes about two hashes
  an entry.

Every subtree an RFC 6962 proof names splits into O(log n) such nodes, so an inclusion or a
consistency proof is O(log² n) 32-byte reads (``os.pread``) instead of rehashing O(n) leaves. The
proofs are byte-identical to :func:`pdp.ledger.merkle.inclusion_proof` and
:func:`pdp.ledger.merkle.consistency_proof` over the full leaf list (tested for many sizes).
"""

from __future__ import annotations

import os
from pathlib import Path

from pdp.errors import LedgerUnavailable, ProofError
from pdp.ledger import merkle

INDEX_DIR = "index"
HASH = 32
_FLUSH_EVERY = 1 << 16  # buffered leaves while rebuilding, before they go to the files


def level_name(height: int) -> str:
    """The file name of tree level ``height`` (the only place it is spelled)."""
    return f"level-{height:02d}.hash"


class DiskTree:
    """An append-only RFC 6962 tree whose node hashes live in files; memory is O(log n).

    Appends are buffered until :meth:`flush` (the log flushes once per batch, under its lock,
    before the batch is fsynced and answered), so a proof for a size up to the flushed size
    reads only whole, written hashes. Use :meth:`create`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._tree = merkle.CompactTree()  # the right edge
        self._flushed = 0  # leaves whose hashes (and the nodes they complete) are in the files
        self._fds: list[int] = []
        self._pending: list[bytearray] = []  # per level: hashes appended, not yet written

    @classmethod
    def create(cls, directory: Path) -> DiskTree:
        """An empty tree in ``directory`` (created); level files left by an earlier run are emptied.

        Raises:
            OSError: the directory or its files cannot be written.
        """
        directory.mkdir(exist_ok=True)
        self = cls(directory)
        for path in directory.glob("level-*.hash"):
            path.unlink()
        return self

    def __len__(self) -> int:
        return self._tree.size

    def append(self, entry: bytes) -> None:
        self.append_hash(merkle.leaf_hash(entry))

    def append_hash(self, h: bytes) -> None:
        """Appends a leaf hash (buffered until :meth:`flush`)."""
        for height, node in enumerate(self._tree.push(h)):
            self._pending_at(height).extend(node)
        if self._tree.size - self._flushed >= _FLUSH_EVERY:
            self.flush()

    def _pending_at(self, height: int) -> bytearray:
        while len(self._pending) <= height:
            self._pending.append(bytearray())
        return self._pending[height]

    def flush(self) -> None:
        """Writes the buffered hashes to their level files.

        Raises:
            OSError: a write failed (the tree keeps them buffered; the caller fails the log).
        """
        for height, buf in enumerate(self._pending):
            if not buf:
                continue
            fd = self._fd(height)
            offset = (self._flushed >> height) * HASH
            view = memoryview(buf)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            view.release()
            buf.clear()
        self._flushed = self._tree.size

    def _fd(self, height: int) -> int:
        while len(self._fds) <= height:
            path = self.directory / level_name(len(self._fds))
            self._fds.append(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        return self._fds[height]

    def truncate(self, n: int) -> None:
        """Keeps the first ``n`` leaves (the log cutting entries that never became durable).

        Raises:
            OSError: the files cannot be cut or read.
        """
        if not 0 <= n <= self._flushed:
            raise ValueError(f"cannot cut a tree of {self._flushed} flushed leaves to {n}")
        self._pending = []
        for height, fd in enumerate(self._fds):
            os.ftruncate(fd, (n >> height) * HASH)
        self._flushed = n
        edge, start = [], 0
        for height in reversed(range(n.bit_length())):
            if n >> height & 1:
                edge.append(self._node(height, start >> height))
                start += 1 << height
        self._tree = merkle.CompactTree(n, edge)

    def root(self) -> bytes:
        """The root of the whole tree (from the right edge, no reads)."""
        return self._tree.root()

    def leaf(self, index: int) -> bytes:
        """Leaf hash ``index`` (flushed leaves only)."""
        return self._node(0, index)

    def _node(self, height: int, j: int) -> bytes:
        if not self._fds:
            raise LedgerUnavailable("the log is closed")
        if (j + 1) << height > self._flushed:
            raise ProofError(f"node {j} of level {height} is not in a tree of {self._flushed} written leaves")
        data = os.pread(self._fds[height], HASH, j * HASH)
        if len(data) != HASH:
            raise LedgerUnavailable(f"{level_name(height)} is shorter than the tree it holds (node {j})")
        return data

    def subtree_root(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) of RFC 6962 over the leaves in [start, end), end > start."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # a complete, aligned subtree: one node on disk
            return self._node(n.bit_length() - 1, start // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return merkle.node_hash(self.subtree_root(start, start + k), self.subtree_root(start + k, end))

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH(index, D[size]) of RFC 6962 §2.1.1, equal to :func:`merkle.inclusion_proof`."""
        if not 0 <= index < size:
            raise ProofError(f"index {index} is outside a tree of {size}")
        if size > self._flushed:
            raise ProofError(f"no proof in a tree of {size}: the log holds {self._flushed}")
        path: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = 1 << ((end - start - 1).bit_length() - 1)
            if index < start + k:
                path.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_root(start, start + k))
                start += k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF(old_size, D[new_size]) of RFC 6962 §2.1.2, equal to :func:`merkle.consistency_proof`."""
        if not 0 < old_size <= new_size or new_size > self._flushed:
            raise ProofError(f"no consistency proof from size {old_size} to {new_size}")
        path: list[bytes] = []
        start, end, m, complete = 0, new_size, old_size, True
        while m != end:
            k = 1 << ((end - start - 1).bit_length() - 1)
            if m - start <= k:
                path.append(self.subtree_root(start + k, end))
                end = start + k
            else:
                path.append(self.subtree_root(start, start + k))
                start, complete = start + k, False
        if not complete:
            path.append(self.subtree_root(start, end))
        path.reverse()
        return path

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
