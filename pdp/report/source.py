"""The report's input: a log directory verified with ``verify_log``, bound to its latest checkpoint.

The figures are computed from exactly the records that verified, in one pass: ``verify_log`` hands
each verified entry over with its verified claims, and checks every checkpoint's root against the
root of the entries before it; the report counts the entries up to the latest signed checkpoint
and requires that checkpoint to be one ``verify_log`` checked. So a report names one checkpoint
(origin, size, root) and anyone holding the log and the public keys can recompute it.
"""

from __future__ import annotations

import base64
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pdp.errors import CheckpointError, PdpError
from pdp.keys import public_keys
from pdp.ledger import checkpoint
from pdp.ledger.audit import verify_log
from pdp.ledger.log import CHECKPOINTS, note_verifiers, read_frames
from pdp.report.entries import Entry, entry_of

PROGRESS_FROM = 10_000  # entries; smaller logs verify in well under a second


class ReportError(PdpError):
    """The log cannot be reported on (no checkpoint, or it changed while it was read)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """What the report was computed from."""

    checkpoint: checkpoint.Checkpoint
    note: bytes
    entries_verified: int
    checkpoints: int
    kids: tuple[str, ...]
    note_keys: tuple[str, ...]

    def provenance(self) -> dict[str, Any]:
        """The ``provenance`` figures: enough to reproduce the report."""
        cp = self.checkpoint
        return {
            "checkpoint": {
                "origin": cp.origin,
                "size": cp.size,
                "root_base64": base64.b64encode(cp.root).decode(),
                "root_hex": cp.root.hex(),
                "note": self.note.decode(),
            },
            "log": {
                "entries_verified": self.entries_verified,
                "checkpoints": self.checkpoints,
                "entries_after_checkpoint": self.entries_verified - cp.size,
            },
            "keys": {"kids": list(self.kids), "note_verifier_keys": list(self.note_keys)},
        }


def read(log_dir: Path, *, jwks: dict[str, Any], on_entry: Callable[[Entry], None], progress: bool = True) -> Source:
    """Verifies the log and passes each entry up to its latest checkpoint to ``on_entry``, in order.

    Raises:
        AuditError: the log does not verify (nothing was reported).
        ReportError: no checkpoint, or the entries read do not hash to it.
    """
    keys = public_keys(jwks)
    cp, note = _latest_checkpoint(log_dir, keys)
    bar = tqdm(
        total=cp.size,
        unit=" entries",
        desc="verifying",
        file=sys.stderr,
        mininterval=0.5,
        disable=(not progress or cp.size < PROGRESS_FROM) or None,  # None: only on a terminal
    )

    counted = 0

    def verified(index: int, _: bytes, claims: dict[str, Any]) -> None:
        nonlocal counted
        if index < cp.size:
            on_entry(entry_of(index, claims))
            counted += 1
            bar.update()

    try:
        audit = verify_log(log_dir, jwks=jwks, on_record=verified)
    finally:
        bar.close()
    # verify_log checked every checkpoint it read against the root of the entries before it; the one
    # this report names must be among them (the file is append-only: it is, unless it was rewritten).
    if counted != cp.size or cp not in audit.verified_checkpoints:
        raise ReportError(f"the entries read do not hash to the checkpoint of size {cp.size}: the log changed")
    return Source(
        checkpoint=cp,
        note=note,
        entries_verified=audit.entries,
        checkpoints=audit.checkpoints,
        kids=tuple(sorted(keys)),
        note_keys=tuple(checkpoint.verifier_key(cp.origin, k) for _, k in sorted(keys.items())),
    )


def _latest_checkpoint(log_dir: Path, keys: dict[str, Any]) -> tuple[checkpoint.Checkpoint, bytes]:
    path = log_dir / CHECKPOINTS
    frames, _ = read_frames(path.read_bytes()) if path.exists() else ([], None)
    if not frames:
        raise ReportError(f"{log_dir} has no signed checkpoint yet: nothing to report on")
    note = frames[-1].payload
    origin = note.split(b"\n", 1)[0].decode(errors="replace")
    try:
        return checkpoint.open_note(note, note_verifiers(origin, keys)), note
    except CheckpointError as e:
        raise ReportError(f"the latest checkpoint does not verify: {e}") from None
