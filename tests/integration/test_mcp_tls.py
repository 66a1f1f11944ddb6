"""`pdp mcp-proxy` asks a PDP that requires mTLS: with its client certificate a call goes through and
the PDP records the proxy's certificate identity; with a CA that does not vouch for the PDP, no client
certificate, or plaintext, no decision can be had and the call is refused (-32603) without reaching
the server. A write held for approval is approved by a steward with their certificate, and the proxy
(fetching the approval tokens as the certificate that opened the escalation) forwards the retry. Bad
TLS options, and plaintext to a PDP beyond loopback, stop the proxy at start."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mcp import Client
from mcp.types import CallToolResult

from pdp.sidecar import OpaSidecar
from tests.helpers import EXAMPLES, ROOT, Pdp, issue_cert, pem_key, wait_for
from tests.integration import test_mcp_proxy as mcp
from tests.integration.test_mcp_proxy import META, World, log_claims, refused, session

pytestmark = pytest.mark.integration

PROXY_ID = "spiffe://example.org/mcp-proxy/files"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, the PDP's certificate (for 127.0.0.1), the proxy's client certificate (CN mcp-proxy and
    a SPIFFE ID), an approver's (CN :data:`mcp.STEWARD`), and another CA that vouches for none of them, as
    PEM files in one directory."""
    out = tmp_path / "pki"
    out.mkdir()
    ca = issue_cert("test-ca", [], None)
    issued = {
        "pdp": issue_cert("pdp", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], ca),
        "proxy": issue_cert("mcp-proxy", [x509.UniformResourceIdentifier(PROXY_ID)], ca),
        "steward": issue_cert(mcp.STEWARD, [], ca),  # an approver: the PDP takes the approver from the CN
        "ca": ca,
        "other-ca": issue_cert("other-ca", [], None),
    }
    for name, (cert, key) in issued.items():
        (out / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{name}-key.pem").write_bytes(pem_key(key))
    return out


def mtls_world(tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], pki: Path,
               **fs_config: Any) -> World:  # fmt: skip
    """The filesystem server behind a PDP that requires mTLS (certificates from :func:`pki`)."""
    files = {"tls_cert_file": "pdp.pem", "tls_key_file": "pdp-key.pem", "tls_client_ca_file": "ca.pem"}
    tls = {setting: pki / name for setting, name in files.items()}
    return mcp.make_world(tmp_path, start_opa, start_pdp, fs_config=fs_config, **tls)


@pytest.fixture
def world(tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], pki: Path) -> World:
    # Writes inside the roots are allowed outright here, so a forwarded write shows in the file.
    return mtls_world(tmp_path, start_opa, start_pdp, pki, approval_operations=[])


def mtls(pki: Path, ca: str = "ca") -> tuple[str, ...]:
    return ("--ca", str(pki / f"{ca}.pem"), "--cert", str(pki / "proxy.pem"), "--key", str(pki / "proxy-key.pem"))


def test_a_call_goes_through_over_mtls_and_the_record_names_the_proxys_certificate(world: World, pki: Path) -> None:
    target = world.allowed / "over-mtls.txt"

    result = session(
        world.files(*mtls(pki)), lambda c: c.call_tool("write_file", {"path": str(target), "content": "via mTLS"})
    )

    assert target.read_text() == "via mTLS"
    decision = (result.meta or {})[META]
    assert decision["outcome"] == "allow"
    claims = log_claims(world.log_dir)
    record = claims[decision["log_index"]]
    assert record["pdp"]["aud"] == PROXY_ID  # made for this proxy, named by its certificate
    caller = record["input"]["bound"]["caller"]
    assert (caller["authenticated"], caller["subject"], caller["uri_sans"]) == (True, "mcp-proxy", [PROXY_ID])
    assert claims[decision["outcome_log_index"]]["outcome"]["status"] == "executed"
    assert "OK:" in mcp.audit_verify(world)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param(lambda pki: mtls(pki, ca="other-ca"), id="a CA that does not vouch for the PDP"),
        pytest.param(lambda pki: ("--ca", str(pki / "ca.pem")), id="no client certificate"),
        pytest.param(lambda pki: (), id="plaintext"),
    ],
)
def test_without_a_channel_the_pdp_accepts_the_call_fails_closed(
    world: World, pki: Path, flags: Callable[[Path], tuple[str, ...]]
) -> None:
    target = world.allowed / "never.txt"

    err = session(
        world.files(*flags(pki)),
        lambda c: refused(c, "write_file", {"path": str(target), "content": "must not be written"}),
    )

    assert err.code == -32603
    assert "could not be asked" in err.message and "nothing was forwarded" in err.message
    assert err.data["pdp_status"] == "UNAVAILABLE"
    assert not target.exists()
    assert log_claims(world.log_dir) == []  # the PDP decided nothing


