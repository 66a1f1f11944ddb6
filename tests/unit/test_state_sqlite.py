"""The state store contract (tests/state_contract.py) on the embedded SQLite backend, and what only
SQLite has: the file it opened must stay that file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdp.state import StateUnavailable, open_store
from pdp.state.sqlite import FILENAME, SqliteStore
from tests.state_contract import Backend, StateStoreContract, backend_fixture


def replace_with_garbage(path: Path) -> None:
    """What an operator's mistake or a broken disk leaves: the path now holds no database (and no
    write-ahead log of the old one)."""
    garbage = path.with_name("garbage")
    garbage.write_bytes(os.urandom(8192))
    os.replace(garbage, path)
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


class TestSqliteStore(StateStoreContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        state = tmp_path / "state"
        yield from backend_fixture(str(state), lambda: replace_with_garbage(state / FILENAME))


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
