"""Where each log entry is: segment number and frame offset, 12 bytes an entry in a derived file.

``<log dir>/index/positions.bin`` holds, for entry i at byte 12·i, the big-endian segment number
(4 bytes) and frame offset (8 bytes). Like the tree's files it is rebuilt at every open from the
segments, written per group-commit batch without fsync, and cut with the log; memory holds only
the batch not yet written.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from pdp.errors import LedgerUnavailable

FILE = "positions.bin"
_POSITION = struct.Struct(">IQ")
_FLUSH_BYTES = 1 << 20  # while rebuilding at open


class Positions:
    """Entry index → (segment number, frame offset). Use :meth:`create`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._flushed = 0
        self._pending = bytearray()

    @classmethod
    def create(cls, directory: Path) -> Positions:
        """An empty file in ``directory`` (which must exist); one left by an earlier run is emptied.

        Raises:
            OSError: it cannot be made.
        """
        return cls(os.open(directory / FILE, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644))

    def __len__(self) -> int:
        return self._flushed + len(self._pending) // _POSITION.size

    def append(self, segment: int, offset: int) -> None:
        """Buffers one entry's position (written by :meth:`flush`, or on its own past 1 MiB)."""
        self._pending += _POSITION.pack(segment, offset)
        if len(self._pending) >= _FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Writes the buffered positions.

        Raises:
            OSError: the write failed (they stay buffered).
        """
        view = memoryview(self._pending)
        at = self._flushed * _POSITION.size
        while view:
            written = os.pwrite(self._fd, view, at)
            view, at = view[written:], at + written
        view.release()
        self._flushed = len(self)
        self._pending.clear()

    def get(self, index: int) -> tuple[int, int]:
        """Where entry ``index`` is: (segment number, frame offset)."""
        if self._fd < 0:
            raise LedgerUnavailable("the decision log is closed")
        if not 0 <= index < len(self):
            raise LedgerUnavailable(f"entry {index} is not in a log of {len(self)} entries")
        if index >= self._flushed:  # a batch not written yet (its write failed: the log is cutting it)
            data = bytes(self._pending[(index - self._flushed) * _POSITION.size :][: _POSITION.size])
        else:
            data = os.pread(self._fd, _POSITION.size, index * _POSITION.size)
        if len(data) != _POSITION.size:
            raise LedgerUnavailable(f"{FILE} is shorter than the log (entry {index})")
        segment, offset = _POSITION.unpack(data)
        return int(segment), int(offset)

    def truncate(self, n: int) -> None:
        """Keeps the first ``n`` positions.

        Raises:
            OSError: the file cannot be cut.
        """
        self._pending.clear()
        os.ftruncate(self._fd, n * _POSITION.size)
        self._flushed = min(self._flushed, n)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