def proxy_command(*flags: str) -> list[str]:
    """``pdp mcp-proxy`` with these flags, in front of a server command that exits at once."""
    mapping = str(EXAMPLES / "mcp" / "filesystem.json")
    return [*mcp.PDP_CMD, "mcp-proxy", "--agent", "coding-agent", "--mapping", mapping, *flags, "--", "true"]


def start_proxy(*flags: str) -> subprocess.CompletedProcess[str]:
    """Runs a proxy that is expected to stop at start (bad options)."""
    command = proxy_command(*flags)
    return subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_tls_options_it_cannot_use_stop_the_proxy_at_start_naming_the_option(pki: Path) -> None:
    key, cert, ca = str(pki / "proxy-key.pem"), str(pki / "proxy.pem"), str(pki / "ca.pem")
    missing = str(pki / "missing.pem")
    for flags, says in [
        (("--ca", missing), f"--ca: cannot read {missing}: No such file or directory"),
        (("--ca", ca, "--cert", cert, "--key", missing), f"--key: cannot read {missing}"),
        (("--ca", ca, "--cert", missing, "--key", key), f"--cert: cannot read {missing}"),
        (("--ca", key), "--ca: not a PEM certificate"),
        (("--ca", ca, "--cert", cert), "--key: --cert and --key go together"),
        (("--ca", ca, "--cert", cert, "--key", str(pki / "pdp-key.pem")), "--key: does not belong to the certificate"),
        (("--server-name", "pdp"), "--server-name: applies to TLS only"),
    ]:
        done = start_proxy("--pdp", "127.0.0.1:1", *flags)
        assert done.returncode == 2 and done.stderr.startswith(f"pdp mcp-proxy: {says}"), (flags, done.stderr)


def test_plaintext_to_a_pdp_beyond_loopback_is_refused_unless_asked_for(tmp_path: Path) -> None:
    refused_start = start_proxy("--pdp", "192.0.2.10:50051")
    assert refused_start.returncode == 2
    assert refused_start.stderr.startswith("pdp mcp-proxy: --pdp: 192.0.2.10:50051 is beyond loopback")
    assert "--allow-insecure-non-loopback" in refused_start.stderr and "--ca" in refused_start.stderr

    # Asked for: it starts, and says loudly what it does.
    errors = tmp_path / "proxy.err"
    with errors.open("w") as err:
        proxy = subprocess.Popen(
            proxy_command("--pdp", "192.0.2.10:50051", "--allow-insecure-non-loopback"),
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        warned = "INSECURE: asking the PDP at 192.0.2.10:50051 over plaintext"
        wait_for(lambda: warned in errors.read_text() or proxy.poll() is not None, timeout_s=60, what="the warning")
        assert proxy.poll() is None, errors.read_text()
        assert warned in errors.read_text()
    finally:
        proxy.kill()
        proxy.wait(timeout=30)


def test_a_held_write_is_approved_and_goes_through_with_every_party_on_mtls(
    tmp_path: Path, start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], pki: Path
) -> None:
    # Writes need a data steward's approval (the pack's default). The proxy fetches the approval tokens
    # as the certificate that opened the escalation; the steward approves with theirs.
    w = mtls_world(tmp_path, start_opa, start_pdp, pki)
    target = w.allowed / "approved-over-mtls.txt"
    write = {"path": str(target), "content": "approved over mTLS"}

    def approve(escalation_id: str) -> subprocess.CompletedProcess[str]:
        steward = ("--cert", str(pki / "steward.pem"), "--key", str(pki / "steward-key.pem"))
        return subprocess.run(
            [*mcp.PDP_CMD, "approvals", "approve", escalation_id, "--addr", f"127.0.0.1:{w.pdp.port}",
             "--ca", str(pki / "ca.pem"), *steward],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    async def calls(c: Client) -> tuple[subprocess.CompletedProcess[str], CallToolResult]:
        held = await refused(c, "write_file", write)
        assert held.code == -32001 and held.data["outcome"] == "require_approval", held.message
        voted = await anyio.to_thread.run_sync(approve, held.data["approval"]["escalation_id"])
        return voted, await c.call_tool("write_file", write)

    voted, done = session(w.files(*mtls(pki), "--principal", "ops@corp.example"), calls)

    assert voted.returncode == 0, voted.stderr
    assert json.loads(voted.stdout)["escalation"]["status"] == "approved"
    assert target.read_text() == "approved over mTLS"
    record = log_claims(w.log_dir)[(done.meta or {})[META]["log_index"]]
    assert record["pdp"]["aud"] == PROXY_ID and record["pdp"]["approvals"]["consumed"] is True
    assert [a["approver_id"] for a in record["input"]["bound"]["approvals"]] == [mcp.STEWARD]
