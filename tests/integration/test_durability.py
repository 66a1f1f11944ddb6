"""The PDP process under failure: killed mid-load, and a log that cannot be written."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.ledger import audit
from pdp.sidecar import OpaSidecar, free_port
from pdp.state import open_store
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import load_request, serve_env, start_child, wait_for

pytestmark = pytest.mark.integration


def _as_an_ordinary_process() -> None:
    """Root ignores file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH); take those from the
    child's bounding set before exec, so a read-only directory is read-only for the PDP too."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


class Proc:
    def __init__(
        self, opa: OpaSidecar, home: Path, *, fsize: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.home = home
        env = serve_env(home, port=self.port, opa_url=opa.url, PDP_HEALTH_INTERVAL_MS="100", **(env or {}))

        def limit() -> None:
            _as_an_ordinary_process()
            if fsize is not None:  # the disk is full past this many bytes per file
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

        self.process = start_child("serve", env=env, log=home / "pdp.out", preexec_fn=limit)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.DecisionServiceStub(self.channel)
        wait_for(self.serving, timeout_s=20, what="PDP serving")

    def serving(self) -> bool:
        assert self.process.poll() is None, (self.home / "pdp.out").read_text()
        try:
            status = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        except grpc.RpcError:
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def stop(self) -> None:
        self.channel.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def test_sigkill_under_load_loses_no_answered_decision(opa: OpaSidecar, tmp_path: Path, procs: list[Proc]) -> None:
    pdp = Proc(opa, tmp_path)
    procs.append(pdp)
    answered: list[tuple[str, int]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=2)
            except grpc.RpcError:
                return  # the PDP died: this call was never answered
            with lock:
                answered.append((resp.decision_id, resp.log_index))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: len(answered) >= 200, timeout_s=60, what="200 answered decisions")
    pdp.process.send_signal(signal.SIGKILL)
    pdp.process.wait()
    stop.set()
    for t in threads:
        t.join()

    again = Proc(opa, tmp_path)  # restart on the same key and log: recovery runs
    procs.append(again)
    for decision_id, index in answered:
        got = again.stub.GetDecision(pb.GetDecisionRequest(decision_id=decision_id), timeout=5)
        assert got.log_index == index
    again.stop()
    report = audit.verify_log(tmp_path / "log", jwks=json.loads((tmp_path / "keys/jwks.json").read_text()))
    assert report.entries >= len(answered)


def test_a_log_that_cannot_be_written_never_yields_allow(opa: OpaSidecar, tmp_path: Path, procs: list[Proc]) -> None:
    open_store(tmp_path / "state").close()  # the state store (~50 kB) exists before the log fills the disk
    pdp = Proc(opa, tmp_path, fsize=64_000)
    procs.append(pdp)
    outcomes = []
    for _ in range(120):  # enough records to pass the file size limit
        resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
        outcomes.append((resp.outcome, resp.error_code, bool(resp.record)))
    assert outcomes[0] == (pb.OUTCOME_ALLOW, "", True)
    failed_at = next(i for i, o in enumerate(outcomes) if o[1])
    assert all(o == (pb.OUTCOME_DENY, "pdp.ledger_unavailable", False) for o in outcomes[failed_at:])
    wait_for(lambda: not pdp.serving(), timeout_s=5, what="NOT_SERVING")


def test_a_full_disk_recovers_without_restart(opa: OpaSidecar, tmp_path: Path, procs: list[Proc]) -> None:
    open_store(tmp_path / "state").close()
    pdp = Proc(opa, tmp_path, fsize=64_000)
    procs.append(pdp)
    answered = []
    for _ in range(120):  # past the file size limit: the disk is full
        resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
        if resp.error_code:
            break
        answered.append(resp)
    assert resp.error_code == "pdp.ledger_unavailable" and answered
    wait_for(lambda: not pdp.serving(), timeout_s=5, what="NOT_SERVING while the disk is full")
    assert not pdp.serving()  # the health monitor's re-probe finds no room either
    resource.prlimit(pdp.process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    wait_for(pdp.serving, timeout_s=10, what="SERVING again once there is space, without a restart")
    later = [pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5) for _ in range(3)]
    assert all(r.outcome == pb.OUTCOME_ALLOW and r.record for r in later)
    # Nothing answered was lost or moved: the answered records are where they were, and the log
    # goes on right after them, and verifies from its files alone.
    assert [r.log_index for r in later] == [answered[-1].log_index + 1 + i for i in range(3)]
    for r in [*answered, *later]:
        got = pdp.stub.GetDecision(pb.GetDecisionRequest(decision_id=r.decision_id), timeout=5)
        assert (got.record, got.log_index) == (r.record, r.log_index)
    pdp.stop()
    report = audit.verify_log(tmp_path / "log", jwks=json.loads((tmp_path / "keys/jwks.json").read_text()))
    assert report.entries == answered[-1].log_index + 4


def test_a_read_only_log_directory_never_yields_allow(opa: OpaSidecar, tmp_path: Path, procs: list[Proc]) -> None:
    pdp = Proc(opa, tmp_path, env={"PDP_SEGMENT_MAX_BYTES": "4096"})  # a new segment every few records
    procs.append(pdp)
    first = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    assert (first.outcome, bool(first.record)) == (pb.OUTCOME_ALLOW, True)
    log_dir = tmp_path / "log"
    log_dir.chmod(0o555)  # the volume turns read-only under the PDP: no new segment can be made
    try:
        outcomes = []
        for _ in range(10):
            resp = pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
            outcomes.append((resp.outcome, resp.error_code, bool(resp.record)))
    finally:
        log_dir.chmod(0o755)
    failed_at = next(i for i, o in enumerate(outcomes) if o[1])
    assert all(o == (pb.OUTCOME_DENY, "pdp.ledger_unavailable", False) for o in outcomes[failed_at:])
    wait_for(lambda: not pdp.serving(), timeout_s=5, what="NOT_SERVING")
    assert "Permission denied" in (tmp_path / "pdp.out").read_text()


def test_a_restarted_pdp_still_knows_which_allows_have_their_report(
    opa: OpaSidecar, tmp_path: Path, procs: list[Proc]
) -> None:
    # The index of reports is rebuilt from the log at open: a restart does not allow a second report.
    pdp = Proc(opa, tmp_path)
    procs.append(pdp)
    reported, unreported = (pdp.stub.Decide(load_request("allow-crm-lookup.json"), timeout=5) for _ in range(2))
    assert reported.outcome == unreported.outcome == pb.OUTCOME_ALLOW

    def report(p: Proc, decision_id: str) -> pb.ReportOutcomeResponse:
        request = pb.ReportOutcomeRequest(decision_id=decision_id, status=pb.ACTION_STATUS_EXECUTED)
        response: pb.ReportOutcomeResponse = p.stub.ReportOutcome(request, timeout=5)
        return response

    report(pdp, reported.decision_id)
    pdp.process.send_signal(signal.SIGKILL)
    pdp.process.wait()

    again = Proc(opa, tmp_path)
    procs.append(again)
    with pytest.raises(grpc.RpcError) as twice:
        report(again, reported.decision_id)
    assert twice.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert report(again, unreported.decision_id).log_index > unreported.log_index
