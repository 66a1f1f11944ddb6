"""The budget and kill-switch metrics (pdp.budget.*, pdp.suspension.* in pdp/telemetry.py), read in
memory from a real PDP in front of a real OPA, with the embedded state store beside its log."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pdp import keys
from pdp.config import Settings
from pdp.server import create_server
from pdp.sidecar import OpaSidecar
from pdp.telemetry import Telemetry
from pdp.trust import TrustConfig
from pdp.v1 import admin_pb2 as admin_pb
from pdp.v1 import admin_pb2_grpc as admin_grpc
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import dev_issuers, load_request
from tests.integration.test_budgets import LOOKUP, _bundle

PAYMENT = "fintech-allow-transfer.json"  # the payments agent pays for bob: under velocity and a daily amount


class InMemoryTelemetry(Telemetry):
    """The PDP's telemetry with its instruments made on a meter read in memory (they are made when
    :class:`Telemetry` is built, so replacing ``meter_provider`` afterwards would not reach them),
    and counted as exporting, so the usage share is measured as it is when metrics go somewhere."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self._reader = reader
        super().__init__({})

    def _meter_provider(self, env: Mapping[str, str]) -> metrics.MeterProvider:
        return MeterProvider(metric_readers=[self._reader])

    @property
    def exporting(self) -> bool:
        return True


@dataclasses.dataclass
class Metered:
    stub: pb_grpc.DecisionServiceStub
    admin: admin_grpc.AdminServiceStub
    reader: InMemoryMetricReader

    def points(self, name: str) -> dict[str, Any]:
        """The metric's value by its attributes (``k=v,...``, sorted); empty when it never moved."""
        data = self.reader.get_metrics_data()
        found: dict[str, Any] = {}
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        for p in m.data.data_points:
                            key = ",".join(k + "=" + str(v) for k, v in sorted((p.attributes or {}).items()))
                            found[key] = p.value if hasattr(p, "value") else p
        return found


@pytest.fixture
def metered(tmp_path: Path, start_opa: Callable[..., OpaSidecar]) -> Iterator[Metered]:
    """A PDP whose metrics go to an in-memory reader; the payments agent may pay once an hour."""
    bundle = _bundle(tmp_path, lambda c: c["fintech"]["velocity"]["agents"].update({"payments-agent": 1}))
    home = tmp_path / "pdp"
    keys.ensure(home / "keys")
    settings = Settings(
        listen="127.0.0.1:0",
        opa_url=start_opa(bundle=bundle).url,
        key_dir=home / "keys",
        log_dir=home / "log",
        trust=TrustConfig.load(dev_issuers() / "trust.json"),
    )
    reader = InMemoryMetricReader()
    server, port = create_server(settings, InMemoryTelemetry(reader))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield Metered(pb_grpc.DecisionServiceStub(channel), admin_grpc.AdminServiceStub(channel), reader)
    channel.close()
    server.stop(1)


def test_a_refused_reservation_counts_by_budget(metered: Metered) -> None:
    # One batch: both payments are bound with nothing used, so the policy allows both; the store
    # takes the first reservation and refuses the second (the PDP's budget.exceeded, not the policy's).
    batch = pb.DecideBatchRequest(requests=[load_request(PAYMENT), load_request(PAYMENT)])
    answers = metered.stub.DecideBatch(batch, timeout=10).responses
    assert [a.outcome for a in answers] == [pb.OUTCOME_ALLOW, pb.OUTCOME_DENY]
    assert [r.code for r in answers[1].reasons] == ["budget.exceeded"]
    assert "fintech.velocity" in answers[1].reasons[0].message

    assert metered.points("pdp.budget.refused") == {"budget=fintech.velocity": 1}  # only the one over
    reserved = metered.points("pdp.budget.reserved")
    assert reserved["budget=fintech.velocity"] == 1  # the first payment's one call
    usage = metered.points("pdp.budget.usage")["budget=fintech.velocity"]
    assert (usage.count, usage.sum) == (1, 1.0)  # after it, the whole of the limit of one

    # A later payment sees the budget full: the policy denies it, no reservation is tried or refused.
    later = metered.stub.Decide(load_request(PAYMENT), timeout=10)
    assert [r.code for r in later.reasons] == ["budget.exceeded"]
    assert metered.points("pdp.budget.refused") == {"budget=fintech.velocity": 1}


def test_a_suspended_decision_counts_by_kind(metered: Metered) -> None:
    assert metered.points("pdp.suspension.denials") == {}
    metered.admin.Suspend(
        admin_pb.SuspendRequest(kind="agent", value="support-bot", reason="looping on lookups"), timeout=10
    )
    metered.admin.Suspend(
        admin_pb.SuspendRequest(kind="tool", value="payments.transfer", reason="bank API incident"), timeout=10
    )
    denied = [metered.stub.Decide(load_request(name), timeout=10) for name in (LOOKUP, LOOKUP, PAYMENT)]
    assert [[r.code for r in d.reasons] for d in denied] == [["agent.suspended"]] * 2 + [["tool.suspended"]]

    assert metered.points("pdp.suspension.denials") == {"kind=agent": 2, "kind=tool": 1}
    assert metered.points("pdp.suspension.changes") == {"action=suspend,kind=agent": 1, "action=suspend,kind=tool": 1}
    metered.admin.Resume(admin_pb.ResumeRequest(value="support-bot"), timeout=10)
    assert metered.points("pdp.suspension.changes")["action=resume,kind=agent"] == 1
    assert metered.points("pdp.decisions")["outcome=deny,reason=agent.suspended"] == 2
