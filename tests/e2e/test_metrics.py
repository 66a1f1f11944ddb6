"""The PDP's metrics as an SRE's collector gets them: `pdp serve` with the console metric exporter."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.sidecar import OpaSidecar, free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import load_request, serve_env, start_child

pytestmark = pytest.mark.e2e


def exported(stdout: str) -> dict[str, list[dict[str, Any]]]:
    """The data points of the last export of each metric in the console exporter's output."""
    points: dict[str, list[dict[str, Any]]] = {}
    decoder, at = json.JSONDecoder(), stdout.find("{")
    while at != -1:
        doc, end = decoder.raw_decode(stdout, at)
        for rm in doc.get("resource_metrics", []):
            for sm in rm.get("scope_metrics", []):
                for metric in sm.get("metrics", []):
                    points[metric["name"]] = metric["data"]["data_points"]
        at = stdout.find("{", end)
    return points


def test_decisions_fail_closed_and_durations_are_counted(opa: OpaSidecar, tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(
        tmp_path,
        port=port,
        opa_url=opa.url,
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="console",
        OTEL_METRIC_EXPORT_INTERVAL="60000",  # one export, at shutdown: the totals
    )
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    serve = start_child("serve", env=env, log=tmp_path / "pdp.log", stdout=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
            names = ["allow-crm-lookup.json", "deny-tool-not-granted.json", "require-approval-high-risk.json"]
            stub.DecideBatch(pb.DecideBatchRequest(requests=[load_request(n) for n in names]), timeout=5)
            opa.stop()  # OPA goes away: the next decision fails closed
            stub.Decide(load_request("allow-crm-lookup.json"), timeout=5)
    finally:
        serve.send_signal(signal.SIGINT)  # shutdown flushes the metrics
        out, _ = serve.communicate(timeout=30)
    points = exported(out)

    decisions = {(p["attributes"]["outcome"], p["attributes"]["reason"]): p["value"] for p in points["pdp.decisions"]}
    by_outcome: dict[str, int] = {}
    for (outcome, _), n in decisions.items():
        by_outcome[outcome] = by_outcome.get(outcome, 0) + n
    assert by_outcome == {"allow": 2, "deny": 2, "require_approval": 1}
    assert decisions[("deny", "pdp.opa_unavailable")] == 1
    assert [(p["attributes"], p["value"]) for p in points["pdp.fail_closed"]] == [
        ({"error_code": "pdp.opa_unavailable"}, 1)
    ]
    assert sum(p["count"] for p in points["pdp.decide.duration"]) == 5
    assert sum(p["count"] for p in points["pdp.opa.duration"]) == 2  # one Decide, one batch query
    syncs = points["pdp.ledger.sync.duration"]
    # one group commit per call, the batch of three included, and one for the escalation its
    # REQUIRE_APPROVAL opened
    assert sum(p["count"] for p in syncs) == 4
    assert all(p["sum"] > 0 for p in syncs)
