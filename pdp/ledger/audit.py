"""``pdp audit verify``: re-derive a decision log from its files and the public keys alone.

Checks, in order, and stops at the first problem, naming the entry, file and offset:
every frame's length and CRC; every entry's JWS signature (by a key in the JWKS, ``typ`` a
decision, outcome or shadow record) and that its signed ``log_index`` is its position (so an entry
moved, dropped or inserted is caught where it happens); every outcome report and shadow record
links to an earlier decision record by digest; every checkpoint's signature, origin and root against the root
re-derived at its size, and consistency proofs between successive checkpoints.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdp.encoding import sha256_digest
from pdp.errors import AuditError, CheckpointError, ProofError, RecordError
from pdp.keys import public_keys
from pdp.ledger import checkpoint, merkle
from pdp.ledger.checkpoint import note_verifiers
from pdp.ledger.files import CHECKPOINTS, read_frames, segment_name, segments
from pdp.records import header_typ, verify
from pdp.schema import TYP_DECISION, TYP_OUTCOME, TYP_SHADOW, RecordHead

__all__ = ["AuditError", "AuditReport", "verify_log"]


@dataclasses.dataclass(frozen=True)
class AuditReport:
    origin: str
    entries: int
    decisions: int
    outcomes: int
    checkpoints: int
    root: bytes


def verify_log(
    directory: Path, *, jwks: dict[str, Any], on_entry: Callable[[int, bytes], None] | None = None
) -> AuditReport:
    """Verifies everything in a log directory.

    Args:
        directory: the log directory.
        jwks: the public keys.
        on_entry: told each entry's index and exact bytes once its record has verified, in log
            order (``pdp report`` computes from these, so it reads the log once).

    Raises:
        AuditError: the first problem found.
    """
    keys = public_keys(jwks)
    if not keys:
        raise AuditError("the JWKS holds no Ed25519 key")
    notes = _checkpoints(directory, keys)
    origin = notes[0].origin if notes else ""
    by_size = {cp.size: cp for cp in notes}
    tree = merkle.CompactTree()
    decisions: dict[str, str] = {}
    counts = {"decision": 0, "outcome": 0, "shadow": 0}
    files = segments(directory)
    for no, path in enumerate(files):
        if path.name != segment_name(no):
            raise AuditError(f"segment {no} is missing", index=len(tree), where=path.name)
        frames, damage = read_frames(path.read_bytes())
        for f in frames:
            index = len(tree)
            where = f"({path.name} offset {f.offset})"
            kind = _entry(f.payload, index, keys, decisions, where)
            counts[kind] += 1
            tree.append(f.payload)
            if on_entry is not None:
                on_entry(index, f.payload)
            cp = by_size.get(len(tree))
            if cp is not None and cp.root != tree.root():
                raise AuditError(f"the root up to here differs from the checkpoint of size {cp.size}", index=index)
        if damage is not None:
            raise AuditError(damage.why, index=len(tree), where=f"({path.name} offset {damage.offset})")
    for cp in notes:
        if cp.size > len(tree):
            raise AuditError(
                f"a checkpoint covers {cp.size} entries but the log has {len(tree)}: entries were removed",
                index=len(tree),
            )
    for old, new in itertools.pairwise(notes):
        if old.size:
            try:
                proof = merkle.consistency_proof(tree.leaves[: new.size], old.size)
                merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
            except ProofError as e:
                raise AuditError(f"checkpoints {old.size} → {new.size} are not consistent: {e}") from None
    return AuditReport(origin, len(tree), counts["decision"], counts["outcome"], len(notes), tree.root())


def _entry(payload: bytes, index: int, keys: dict[str, Any], decisions: dict[str, str], where: str) -> str:
    token = payload.decode(errors="replace")
    typ = next((t for t in (TYP_OUTCOME, TYP_SHADOW) if header_typ(token) == t), TYP_DECISION)
    try:
        head = RecordHead.from_dict(verify(token, keys, typ=typ))
    except RecordError as e:
        raise AuditError(f"the record does not verify: {e}", index=index, where=where) from None
    if head.log_index != str(index):
        raise AuditError(
            f"the record was signed for log index {head.log_index}: entries were moved, dropped or inserted",
            index=index,
            where=where,
        )
    if typ == TYP_DECISION:
        decisions[head.decision_id] = sha256_digest(payload)
        return "decision"
    kind = "outcome" if typ == TYP_OUTCOME else "shadow"
    if decisions.get(head.decision_id) != head.decision_record_digest:
        what = "outcome report" if kind == "outcome" else "shadow record"
        raise AuditError(f"the {what} does not link to an earlier decision record", index=index, where=where)
    return kind


def _checkpoints(directory: Path, keys: dict[str, Any]) -> list[checkpoint.Checkpoint]:
    path = directory / CHECKPOINTS
    if not path.exists():
        return []
    frames, damage = read_frames(path.read_bytes())
    if damage is not None:
        raise AuditError(damage.why, where=f"({CHECKPOINTS} offset {damage.offset})")
    notes: list[checkpoint.Checkpoint] = []
    for f in frames:
        origin = f.payload.split(b"\n", 1)[0].decode(errors="replace")
        try:
            cp = checkpoint.open_note(f.payload, note_verifiers(origin, keys))
        except CheckpointError as e:
            raise AuditError(f"checkpoint: {e}", where=f"({CHECKPOINTS} offset {f.offset})") from None
        if notes and (cp.origin != notes[0].origin or cp.size < notes[-1].size):
            raise AuditError("a checkpoint of another log, or out of order", where=f"({CHECKPOINTS} offset {f.offset})")
        notes.append(cp)
    return notes
