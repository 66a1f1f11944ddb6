"""The state store contract (tests/state_contract.py) on a real PostgreSQL server started by the test
session (tests/postgres.py), and what only PostgreSQL has: a server that goes away and comes back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pdp.state import StateUnavailable, open_store
from pdp.state.postgres import PostgresStore
from tests.postgres import PostgresServer
from tests.state_contract import Backend, StateStoreContract, backend_fixture

pytestmark = pytest.mark.integration


class TestPostgresStore(StateStoreContract):
    @pytest.fixture
    def backend(self, postgres_server: PostgresServer, postgres_url: str) -> Iterator[Backend]:
        yield from backend_fixture(postgres_url, postgres_server.stop)


def test_open_store_picks_postgres_and_creates_the_schema_once(postgres_url: str) -> None:
    first, second = open_store(postgres_url), open_store(postgres_url.replace("postgresql://", "postgres://"))
    assert isinstance(first, PostgresStore) and isinstance(second, PostgresStore)
    assert first.first_use("k", 2_000_000_000, now=1_800_000_000) is True
    assert second.first_use("k", 2_000_000_000, now=1_800_000_000) is False
    first.close()
    second.close()


def test_the_store_works_again_once_the_server_is_back(postgres_server: PostgresServer, postgres_url: str) -> None:
    store = open_store(postgres_url)
    assert store.first_use("before", 2_000_000_000, now=1_800_000_000) is True
    postgres_server.stop()
    postgres_server.start()
    assert store.first_use("after-restart", 2_000_000_000, now=1_800_000_000) is True, "a stale connection is replaced"
    postgres_server.stop()
    with pytest.raises(StateUnavailable, match="OperationalError"):
        store.first_use("during", 2_000_000_000, now=1_800_000_000)
    assert store.healthy() is False
    postgres_server.start()
    assert store.healthy() is True
    assert store.first_use("before", 2_000_000_000, now=1_800_000_000) is False, "what was used stays used"
    store.close()
