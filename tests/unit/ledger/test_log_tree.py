"""The log's tree hashes on disk: proofs equal the pure functions', the files follow recovery and cuts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pdp import keys
from pdp.errors import LedgerUnavailable
from pdp.keys import KeyRing
from pdp.ledger import merkle
from pdp.ledger.log import Log, read_frames, segments
from pdp.ledger.positions import FILE as POSITIONS
from pdp.ledger.treefiles import INDEX_DIR, level_name
from tests.unit.ledger.test_log import append, die_with_a_torn_tail, open_log, verify


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return keys.rotate(tmp_path / "keys")


def _leaves(directory: Path) -> list[bytes]:
    return [merkle.leaf_hash(f.payload) for seg in segments(directory) for f in read_frames(seg.read_bytes())[0]]


def _proofs_match(log: Log, leaves: list[bytes]) -> None:
    n = len(leaves)
    for size in range(1, n + 1):
        for index in range(size):
            assert log.inclusion_proof(index, size) == merkle.inclusion_proof(leaves[:size], index)
        assert log.consistency_proof(max(size // 2, 1), size) == merkle.consistency_proof(
            leaves[:size], max(size // 2, 1)
        )


def test_proofs_equal_the_pure_functions_across_segments_and_reopen(tmp_path: Path, ring: KeyRing) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring, segment_max_bytes=2000)
    append(log, ring, 23)
    _proofs_match(log, _leaves(directory))
    log.close()
    log = open_log(directory, ring, segment_max_bytes=2000)
    append(log, ring, 3)
    leaves = _leaves(directory)
    assert len(leaves) == 26 and (directory / INDEX_DIR / level_name(0)).stat().st_size == 26 * 32
    _proofs_match(log, leaves)
    log.close()
    assert verify(directory, ring).entries == 26


def _damage_delete(index: Path) -> None:
    shutil.rmtree(index)  # a log written before the tree went to disk, or its files deleted


def _damage_garbage(index: Path) -> None:
    (index / level_name(0)).write_bytes(b"\x00" * 32 * 12)  # files that lie, and are too long


@pytest.mark.parametrize("damage", [_damage_delete, _damage_garbage], ids=["deleted", "garbage"])
def test_tree_files_are_rebuilt_at_open(tmp_path: Path, ring: KeyRing, damage: Callable[[Path], None]) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 9)
    log.close()
    damage(directory / INDEX_DIR)
    log = open_log(directory, ring)
    assert log.size() == 9
    _proofs_match(log, _leaves(directory))
    log.close()


def test_a_torn_tail_is_cut_from_the_tree_files_too(tmp_path: Path, ring: KeyRing) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 6)
    log.checkpoint_now()
    die_with_a_torn_tail(log, directory)
    reopened = open_log(directory, ring)
    assert reopened.size() == 6
    assert (directory / INDEX_DIR / level_name(1)).stat().st_size == 3 * 32
    _holds_then_grows(reopened, directory, ring, held=6, more=2)


def _holds_then_grows(log: Log, directory: Path, ring: KeyRing, *, held: int, more: int) -> None:
    """The index files hold exactly ``held`` entries; then ``more`` append with proofs as the pure functions'."""
    assert (directory / INDEX_DIR / level_name(0)).stat().st_size == held * 32
    assert (directory / INDEX_DIR / POSITIONS).stat().st_size == held * 12
    append(log, ring, more)
    _proofs_match(log, _leaves(directory))
    log.close()
    assert verify(directory, ring).entries == held + more


def test_entries_cut_after_a_failed_sync_are_cut_from_the_tree_files(tmp_path: Path, ring: KeyRing) -> None:
    directory = tmp_path / "log"
    log = open_log(directory, ring)
    append(log, ring, 5)
    real = log._fd
    log._fd = os.open("/dev/full", os.O_WRONLY)  # the disk fills up under the log
    with pytest.raises(LedgerUnavailable):
        append(log, ring, 1)
    os.close(log._fd)
    log._fd = real
    assert log.recover()
    _holds_then_grows(log, directory, ring, held=5, more=4)
