"""The decision log on real files: durability, recovery, and an audit that catches any change."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from pdp import keys, records
from pdp.errors import LedgerCorrupt, LedgerUnavailable
from pdp.keys import KeyRing
from pdp.ledger import audit
from pdp.ledger.log import CHECKPOINTS, Log, read_frames, segments

ORIGIN = "test.example/log"


def open_log(directory: Path, ring: KeyRing, **kw: int) -> Log:
    return Log.open(
        directory,
        signing_key=ring.private,
        public_keys=keys.public_keys(ring.jwks),
        origin=ORIGIN,
        checkpoint_interval_s=3600,
        **kw,
    )


def entry_maker(ring: KeyRing) -> Callable[[int], bytes]:
    def make(i: int) -> bytes:
        claims = {"decision_id": f"d-{i}", "pdp": {"type": "decision", "log_index": str(i)}}
        return records.sign(claims, ring, typ=records.TYP_DECISION).encode()

    return make


def append(log: Log, ring: KeyRing, n: int) -> list[int]:
    return [log.append(entry_maker(ring)) for _ in range(n)]


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return keys.rotate(tmp_path / "keys")


@pytest.fixture
def full_log(tmp_path: Path, ring: KeyRing) -> Path:
    """20 entries over several sealed segments, checkpointed, closed."""
    directory = tmp_path / "log"
    log = open_log(directory, ring, segment_max_bytes=2000)
    append(log, ring, 20)
    log.close()
    return directory


def verify(directory: Path, ring: KeyRing) -> audit.AuditReport:
    return audit.verify_log(directory, jwks=ring.jwks)


def test_a_good_log_verifies_and_reopens(full_log: Path, ring: KeyRing) -> None:
    report = verify(full_log, ring)
    assert (report.entries, report.decisions, report.origin) == (20, 20, ORIGIN)
    assert len(segments(full_log)) > 2
    assert all(p.stat().st_mode & 0o222 == 0 for p in segments(full_log)[:-1])  # sealed: read-only
    log = open_log(full_log, ring)
    assert append(log, ring, 1) == [20]
    log.close()
    assert verify(full_log, ring).entries == 21


def test_a_batch_is_appended_in_order_across_segments_in_one_commit(tmp_path: Path, ring: KeyRing) -> None:
    log = open_log(tmp_path / "log", ring, segment_max_bytes=2000)
    append(log, ring, 2)
    assert log.append_all([]) == []
    assert log.append_all([entry_maker(ring)] * 12) == list(range(2, 14))
    assert log.size() == 14  # durable when append_all returns
    log.close()
    report = verify(tmp_path / "log", ring)
    assert (report.entries, report.decisions) == (14, 14)
    assert len(segments(tmp_path / "log")) > 2


def entry_offsets(directory: Path) -> list[tuple[Path, int, int]]:
    found = []
    for path in segments(directory):
        frames, _ = read_frames(path.read_bytes())
        found += [(path, f.offset, len(f.payload)) for f in frames]
    return found


def flip(path: Path, at: int) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["length", "payload-start", "payload-middle", "crc"])
@pytest.mark.parametrize("victim", [0, 7, 19])
def test_any_flipped_byte_is_caught_at_its_entry(full_log: Path, ring: KeyRing, victim: int, where: str) -> None:
    path, offset, size = entry_offsets(full_log)[victim]
    at = {
        "length": offset + 3,
        "payload-start": offset + 4,
        "payload-middle": offset + 4 + size // 2,
        "crc": offset + 4 + size + 3,
    }[where]
    flip(path, at)
    with pytest.raises(audit.AuditError) as e:
        verify(full_log, ring)
    assert e.value.index == victim
    with pytest.raises(LedgerCorrupt):
        open_log(full_log, ring)  # the PDP refuses to start on it too


def rewrite_frames(path: Path, payloads: list[bytes]) -> None:
    from pdp.ledger.log import frame

    path.chmod(0o644)
    path.write_bytes(b"".join(frame(p) for p in payloads))


def payloads(path: Path) -> list[bytes]:
    return [f.payload for f in read_frames(path.read_bytes())[0]]


def test_a_deleted_entry_is_caught_where_it_was(full_log: Path, ring: KeyRing) -> None:
    first = segments(full_log)[0]
    kept = payloads(first)
    rewrite_frames(first, kept[:1] + kept[2:])  # valid frames, valid signatures: one missing
    with pytest.raises(audit.AuditError, match="moved, dropped or inserted") as e:
        verify(full_log, ring)
    assert e.value.index == 1


def test_reordered_entries_are_caught(full_log: Path, ring: KeyRing) -> None:
    first = segments(full_log)[0]
    p = payloads(first)
    rewrite_frames(first, [p[1], p[0], *p[2:]])
    with pytest.raises(audit.AuditError) as e:
        verify(full_log, ring)
    assert e.value.index == 0


def test_a_deleted_segment_or_cut_tail_is_caught(full_log: Path, ring: KeyRing) -> None:
    last = segments(full_log)[-1]
    last.chmod(0o644)
    last.unlink()
    with pytest.raises(audit.AuditError, match="entries were removed"):
        verify(full_log, ring)
    with pytest.raises(LedgerCorrupt):
        open_log(full_log, ring)


def test_a_forged_checkpoint_is_caught(full_log: Path, ring: KeyRing) -> None:
    path = full_log / CHECKPOINTS
    notes = [f.payload for f in read_frames(path.read_bytes())[0]]
    forged = notes[-1].replace(b"\n20\n", b"\n19\n")
    rewrite_frames(path, [*notes[:-1], forged])
    with pytest.raises(audit.AuditError, match="does not verify"):
        verify(full_log, ring)


def die_with_a_torn_tail(log: Log, directory: Path) -> None:
    """The process dies (no final checkpoint) in the middle of writing a frame."""
    os.close(log._fd)
    log._fd = -1
    seg = segments(directory)[-1]
    seg.write_bytes(seg.read_bytes() + struct.pack(">I", 500) + b"half a fram")


def test_a_torn_tail_after_the_checkpoint_is_cut_and_kept_aside(
    tmp_path: Path, ring: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 5)
    log.checkpoint_now()
    append(log, ring, 2)
    die_with_a_torn_tail(log, directory)
    reopened = open_log(directory, ring)
    assert reopened.size() == 7
    assert list(directory.glob("segment-*.torn-*"))
    assert "torn tail" in caplog.text
    reopened.close()
    assert verify(directory, ring).entries == 7


def test_damage_before_the_last_checkpoint_refuses_to_start(tmp_path: Path, ring: KeyRing) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 5)
    log.close()
    seg = segments(directory)[-1]
    seg.write_bytes(seg.read_bytes()[:-3])  # the last checkpointed entry is cut
    with pytest.raises(LedgerCorrupt, match="before the last checkpoint"):
        open_log(directory, ring)


def test_rotated_keys_keep_old_entries_verifiable(tmp_path: Path, ring: KeyRing) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 3)
    log.close()
    new = keys.rotate(tmp_path / "keys")
    assert new.kid != ring.kid and not (tmp_path / "keys" / f"{ring.kid}.pem").exists()
    log = open_log(directory, new)
    append(log, new, 3)
    log.close()
    assert verify(directory, new).entries == 6
    with pytest.raises(audit.AuditError):
        audit.verify_log(directory, jwks={"keys": [k for k in new.jwks["keys"] if k["kid"] == new.kid]})


def test_a_write_that_fails_fails_the_log_for_good(tmp_path: Path, ring: KeyRing) -> None:
    log = open_log(tmp_path / "log", ring)
    append(log, ring, 1)
    os.close(log._fd)  # the disk goes away under the log
    log._fd = os.open("/dev/full", os.O_WRONLY)
    with pytest.raises(LedgerUnavailable, match="No space left"):
        append(log, ring, 1)
    assert not log.healthy
    with pytest.raises(LedgerUnavailable):
        append(log, ring, 1)
