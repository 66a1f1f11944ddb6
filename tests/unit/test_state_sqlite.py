"""The state store contract (tests/state_contract.py) on the embedded SQLite backend, and what only
SQLite has: the file it opened must stay that file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.state import StateUnavailable, open_store
from pdp.state.sqlite import FILENAME, SqliteStore
from tests.state_contract import (  # noqa: F401  (collected here, run on SQLite)
    Backend,
    backend_fixture,
    test_an_approved_escalation_is_consumed_once,
    test_close_for_agent_rejects_only_that_agents_open_escalations,
    test_concurrent_reservations_never_exceed_the_limit,
    test_concurrent_votes_from_processes_are_all_counted,
    test_escalation_open_get_list,
    test_expire_due_moves_each_escalation_once,
    test_first_use_is_once_until_expiry,
    test_first_use_race_across_processes_has_one_winner_per_key,
    test_one_reject_rejects,
    test_replay_cache_adapter_refuses_a_record_seen_by_another_pep,
    test_reserve_is_all_or_nothing,
    test_settle_release_frees_and_keep_stays,
    test_sliding_window,
    test_store_down_raises_state_unavailable_for_every_operation,
    test_suspensions_are_visible_to_another_store_at_once,
    test_threads_sharing_one_store_have_one_winner_per_key,
    test_two_distinct_approvers_approve_and_the_same_one_twice_is_refused,
    test_votes_on_expired_or_unknown_escalations_are_refused,
)


def replace_with_garbage(path: Path) -> None:
    """What an operator's mistake or a broken disk leaves: the path now holds no database (and no
    write-ahead log of the old one)."""
    garbage = path.with_name("garbage")
    garbage.write_bytes(os.urandom(8192))
    os.replace(garbage, path)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    yield from backend_fixture(str(tmp_path / "state"), lambda: replace_with_garbage(tmp_path / "state" / FILENAME))


def test_open_store_creates_the_file_in_the_directory(tmp_path: Path) -> None:
    store = open_store(tmp_path / "new" / "dir")
    assert isinstance(store, SqliteStore) and store.path == tmp_path / "new" / "dir" / FILENAME
    assert store.path.is_file() and store.healthy()
    store.close()
    with pytest.raises(StateUnavailable, match="closed"):
        store.suspensions(now=0)


def test_a_removed_file_is_not_silently_recreated_empty(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    assert store.first_use("token", 2_000_000_000, now=1_800_000_000) is True
    (tmp_path / FILENAME).unlink()
    with pytest.raises(StateUnavailable, match="the state file is gone"):
        store.first_use("token", 2_000_000_000, now=1_800_000_000)
    assert not (tmp_path / FILENAME).exists()
    store.close()


def test_a_directory_that_cannot_hold_the_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StateUnavailable, match="file"):
        open_store(tmp_path / "file")
