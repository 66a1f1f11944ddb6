"""The AuthZEN interop Todo scenario against `pdp dev --bundle examples/authzen-todo`, as a child
process: the bundle signed with the dev key, OPA as its sidecar, the HTTP face on, then the audit."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp.sidecar import free_port
from tests.helpers import PDP_COMMAND, dev_env, interop_answer, interop_cases, start_child, wait_for

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING


def test_the_interop_todo_scenario_passes_against_pdp_dev(opa_bin: str, tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    home = tmp_path / "run"
    env = dev_env(home, port=port, opa_bin=opa_bin, PDP_HTTP_LISTEN=f"127.0.0.1:{http_port}", PDP_CONSOLE_LISTEN="")
    log = tmp_path / "dev.log"
    args = ["--bundle", "examples/authzen-todo", "--issuer-dir", str(tmp_path / "issuers")]
    dev = start_child("dev", *args, env=env, log=log)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:  # serving: OPA answers with the bundle
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING,
                what="pdp dev serving examples/authzen-todo",
            )
        cases, wrong = interop_cases(), []
        with requests.Session() as session:
            for case in cases:
                got, _ = interop_answer(session, f"http://127.0.0.1:{http_port}", case)
                if got != case["expect"]:
                    wrong.append(f"{case['name']}: expected {case['expect']}, got {got}")
        assert not wrong, "\n".join(wrong)
        dev.send_signal(signal.SIGINT)  # the final checkpoint on the way out
        assert dev.wait(timeout=20) == 0, log.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    jwks = home / "keys" / "jwks.json"
    audit = subprocess.run(
        [*PDP_COMMAND, "audit", "verify", str(home / "log"), "--jwks", str(jwks)], capture_output=True, text=True
    )
    assert audit.returncode == 0, audit.stderr
    decisions = sum(1 if c["endpoint"] == "evaluation" else len(c["expect"]) for c in cases)
    assert audit.stdout.startswith(f"OK: {decisions} entries ({decisions} decisions,"), audit.stdout
