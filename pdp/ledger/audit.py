"""``pdp audit verify``: re-derive a decision log from its files and the public keys alone.

Checks, in order, and stops at the first problem, naming the entry, file and offset:
every frame's length and CRC; every entry's JWS signature (by a key in the JWKS, ``typ`` a
decision, outcome, shadow, escalation or suspension record) and that its signed ``log_index`` is its position
(so an entry moved, dropped or inserted is caught where it happens); every outcome report and
shadow record links to an earlier decision record by digest, and so does every escalation step
whose decision is in this log (a step taken on another replica links to that replica's log);
every checkpoint's signature and origin, that checkpoints never shrink, and every checkpoint's
root against the root of the first ``size`` verified entries.

Consistency between checkpoints follows from the last check, without RFC 6962 consistency
proofs: the tree is built once, entry by entry, and each checkpoint's root must equal its root
at the checkpoint's size, so every checkpoint is the root of a prefix of one and the same
sequence of verified entries, and each earlier one is a prefix of each later one. That is what
a consistency proof between two checkpoints establishes (the old tree's leaves are the first
leaves of the new tree); a proof computed from the same leaves would only repeat it, at O(n)
hashing per pair of checkpoints. A checkpoint signed over another history (an entry rewritten,
dropped or inserted before its size) has a root no prefix of this log hashes to, and is refused.

Records are opened on a few threads (the Ed25519 checks and the hashing release the GIL); the
checks between entries, the tree and every callback run in log order on the calling thread, and
the first problem in log order is the one reported.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from pdp.encoding import sha256_digest
from pdp.errors import AuditError, CheckpointError, RecordError
from pdp.keys import public_keys
from pdp.ledger import checkpoint, merkle
from pdp.ledger.checkpoint import note_verifiers
from pdp.ledger.files import CHECKPOINTS, Frame, read_frames, segment_name, segments
from pdp.records import header_typ, verify
from pdp.schema import RECORD_TYPES, TYP_DECISION, TYP_ESCALATION, TYP_OUTCOME, TYP_SHADOW, RecordHead

__all__ = ["AuditError", "AuditReport", "verify_log"]

_BATCH = 256  # entries per signature-checking task: large enough that a task costs more than its hand-over
_WORKERS = min(4, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class AuditReport:
    origin: str
    entries: int
    decisions: int
    outcomes: int
    checkpoints: int
    root: bytes
    escalations: int = 0
    suspensions: int = 0  # kill-switch records (suspend and resume)
    verified_checkpoints: tuple[checkpoint.Checkpoint, ...] = ()  # in log order; each root checked


def verify_log(
    directory: Path,
    *,
    jwks: dict[str, Any],
    on_entry: Callable[[int, bytes], None] | None = None,
    on_record: Callable[[int, bytes, dict[str, Any]], None] | None = None,
) -> AuditReport:
    """Verifies everything in a log directory.

    Args:
        directory: the log directory.
        jwks: the public keys.
        on_entry: told each entry's index and exact bytes once its record has verified, in log
            order (``pdp replay`` computes from these, so it reads the log once).
        on_record: the same, with the record's verified claims (so a caller does not parse them again).

    Raises:
        AuditError: the first problem found.
    """
    keys = public_keys(jwks)
    if not keys:
        raise AuditError("the JWKS holds no Ed25519 key")
    notes = _checkpoints(directory, keys)
    origin = notes[0].origin if notes else ""
    due: dict[int, list[checkpoint.Checkpoint]] = collections.defaultdict(list)
    for cp in notes:
        due[cp.size].append(cp)
    tree = merkle.CompactTree()
    _check_roots(due.pop(0, ()), tree)
    decisions: dict[str, str] = {}
    counts = {kind.KIND: 0 for kind in RECORD_TYPES.values()}
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="audit") as pool:
        for no, path in enumerate(segments(directory)):
            if path.name != segment_name(no):
                raise AuditError(f"segment {no} is missing", index=tree.size, where=path.name)
            frames, damage = read_frames(path.read_bytes())
            for r in _opened(pool, frames, keys):
                index, where = tree.size, f"({path.name} offset {r.frame.offset})"
                claims = r.claims
                if isinstance(claims, RecordError):
                    raise AuditError(f"the record does not verify: {claims}", index=index, where=where)
                counts[_entry(r, claims, index, decisions=decisions, where=where)] += 1
                tree.push(r.leaf)
                if on_entry is not None:
                    on_entry(index, r.frame.payload)
                if on_record is not None:
                    on_record(index, r.frame.payload, claims)
                if tree.size in due:
                    _check_roots(due.pop(tree.size), tree)
            if damage is not None:
                raise AuditError(damage.why, index=tree.size, where=f"({path.name} offset {damage.offset})")
    if due:
        raise AuditError(
            f"a checkpoint covers {min(due)} entries but the log has {tree.size}: entries were removed",
            index=tree.size,
        )
    return AuditReport(
        origin,
        tree.size,
        counts["decision"],
        counts["outcome"],
        len(notes),
        tree.root(),
        counts["escalation"],
        counts["suspension"],
        tuple(notes),
    )


def _check_roots(notes: Sequence[checkpoint.Checkpoint], tree: merkle.CompactTree) -> None:
    """Every checkpoint of this size must have the root of the entries verified so far."""
    for cp in notes:
        if cp.root != tree.root():
            raise AuditError(
                f"the root up to here differs from the checkpoint of size {cp.size}: "
                "it was signed over another history",
                index=tree.size - 1 if tree.size else None,
            )


class _Opened(NamedTuple):
    """One frame as a worker thread left it: its record's ``typ``, its verified claims (or why it
    does not verify), its leaf hash, and the digest outcome reports link to it by."""

    frame: Frame
    typ: str
    claims: dict[str, Any] | RecordError
    leaf: bytes
    digest: str


def _opened(pool: ThreadPoolExecutor, frames: list[Frame], keys: dict[str, Any]) -> Iterator[_Opened]:
    """Each frame opened (:class:`_Opened`), in order.

    Batches are opened on the pool a few ahead of the one handed out, so signatures are checked
    and entries hashed (both release the GIL) while the caller works through the previous batch.
    """
    batches = [frames[i : i + _BATCH] for i in range(0, len(frames), _BATCH)]
    ahead: collections.deque[Future[list[_Opened]]] = collections.deque()
    try:
        for no in range(len(batches)):
            while len(ahead) < 2 * _WORKERS and no + len(ahead) < len(batches):
                ahead.append(pool.submit(_open_all, batches[no + len(ahead)], keys))
            yield from ahead.popleft().result()
    finally:
        for future in ahead:
            future.cancel()  # the caller stopped at a problem: the rest need not be checked


def _open_all(frames: list[Frame], keys: dict[str, Any]) -> list[_Opened]:
    opened: list[_Opened] = []
    for f in frames:
        typ = header_typ(f.payload)
        typ = typ if typ in RECORD_TYPES else TYP_DECISION  # an unknown typ fails as a decision record would
        claims: dict[str, Any] | RecordError
        try:
            claims = verify(f.payload.decode(errors="replace"), keys, typ=typ)
        except RecordError as e:
            claims = e
        digest = sha256_digest(f.payload) if typ == TYP_DECISION else ""
        opened.append(_Opened(f, typ, claims, merkle.leaf_hash(f.payload), digest))
    return opened


def _entry(opened: _Opened, claims: dict[str, Any], index: int, *, decisions: dict[str, str], where: str) -> str:
    typ = opened.typ
    head = RecordHead.from_dict(claims)
    if head.log_index != str(index):
        raise AuditError(
            f"the record was signed for log index {head.log_index}: entries were moved, dropped or inserted",
            index=index,
            where=where,
        )
    if typ == TYP_DECISION:
        decisions[head.decision_id] = opened.digest
        return "decision"
    kind = RECORD_TYPES[typ].KIND
    if typ == TYP_ESCALATION:
        if head.decision_record_digest and decisions.get(head.decision_id) != head.decision_record_digest:
            raise AuditError("the escalation step does not link to its decision record", index=index, where=where)
        return kind
    if typ not in (TYP_OUTCOME, TYP_SHADOW):
        return kind  # a record that links to no decision (suspension)
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
