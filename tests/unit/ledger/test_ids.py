"""The decision index on disk: point lookups, rebuilt at open, never losing a row it was given."""

from __future__ import annotations

from pathlib import Path

from pdp.ledger.ids import FILE, DecisionIndex
from pdp.ledger.treefiles import INDEX_DIR


def test_lookups_find_what_was_added_and_nothing_else(tmp_path: Path) -> None:
    ids = DecisionIndex.create(tmp_path)
    ids.add([("d-1", 0, "spiffe://a"), ("d-2", 3, "")])
    ids.add([("d-3", 7, "spiffe://b")])
    assert ids.find("d-1") == (0, "spiffe://a")
    assert ids.find("d-2") == (3, "")
    assert ids.index_of("d-3") == 7
    assert ids.find("nope") is None and ids.index_of("nope") is None
    assert len(ids) == 3 and (tmp_path / INDEX_DIR / FILE).exists()
    ids.close()


def test_create_starts_empty_the_log_rebuilds_it(tmp_path: Path) -> None:
    DecisionIndex.create(tmp_path).add([("d-1", 0, "x")])
    ids = DecisionIndex.create(tmp_path)
    assert ids.find("d-1") is None and len(ids) == 0
    ids.close()


def test_rows_sqlite_refuses_wait_in_memory_and_go_in_later(tmp_path: Path) -> None:
    ids = DecisionIndex.create(tmp_path)
    ids.add([("d-1", 0, "x")])
    ids._db.execute("PRAGMA query_only=ON")  # the file takes no writes, as on a full disk
    ids.add([("d-2", 1, "y")])
    assert ids.find("d-2") == (1, "y")
    ids._db.execute("PRAGMA query_only=OFF")
    ids.add([("d-3", 2, "z")])
    assert ids._spilled == {}
    assert [ids.index_of(f"d-{i}") for i in (1, 2, 3)] == [0, 1, 2]
    ids.close()


def test_a_decision_is_claimed_for_its_outcome_report_once(tmp_path: Path) -> None:
    ids = DecisionIndex.create(tmp_path)
    ids.add([("d-1", 0, "x"), ("d-2", 1, "x"), ("d-3", 2, "x")])
    ids.mark_reported(["d-3"])  # a report the log already holds (the rebuild at open)
    assert ids.claim_report("d-1") is True
    assert ids.claim_report("d-1") is False, "a second report on the same decision"
    assert ids.claim_report("d-3") is False
    ids.release_report("d-1")  # the report could not be logged: it may be filed again
    assert ids.claim_report("d-1") is True
    assert ids.claim_report("d-2") is True
    ids.close()


def test_report_claims_hold_while_sqlite_takes_no_writes(tmp_path: Path) -> None:
    ids = DecisionIndex.create(tmp_path)
    ids.add([("d-1", 0, "x"), ("d-2", 1, "x")])
    assert ids.claim_report("d-1") is True
    ids._db.execute("PRAGMA query_only=ON")  # the file takes no writes, as on a full disk
    assert ids.claim_report("d-1") is False  # read back from the file
    assert ids.claim_report("d-2") is True  # kept in memory
    assert ids.claim_report("d-2") is False
    ids.add([("d-3", 2, "y")])  # spilled too
    assert ids.claim_report("d-3") is True and ids.claim_report("d-3") is False
    ids._db.execute("PRAGMA query_only=OFF")
    ids.add([])  # the next batch takes what waited
    assert ids._spilled == {} and ids._reported_spilled == set()
    assert [ids.claim_report(f"d-{i}") for i in (1, 2, 3)] == [False, False, False]
    ids.close()
