"""The MCP proxy continues the client's trace, and its Decide call shows under its span (real Jaeger)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from pdp.sidecar import OpaSidecar, free_port
from tests.e2e.test_tracing import Jaeger, jaeger  # noqa: F401  (the fixture)
from tests.helpers import EXAMPLES, ROOT, serve_env, wait_for

pytestmark = pytest.mark.e2e

FS_SERVER = ROOT / ".mcp-servers" / "node_modules" / ".bin" / "mcp-server-filesystem"


def test_a_tools_call_span_continues_the_clients_trace_and_holds_the_decide(
    jaeger: Jaeger,  # noqa: F811
    opa: OpaSidecar,
    tmp_path: Path,
) -> None:
    port = free_port()
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    env = serve_env(tmp_path, port=port, opa_url=opa.url, OTEL_SERVICE_NAME="pdp", **otel)
    log = tmp_path / "pdp.log"
    with log.open("w") as out:
        serve = subprocess.Popen([sys.executable, "-m", "pdp", "serve"], cwd=ROOT, env=env, stdout=out, stderr=out)
    trace_id, parent_id = "5bf92f3577b34da6a3ce929d0e0e4736", "10f067aa0ba902b7"
    proxy = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "pdp", "mcp-proxy", "--agent", "coding-agent", "--agent-version", "1.0.0"),
            *("--pdp", f"127.0.0.1:{port}", "--mapping", str(EXAMPLES / "mcp" / "filesystem.json")),
            *("--", str(FS_SERVER), str(tmp_path)),
        ],
        env={**os.environ, **otel, "OTEL_SERVICE_NAME": "pdp-mcp-proxy"},
    )

    async def call() -> MCPError:
        async with Client(proxy, read_timeout_seconds=30) as client:
            with pytest.raises(MCPError) as e:
                await client.call_tool(
                    "read_text_file",
                    {"path": str(tmp_path / "x.txt")},  # outside the pack's roots: denied
                    meta={"traceparent": f"00-{trace_id}-{parent_id}-01"},
                )
            return e.value

    try:
        wait_for(lambda: "PDP gRPC on" in log.read_text() or serve.poll() is not None, timeout_s=30, what="pdp")
        assert serve.poll() is None, log.read_text()
        err = anyio.run(call)
        assert err.code == -32001
        wait_for(
            lambda: {"pdp", "pdp-mcp-proxy"} <= {s["service"] for s in jaeger.spans(trace_id)},
            timeout_s=30,
            what="proxy and PDP spans in Jaeger",
        )
    finally:
        serve.terminate()
        serve.wait(30)
    spans = jaeger.spans(trace_id)
    by_id = {s["spanId"]: s for s in spans}
    (gate,) = [s for s in spans if s["name"] == "mcp tools/call read_text_file"]
    assert gate["service"] == "pdp-mcp-proxy"
    assert gate["parentSpanId"] == parent_id
    (decide,) = [s for s in spans if s["service"] == "pdp" and s["name"] == "/pdp.v1.DecisionService/Decide"]
    ancestors = []
    span = decide
    while span.get("parentSpanId") in by_id:
        span = by_id[span["parentSpanId"]]
        ancestors.append(span["spanId"])
    assert gate["spanId"] in ancestors
