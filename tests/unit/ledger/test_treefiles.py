"""The tree with its hashes on disk: proofs byte-identical to the pure functions over the full leaf list."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.errors import ProofError
from pdp.ledger import merkle
from pdp.ledger.treefiles import DiskTree, level_name


def _entries(n: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(n)]


def _tree(directory: Path, entries: list[bytes], *, flush_every: int = 7) -> DiskTree:
    tree = DiskTree.create(directory)
    for i, e in enumerate(entries, start=1):
        tree.append(e)
        if i % flush_every == 0:
            tree.flush()
    tree.flush()
    return tree


def test_every_proof_up_to_70_leaves_equals_the_pure_functions(tmp_path: Path) -> None:
    entries = _entries(70)
    leaves = [merkle.leaf_hash(e) for e in entries]
    tree = _tree(tmp_path / "index", entries)
    for size in range(1, 71):
        assert tree.subtree_root(0, size) == merkle.root(leaves[:size])
        for index in range(size):
            assert tree.inclusion_proof(index, size) == merkle.inclusion_proof(leaves[:size], index)
        for old in range(1, size + 1):
            assert tree.consistency_proof(old, size) == merkle.consistency_proof(leaves[:size], old)
    assert tree.root() == merkle.root(leaves)
    tree.close()


def test_proofs_in_a_large_tree_equal_the_pure_functions(tmp_path: Path) -> None:
    n = 5000
    entries = _entries(n)
    leaves = [merkle.leaf_hash(e) for e in entries]
    tree = _tree(tmp_path / "index", entries, flush_every=333)
    for size in (1, 2, 3, 1023, 1024, 1025, 2047, 4096, 4097, 4999, 5000):
        for index in {0, size // 3, size // 2, size - 1}:
            assert tree.inclusion_proof(index, size) == merkle.inclusion_proof(leaves[:size], index)
        for old in {1, size // 7 or 1, size // 2 or 1, size - 1 or 1, size}:
            assert tree.consistency_proof(old, size) == merkle.consistency_proof(leaves[:size], old)
    # level h holds one hash per complete 2^h subtree: the files are the tree, nothing more
    for height in range(n.bit_length()):
        assert (tmp_path / "index" / level_name(height)).stat().st_size == (n >> height) * 32
    tree.close()


@pytest.mark.parametrize("keep", [0, 1, 2, 5, 8, 13, 16, 31, 32])
def test_a_cut_tree_is_the_tree_of_what_was_kept_and_grows_on_from_there(tmp_path: Path, keep: int) -> None:
    entries = _entries(40)
    tree = _tree(tmp_path / "index", entries[:33])
    tree.truncate(keep)
    assert len(tree) == keep
    assert tree.root() == merkle.root([merkle.leaf_hash(e) for e in entries[:keep]])
    for e in entries[keep:]:
        tree.append(e)
    tree.flush()
    leaves = [merkle.leaf_hash(e) for e in entries]
    assert tree.root() == merkle.root(leaves)
    for index in range(40):
        assert tree.inclusion_proof(index, 40) == merkle.inclusion_proof(leaves, index)
    assert tree.consistency_proof(keep or 1, 40) == merkle.consistency_proof(leaves, keep or 1)
    tree.close()


def test_no_proof_beyond_what_is_written_or_outside_the_tree(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "index", _entries(10))
    tree.append(b"unflushed")
    with pytest.raises(ProofError):
        tree.inclusion_proof(3, 11)
    with pytest.raises(ProofError):
        tree.inclusion_proof(10, 10)
    with pytest.raises(ProofError):
        tree.consistency_proof(0, 10)
    with pytest.raises(ProofError):
        tree.consistency_proof(11, 10)
    tree.close()


def test_create_starts_from_empty_files(tmp_path: Path) -> None:
    _tree(tmp_path / "index", _entries(9)).close()
    tree = _tree(tmp_path / "index", _entries(3))
    assert (tmp_path / "index" / level_name(0)).stat().st_size == 3 * 32
    assert not (tmp_path / "index" / level_name(3)).exists()
    assert tree.inclusion_proof(2, 3) == merkle.inclusion_proof([merkle.leaf_hash(e) for e in _entries(3)], 2)
    tree.close()
