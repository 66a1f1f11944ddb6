"""The tree code against the published RFC 6962 vectors, and proofs that fail when mutated."""

from __future__ import annotations

import json

import pytest

from pdp.ledger import merkle
from tests.helpers import ROOT

V = json.loads((ROOT / "tests/data/rfc6962/vectors.json").read_text())
LEAVES = [merkle.leaf_hash(bytes.fromhex(x)) for x in V["leaves"]]
ROOTS = [bytes.fromhex(r) for r in V["roots"]]


def test_roots_match_rfc6962_for_every_size() -> None:
    tree = merkle.CompactTree()
    assert tree.root() == ROOTS[0]
    for n, entry in enumerate(V["leaves"], start=1):
        tree.append(bytes.fromhex(entry))
        assert merkle.root(LEAVES[:n]) == ROOTS[n]
        assert tree.root() == ROOTS[n]


def test_the_compact_tree_is_the_rfc6962_tree_at_every_size_and_can_be_continued() -> None:
    leaves = [merkle.leaf_hash(bytes([i])) for i in range(70)]
    tree = merkle.CompactTree()
    for n, leaf in enumerate(leaves, 1):
        made = tree.push(leaf)
        assert (tree.size, tree.root()) == (n, merkle.root(leaves[:n]))
        # the nodes this leaf completes: the perfect subtrees ending at it, from the leaf up
        assert made == [merkle.root(leaves[n - (1 << h) : n]) for h in range(len(made))]
        assert len(made) == 1 + ((n - 1) ^ n).bit_length() - 1
    # A tree continued from the edge of the first 37 leaves (how the log reopens its files).
    edge, start = [], 0
    for h in reversed(range((37).bit_length())):
        if 37 >> h & 1:
            edge.append(merkle.root(leaves[start : start + (1 << h)]))
            start += 1 << h
    continued = merkle.CompactTree(37, edge)
    for leaf in leaves[37:]:
        continued.push(leaf)
    assert continued.root() == merkle.root(leaves)
    with pytest.raises(ValueError, match="perfect subtrees"):
        merkle.CompactTree(37, edge[:-1])


@pytest.mark.parametrize("case", V["inclusion"], ids=lambda c: f"{c['index']}of{c['size']}")
def test_inclusion_proofs_match_rfc6962(case: dict) -> None:
    proof = merkle.inclusion_proof(LEAVES[: case["size"]], case["index"])
    assert [p.hex() for p in proof] == case["proof"]
    merkle.verify_inclusion(LEAVES[case["index"]], case["index"], case["size"], proof, ROOTS[case["size"]])


@pytest.mark.parametrize("case", V["consistency"], ids=lambda c: f"{c['first']}to{c['second']}")
def test_consistency_proofs_match_rfc6962(case: dict) -> None:
    m, n = case["first"], case["second"]
    proof = merkle.consistency_proof(LEAVES[:n], m)
    assert [p.hex() for p in proof] == case["proof"]
    merkle.verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@pytest.mark.parametrize("n", range(1, 20))
def test_every_inclusion_proof_verifies_and_no_mutation_does(n: int) -> None:
    leaves = _leaves(n)
    r = merkle.root(leaves)
    for i in range(n):
        proof = merkle.inclusion_proof(leaves, i)
        merkle.verify_inclusion(leaves[i], i, n, proof, r)
        bad = [
            (leaves[i], (i + 1) % n, n, proof) if n > 1 else None,
            (merkle.leaf_hash(b"other"), i, n, proof),
            (leaves[i], i, n, [*proof, r]),
            (leaves[i], i, n, proof[:-1]) if proof else None,
            (leaves[i], i, n, [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]) if proof else None,
        ]
        for args in filter(None, bad):
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(*args, r)


@pytest.mark.parametrize("n", range(1, 20))
def test_every_consistency_proof_verifies_and_no_mutation_does(n: int) -> None:
    leaves = _leaves(n)
    for m in range(1, n + 1):
        proof = merkle.consistency_proof(leaves, m)
        old, new = merkle.root(leaves[:m]), merkle.root(leaves)
        merkle.verify_consistency(m, n, old, new, proof)
        if m < n:
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(m, n, merkle.root(_leaves(m + 1)[1:]), new, proof)
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(m, n, old, new, [bytes(32), *proof[1:]] if proof else [bytes(32)])


def test_proofs_outside_the_tree_are_refused() -> None:
    with pytest.raises(merkle.ProofError):
        merkle.inclusion_proof(_leaves(3), 3)
    with pytest.raises(merkle.ProofError):
        merkle.consistency_proof(_leaves(3), 4)
    with pytest.raises(merkle.ProofError):
        merkle.verify_inclusion(bytes(32), 5, 5, [], bytes(32))
