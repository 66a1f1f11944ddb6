"""The state store contract (tests/state_contract.py) on a real PostgreSQL server started by the test
session (tests/postgres.py), and what only PostgreSQL has: a server that goes away and comes back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pdp.state import StateUnavailable, open_store
from pdp.state.postgres import PostgresStore
from tests.postgres import PostgresServer
from tests.state_contract import (  # noqa: F401  (collected here, run on PostgreSQL)
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

pytestmark = pytest.mark.integration


@pytest.fixture
def backend(postgres_server: PostgresServer, postgres_url: str) -> Iterator[Backend]:
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
