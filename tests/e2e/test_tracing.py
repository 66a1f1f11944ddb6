"""One trace, caller → PDP → OPA, in a real Jaeger (built from its Go module, in-memory storage)."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import (
    ROOT,
    assert_fail_closed,
    dev_env,
    dev_issuers,
    load_request,
    request,
    serve_env,
    start_child,
    wait_for,
)

pytestmark = pytest.mark.e2e

JAEGER = ROOT / ".bin" / "jaeger"

# Jaeger v2 with only what the test needs, on free loopback ports.
JAEGER_CONFIG = """
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}, logs: {{level: warn}}}}
extensions:
  jaeger_query:
    storage: {{traces: mem}}
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{query_grpc}"}}
  jaeger_storage:
    backends: {{mem: {{memory: {{max_traces: 10000}}}}}}
receivers:
  otlp:
    protocols: {{grpc: {{endpoint: "127.0.0.1:{otlp}"}}}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  jaeger_storage_exporter: {{trace_storage: mem}}
"""


class Jaeger:
    def __init__(self, query_port: int, otlp_port: int) -> None:
        self.api = f"http://127.0.0.1:{query_port}/api/v3"
        self.otlp = f"http://127.0.0.1:{otlp_port}"

    def get(self, path: str) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.api + path, timeout=2) as resp:
                result: dict[str, Any] = json.load(resp)
                return result
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        """Every span of a trace, each with its service name under ``service``."""
        body = self.get(f"/traces/{trace_id}") or {}
        found = []
        for rs in body.get("result", {}).get("resourceSpans", []):
            attrs = {a["key"]: a["value"] for a in rs.get("resource", {}).get("attributes", [])}
            service = attrs.get("service.name", {}).get("stringValue", "")
            for ss in rs.get("scopeSpans", []):
                found += [{**span, "service": service} for span in ss.get("spans", [])]
        return found


@pytest.fixture
def jaeger(tmp_path: Path) -> Iterator[Jaeger]:
    if not JAEGER.exists():
        pytest.fail("no .bin/jaeger: run `make tools`")
    query, otlp = free_port(), free_port()
    config = tmp_path / "jaeger.yaml"
    config.write_text(JAEGER_CONFIG.format(query=query, query_grpc=free_port(), otlp=otlp))
    log = (tmp_path / "jaeger.log").open("w")
    process = subprocess.Popen([str(JAEGER), "--config", str(config)], stdout=log, stderr=log)
    j = Jaeger(query, otlp)

    def up() -> bool:
        assert process.poll() is None, (tmp_path / "jaeger.log").read_text()
        try:
            return j.get("/services") is not None
        except OSError:
            return False

    wait_for(up, timeout_s=30, what="jaeger")
    yield j
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:  # the collector's shutdown can hang on idle exporters
        process.kill()
        process.wait()


def attr(span: dict[str, Any], key: str) -> Any:
    for a in span.get("attributes", []):
        if a["key"] == key:
            value = a["value"]
            if "arrayValue" in value:
                return [next(iter(v.values())) for v in value["arrayValue"].get("values", [])]
            return next(iter(value.values()))
    return None


def test_one_trace_holds_caller_pdp_and_opa(jaeger: Jaeger, opa_bin: str, tmp_path: Path) -> None:
    port = free_port()
    env = dev_env(
        tmp_path,
        port=port,
        opa_bin=opa_bin,
        OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp,
        OTEL_SERVICE_NAME="pdp",
        OTEL_METRICS_EXPORTER="none",  # Jaeger takes traces only
        OTEL_BSP_SCHEDULE_DELAY="100",
        PDP_TRUST_FILE=str(dev_issuers() / "trust.json"),  # the issuers load_request's tokens come from
    )
    dev = start_child(
        "dev", "--bundle", "rego", "--opa-addr", f"127.0.0.1:{free_port()}", env=env, log=tmp_path / "pdp.log"
    )
    try:
        trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            resp = stub.Decide(
                load_request("fintech-deny-sanctioned.json"),
                timeout=5,
                metadata=[("traceparent", f"00-{trace_id}-{parent_id}-01")],
            )
            assert resp.outcome == pb.OUTCOME_DENY

        def whole_trace() -> bool:
            services = {s["service"] for s in jaeger.spans(trace_id)}
            return {"pdp", "opa"} <= services

        # OPA exports its spans in batches (every few seconds): keep it running until they land.
        wait_for(whole_trace, timeout_s=30, what="PDP and OPA spans in Jaeger")
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(30)
    spans = jaeger.spans(trace_id)
    by_id = {s["spanId"]: s for s in spans}
    (server,) = [s for s in spans if s["service"] == "pdp" and s["name"] == "/pdp.v1.DecisionService/Decide"]
    assert server["parentSpanId"] == parent_id
    assert attr(server, "pdp.decision_id") == resp.decision_id
    assert attr(server, "pdp.outcome") == "deny"
    assert attr(server, "pdp.reason_codes") == ["fintech.sanctioned_counterparty"]
    assert attr(server, "pdp.agent.id") == "payments-agent"
    assert attr(server, "pdp.action.tool") == "payments.transfer"
    assert attr(server, "pdp.policy.revision") == json.loads((ROOT / "rego/.manifest").read_text())["revision"]
    (client,) = [s for s in spans if s["service"] == "pdp" and s["name"].startswith("POST /v1/data/")]
    assert client["parentSpanId"] == server["spanId"]
    opa_spans = [s for s in spans if s["service"] == "opa"]
    assert any(s.get("parentSpanId") == client["spanId"] for s in opa_spans), [s["name"] for s in opa_spans]
    assert all(s["parentSpanId"] in by_id or s is server for s in spans if s.get("parentSpanId"))


def test_a_fail_closed_decision_is_an_error_span(jaeger: Jaeger, tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(
        tmp_path,
        port=port,
        opa_url=f"http://127.0.0.1:{free_port()}",  # nobody listens: OPA is down
        OTEL_EXPORTER_OTLP_ENDPOINT=jaeger.otlp,
        OTEL_SERVICE_NAME="pdp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    serve = start_child("serve", env=env, log=tmp_path / "pdp.log")
    try:
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        batch_trace_id = "0af7651916cd43dd8448eb211c80319d"
        ask = request(agent={"id": "support-bot"}, action={"tool": "crm.lookup"})
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            resp = stub.Decide(ask, timeout=5, metadata=[("traceparent", f"00-{trace_id}-b7ad6b7169203331-01")])
            answers = stub.DecideBatch(
                pb.DecideBatchRequest(requests=[ask, ask]),
                timeout=5,
                metadata=[("traceparent", f"00-{batch_trace_id}-b7ad6b7169203331-01")],
            ).responses
        assert_fail_closed(resp, "pdp.opa_unavailable")
        assert [a.outcome for a in answers] == [pb.OUTCOME_DENY] * 2
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(30)
    wait_for(lambda: bool(jaeger.spans(trace_id)), timeout_s=30, what="the span in Jaeger")
    (server,) = [s for s in jaeger.spans(trace_id) if s["name"] == "/pdp.v1.DecisionService/Decide"]
    assert server["status"]["code"] == 2  # STATUS_CODE_ERROR
    assert attr(server, "pdp.error_code") == "pdp.opa_unavailable"
    assert attr(server, "pdp.indeterminate") is True

    # A batch: one server span, one event per decision.
    wait_for(lambda: bool(jaeger.spans(batch_trace_id)), timeout_s=30, what="the batch span in Jaeger")
    (server,) = [s for s in jaeger.spans(batch_trace_id) if s["name"] == "/pdp.v1.DecisionService/DecideBatch"]
    assert server["status"]["code"] == 2
    assert int(attr(server, "pdp.batch_size")) == 2
    events = [e for e in server.get("events", []) if e["name"] == "pdp.decision"]
    assert [attr(e, "pdp.decision_id") for e in events] == [a.decision_id for a in answers]
    assert {attr(e, "pdp.error_code") for e in events} == {"pdp.opa_unavailable"}
