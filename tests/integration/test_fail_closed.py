"""No policy verdict, no ALLOW: every way OPA can fail gives DENY + indeterminate in time."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from pdp.errors import SidecarError
from pdp.sidecar import OpaSidecar
from pdp.v1 import decision_pb2 as pb
from tests.helpers import ROOT, Pdp, assert_fail_closed, load_request, wait_for
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BUNDLES = ROOT / "tests" / "data" / "bundles"


def freeze(pid: int) -> None:
    """SIGSTOP, then wait until every thread of the process is stopped: kill() only queues the
    signal, and on a loaded machine a thread already running can still answer a request first."""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        tasks = Path(f"/proc/{pid}/task")
        return all((t / "stat").read_text().rsplit(") ", 1)[1][:1] in "tT" for t in tasks.iterdir())

    wait_for(stopped, timeout_s=10, what=f"every thread of process {pid} stopped")


@pytest.fixture
def paused(opa: OpaSidecar) -> Iterator[Callable[[], None]]:
    """Freezes the OPA process (SIGSTOP): it accepts connections but never answers."""
    assert opa.process is not None
    pid = opa.process.pid

    def pause() -> None:
        freeze(pid)

    yield pause
    os.kill(pid, signal.SIGCONT)


def unread_bytes(opa: OpaSidecar) -> int:
    """Bytes waiting in the receive queues of OPA's accepted TCP connections (/proc/net/tcp)."""
    port = int(opa.addr.rsplit(":", 1)[1])
    total = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        state, rx_queue = fields[3], int(fields[4].split(":")[1], 16)
        if local_port == port and state == "01":  # ESTABLISHED, OPA's side
            total += rx_queue
    return total


def test_opa_stopped_mid_run_then_back(start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp]) -> None:
    opa = start_opa()
    pdp = start_pdp(opa.url)
    allow = load_request("allow-crm-lookup.json")
    assert pdp.stub.Decide(allow, timeout=5).outcome == pb.OUTCOME_ALLOW
    wait_for(lambda: pdp.health_status() == SERVING, what="SERVING")

    opa.stop()
    # A retry of the decided request gets its logged record; new requests fail closed.
    assert pdp.stub.Decide(allow, timeout=2).outcome == pb.OUTCOME_ALLOW
    for _ in range(3):
        start = time.monotonic()
        assert_fail_closed(pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=2), "pdp.opa_unavailable")
        assert time.monotonic() - start < 2
    wait_for(lambda: pdp.health_status() == NOT_SERVING, what="NOT_SERVING")
    wait_for(lambda: pdp.health_status("pdp.v1.DecisionService") == NOT_SERVING, what="service NOT_SERVING")

    # OPA comes back on the same address: both recover without a PDP restart.
    back = start_opa(addr=opa.addr)
    assert back.healthy()
    wait_for(lambda: pdp.health_status() == SERVING, what="SERVING again")
    assert pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5).outcome == pb.OUTCOME_ALLOW


def test_slow_opa_is_cut_off_by_the_callers_deadline(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp], paused: Callable[[], None]
) -> None:
    pdp = start_pdp(opa.url, opa_timeout_s=30.0)  # only the caller's deadline can cut this wait short
    allow = load_request("allow-crm-lookup.json")
    assert pdp.stub.Decide(allow, timeout=5).outcome == pb.OUTCOME_ALLOW
    paused()
    # A fail-closed answer inside the deadline, not DEADLINE_EXCEEDED (gRPC would raise that).
    assert_fail_closed(pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=1.0), "pdp.opa_timeout")


def test_slow_opa_is_cut_off_by_the_configured_timeout(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp], paused: Callable[[], None]
) -> None:
    pdp = start_pdp(opa.url, opa_timeout_s=0.2)
    paused()
    start = time.monotonic()
    assert_fail_closed(pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=10), "pdp.opa_timeout")
    assert time.monotonic() - start < 2
    wait_for(lambda: pdp.health_status() == NOT_SERVING, what="NOT_SERVING while OPA hangs")


def test_pdp_without_opa_at_all(start_pdp: Callable[..., Pdp]) -> None:
    from pdp.sidecar import free_port

    pdp = start_pdp(f"http://127.0.0.1:{free_port()}")
    assert_fail_closed(pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=2), "pdp.opa_unavailable")
    assert pdp.health_status() == NOT_SERVING


