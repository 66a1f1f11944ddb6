"""An AuthZEN call is one trace, as a gRPC Decide is: caller → PDP's HTTP server span → OPA query."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from pdp import keys
from pdp.config import Settings
from pdp.server import create_server
from pdp.sidecar import OpaSidecar
from pdp.telemetry import Telemetry
from tests.e2e.test_tracing import Jaeger, attr, jaeger  # noqa: F401  # jaeger: the fixture
from tests.helpers import wait_for

pytestmark = pytest.mark.e2e


def test_an_authzen_evaluation_is_one_trace(
    jaeger: Jaeger,  # noqa: F811
    start_opa: Callable[..., OpaSidecar],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opa = start_opa()
    keys.ensure(tmp_path / "keys")
    for name, value in (
        ("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp),
        ("OTEL_SERVICE_NAME", "pdp"),
        ("OTEL_METRICS_EXPORTER", "none"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ):
        monkeypatch.setenv(name, value)  # the OTLP exporter reads its endpoint from the environment
    telemetry = Telemetry()
    settings = Settings(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        opa_url=opa.url,
        key_dir=tmp_path / "keys",
        log_dir=tmp_path / "log",
    )
    server, _ = create_server(settings, telemetry)
    server.start()
    try:
        assert server.http is not None
        trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        r = requests.post(
            f"http://127.0.0.1:{server.http.port}/access/v1/evaluation",
            json={
                "subject": {"type": "user", "id": "alice@example.com", "properties": {"agent_id": "support-bot"}},
                "action": {"name": "shell.exec"},
                "resource": {"type": "host", "id": "h-1"},
            },
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
            timeout=10,
        )
        assert r.status_code == 200
        result = r.json()
        assert result["decision"] is False
    finally:
        server.stop(1)  # flushes the spans

    def whole_trace() -> bool:  # the PDP and OPA export on their own schedules: wait for both
        names = [s["name"] for s in jaeger.spans(trace_id)]
        return "POST /access/v1/evaluation" in names and any(n.startswith("POST /v1/data/") for n in names)

    wait_for(whole_trace, timeout_s=30, what="the PDP's and OPA's spans in Jaeger")
    spans = jaeger.spans(trace_id)
    (span,) = [s for s in spans if s["name"] == "POST /access/v1/evaluation"]
    assert span["parentSpanId"] == parent_id
    assert attr(span, "pdp.decision_id") == result["context"]["decision_id"]
    assert attr(span, "pdp.outcome") == "deny"
    # Every reason, in order (reason_admin is keyed by code, so a code the policy gives twice is in it once).
    assert attr(span, "pdp.reason_codes") == [r["code"] for r in result["context"]["reasons"]]
    (client,) = [s for s in spans if s["name"].startswith("POST /v1/data/")]
    assert client["parentSpanId"] == span["spanId"]
