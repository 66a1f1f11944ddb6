"""`pdp dev` (what `make run` runs) serves a signed bundle and runs a shadow candidate beside it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pdp.policy import bundles
from pdp.sidecar import free_port
from tests.helpers import ROOT, claims_of, dev_env, start_child, wait_for

pytestmark = pytest.mark.e2e

V1 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v1"
V2 = ROOT / "tests" / "data" / "bundles" / "lifecycle-v2"
PDP = [sys.executable, "-m", "pdp"]


def decide(addr: str, example: str) -> dict:
    out = subprocess.run(
        [*PDP, "decide", "--addr", addr, str(ROOT / "examples" / example)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_pdp_dev_serves_a_signed_bundle_and_shadows_a_candidate(opa_bin: str, tmp_path: Path) -> None:
    bundle = tmp_path / "policy"
    subprocess.run(["cp", "-r", str(V1), str(bundle)], check=True)
    port = free_port()
    env = dev_env(tmp_path / "run", port=port, opa_bin=opa_bin)
    args = ["--bundle", str(bundle), "--opa-addr", f"127.0.0.1:{free_port()}", "--shadow-bundle", str(V2)]
    dev = start_child("dev", *args, env=env, log=tmp_path / "dev.log")
    log = tmp_path / "dev.log"
    try:
        key = bundles.SigningKey.load(tmp_path / "run" / "bundle-key")
        assert "signed by key " + key.key_id in log.read_text()
        addr = f"127.0.0.1:{port}"
        answer = decide(addr, "allow-crm-lookup.json")
        assert answer["outcome"] == "OUTCOME_ALLOW"
        assert claims_of(answer["record"])["bundles"] == {
            "rego": {"revision": "lifecycle-1", "signing_key": key.key_id}
        }
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
