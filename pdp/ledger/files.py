"""The decision log's files and framing, in one place for the writer (:mod:`pdp.ledger.log`) and
the auditor (:mod:`pdp.ledger.audit`).

Files in the log directory:

* ``segment-NNNNNN.log`` (:func:`segment_name`): entries, each framed as 4-byte big-endian
  length ‖ payload ‖ 4-byte big-endian CRC-32 (zlib) of length ‖ payload. The payload is the
  exact bytes handed in (a JWS). Leaf i of the RFC 6962 tree is entry i across the segments in order.
* ``checkpoints.log`` (:data:`CHECKPOINTS`): signed checkpoints (C2SP signed notes), framed the same way.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import zlib
from pathlib import Path

_HEAD = struct.Struct(">I")
_SEGMENT = re.compile(r"^segment-(\d{6})\.log$")
CHECKPOINTS = "checkpoints.log"
MAX_ENTRY = 16 << 20


def frame(payload: bytes) -> bytes:
    head = _HEAD.pack(len(payload))
    return head + payload + _HEAD.pack(zlib.crc32(head + payload))


@dataclasses.dataclass(frozen=True, slots=True)
class Frame:
    """One whole, CRC-checked frame: where it starts in its file, and its payload."""

    offset: int
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Damage:
    """Where a file stops being whole frames, and why."""

    offset: int
    why: str


def read_frames(data: bytes) -> tuple[list[Frame], Damage | None]:
    """Every whole, CRC-checked frame of a file, and where the first bad one starts."""
    frames: list[Frame] = []
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            return frames, Damage(pos, "a frame is cut short")
        (n,) = _HEAD.unpack_from(data, pos)
        if n > MAX_ENTRY or pos + 8 + n > len(data):
            return frames, Damage(pos, "a frame is cut short or its length is corrupt")
        payload = data[pos + 4 : pos + 4 + n]
        (crc,) = _HEAD.unpack_from(data, pos + 4 + n)
        if zlib.crc32(data[pos : pos + 4 + n]) != crc:
            return frames, Damage(pos, "a frame's CRC does not match its bytes")
        frames.append(Frame(pos, payload))
        pos += 8 + n
    return frames, None


def segments(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if _SEGMENT.match(p.name))


def segment_name(no: int) -> str:
    """The file name of segment number ``no`` (the only place it is spelled)."""
    return f"segment-{no:06d}.log"


def read_payload_at(path: Path, offset: int) -> bytes:
    """The payload of the frame at ``offset`` in ``path`` (a frame already checked when it was read or written)."""
    with path.open("rb") as f:
        f.seek(offset)
        (n,) = _HEAD.unpack(f.read(4))
        return f.read(n)
