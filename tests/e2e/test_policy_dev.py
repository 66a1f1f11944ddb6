"""`pdp dev` (what `make run` runs) serves a signed bundle and runs a shadow candidate beside it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdp.policy import bundles
from pdp.sidecar import free_port
from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.e2e

V1 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v1"
V2 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v2"
PDP = [sys.executable, "-m", "pdp"]


def claims(record: str) -> dict:
    payload = record.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def decide(addr: str, example: str) -> dict:
    out = subprocess.run(
        [*PDP, "decide", "--addr", addr, str(ROOT / "examples" / example)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_pdp_dev_serves_a_signed_bundle_and_shadows_a_candidate(opa_bin: str, tmp_path: Path) -> None:
    bundle = tmp_path / "policy"
    subprocess.run(["cp", "-r", str(V1), str(bundle)], check=True)
    port = free_port()
    env = {
        **os.environ,
        "PDP_OPA_BIN": opa_bin,
        "PDP_LISTEN": f"127.0.0.1:{port}",
        "PDP_KEY_DIR": str(tmp_path / "run" / "keys"),
        "PDP_LOG_DIR": str(tmp_path / "run" / "log"),
    }
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            [
                *PDP,
                "dev",
                "--bundle",
                str(bundle),
                "--opa-addr",
                f"127.0.0.1:{free_port()}",
                "--shadow-bundle",
                str(V2),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "PDP gRPC on" in log.read_text() or dev.poll() is not None, timeout_s=30, what="pdp dev")
        assert dev.poll() is None, log.read_text()
        key = bundles.SigningKey.load(tmp_path / "run" / "bundle-key")
        assert "signed by key " + key.key_id in log.read_text()
        addr = f"127.0.0.1:{port}"
        answer = decide(addr, "allow-crm-lookup.json")
        assert answer["outcome"] == "OUTCOME_ALLOW"
        assert claims(answer["record"])["bundles"] == {"rego": {"revision": "lifecycle-1", "signing_key": key.key_id}}
        # The candidate (v2) denies crm.lookup: a shadow record joins the log; the answer stayed ALLOW.
        segment = tmp_path / "run" / "log" / "segment-000000.log"
        wait_for(lambda: b"pdp-shadow" in _headers(segment), timeout_s=10, what="a shadow record")
    finally:
        dev.terminate()
        dev.wait(timeout=20)


def _headers(segment: Path) -> bytes:
    """The decoded JWS headers of the log's entries (enough to tell record types apart)."""
    data, at, out = segment.read_bytes() if segment.exists() else b"", 0, b""
    while at + 4 <= len(data):
        n = int.from_bytes(data[at : at + 4], "big")
        head = data[at + 4 : at + 4 + n].split(b".")[0]
        out += base64.urlsafe_b64decode(head + b"=" * (-len(head) % 4))
        at += 4 + n + 4
    return out