@pytest.mark.parametrize(
    ("bundle", "error_code"),
    [
        ("undefined", "pdp.policy_undefined"),  # bundle lacks the decision document
        ("malformed", "pdp.policy_malformed"),  # decision breaks the contract
        ("conflict", "pdp.opa_error"),  # evaluation error: OPA answers HTTP 500
    ],
)
def test_broken_bundle(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], bundle: str, error_code: str
) -> None:
    opa = start_opa(bundle=BUNDLES / bundle)
    pdp = start_pdp(opa.url)
    assert_fail_closed(pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5), error_code)
    if bundle != "conflict":  # the health probe's empty input does not trigger the conflict
        assert pdp.health_status() == NOT_SERVING


def test_bundle_that_does_not_compile_keeps_opa_down(start_opa: Callable[..., OpaSidecar], tmp_path: Path) -> None:
    (tmp_path / "pdp").mkdir()
    (tmp_path / ".manifest").write_text('{"revision": "broken", "roots": ["pdp"]}')
    (tmp_path / "pdp" / "decision.rego").write_text("package pdp\n\ndecision := {\n")
    with pytest.raises(SidecarError, match="opa exited"):
        start_opa(bundle=tmp_path)


def test_shutdown_drains_in_flight_calls(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> None:
    pdp = start_pdp(opa.url, opa_timeout_s=5.0)
    assert opa.process is not None
    freeze(opa.process.pid)
    results: list[pb.DecideResponse] = []
    call = threading.Thread(target=lambda: results.append(pdp.stub.Decide(load_request("allow-crm-lookup.json"))))
    call.start()
    wait_for(lambda: unread_bytes(opa) > 0, what="the request to reach the frozen OPA")
    stopper = threading.Thread(target=pdp.server.stop, args=(10,))
    stopper.start()
    wait_for(lambda: refuses_new_calls(pdp), what="new calls to be refused while one is in flight")
    os.kill(opa.process.pid, signal.SIGCONT)
    call.join(10)
    stopper.join(10)
    assert results and results[0].outcome == pb.OUTCOME_ALLOW  # the in-flight call got its real answer


def refuses_new_calls(pdp: Pdp) -> bool:
    try:
        pdp.health_status()
    except grpc.RpcError as e:
        return e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    return False


def test_a_retry_after_a_state_store_outage_is_decided_afresh(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp], postgres_server: PostgresServer, postgres_url: str
) -> None:
    # README: "A fail-closed answer is not kept: a retry after the outage is decided afresh."
    pdp = start_pdp(opa.url, state_url=postgres_url)
    req = load_request("fintech-allow-transfer.json")  # a payment: its budgets need the store
    postgres_server.stop()
    try:
        down = pdp.stub.Decide(req, timeout=10)
    finally:
        postgres_server.start()
    assert_fail_closed(down, "pdp.state_unavailable")
    again = pdp.stub.Decide(req, timeout=10)  # the same request id, the store back
    assert again.outcome == pb.OUTCOME_ALLOW and again.decision_id != down.decision_id
    assert pdp.stub.Decide(req, timeout=10).record == again.record  # and now that answer is what a retry gets


def test_an_explained_decision_fails_closed_at_the_decision_timeout_and_says_why_it_is_unexplained(
    opa: OpaSidecar, start_pdp: Callable[..., Pdp], paused: Callable[[], None]
) -> None:
    # The verdict comes from the ordinary query; asking for an explanation never buys OPA more time.
    pdp = start_pdp(opa.url, opa_timeout_s=0.2, opa_explain_timeout_s=30.0)
    req = load_request("allow-crm-lookup.json")
    req.explain = pb.EXPLAIN_LEVEL_FULL
    paused()
    start = time.monotonic()
    resp = pdp.stub.Decide(req, timeout=60)
    assert time.monotonic() - start < 10  # not the 30 s explanation timeout
    assert_fail_closed(resp, "pdp.opa_timeout")
    assert not resp.explanation.events
    assert resp.explanation.omitted == "omitted: the policy was not asked (pdp.opa_timeout)"
