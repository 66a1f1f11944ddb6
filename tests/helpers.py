"""What tests share, in one module: paths, waiting, requests, the one way to start a ``pdp``
child process, reading a record's claims, the one fail-closed assertion, and a proxy in front of
OPA that records and holds queries.

Fixtures live in ``tests/conftest.py``; it re-exports these names for the tests that import them
from there.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import http.client
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import devissuer, keys
from pdp.server import PdpServer
from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
PDP_COMMAND = [sys.executable, "-m", "pdp"]
BUNDLE = ROOT / "rego"
EXAMPLES = ROOT / "examples"
INTEROP_CASES = ROOT / "tests" / "data" / "authzen" / "todo-interop.json"
CHROMIUM = os.environ.get("PDP_CHROMIUM", "/usr/bin/chromium")  # Debian's; tests never download a browser
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Polls ``condition`` until it is true; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}")


def serve_env(home: Path, *, port: int, opa_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``pdp serve`` child on ``port``: its signing key (made here) and its
    log under ``home``, trusting the :func:`dev_issuers`, asking the OPA at ``opa_url``; ``extra``
    adds or overrides variables."""
    keys.ensure(home / "keys")
    return {
        **os.environ,
        "PDP_LISTEN": f"127.0.0.1:{port}",
        "PDP_OPA_URL": opa_url,
        "PDP_KEY_DIR": str(home / "keys"),
        "PDP_LOG_DIR": str(home / "log"),
        "PDP_TRUST_FILE": str(dev_issuers() / "trust.json"),
        **extra,
    }


@functools.cache
def dev_issuers() -> Path:
    """One set of dev token issuers (``pdp dev-issuer init``) for the whole test session; the
    PDPs of the ``start_pdp`` fixture trust them unless told otherwise."""
    return devissuer.init(Path(tempfile.mkdtemp(prefix="pdp-test-issuers-"))).parent


def dev_env(home: Path, *, port: int, opa_bin: str, **extra: str) -> dict[str, str]:
    """The environment of a ``pdp dev`` child on ``port``: its key (``pdp dev`` makes it) and log
    under ``home``, starting the ``opa`` at ``opa_bin``; ``extra`` adds or overrides variables."""
    return {
        **os.environ,
        "PDP_OPA_BIN": opa_bin,
        "PDP_LISTEN": f"127.0.0.1:{port}",
        "PDP_HTTP_LISTEN": f"127.0.0.1:{free_port()}",  # pdp dev's default, 8080, may be taken
        "PDP_CONSOLE_LISTEN": f"127.0.0.1:{free_port()}",  # pdp dev's default, 8081, likewise
        "PDP_KEY_DIR": str(home / "keys"),
        "PDP_LOG_DIR": str(home / "log"),
        **extra,
    }


def load_request(name: str, *, tokens: bool = True) -> pb.DecideRequest:
    """An example request from examples/ (proto3 JSON), with a request id of its own, and (as a
    PEP does) the principal token, risk assertion and lineage attestations for what it asserts,
    from :func:`dev_issuers` (``tokens=False``: the caller's word only).

    Each call is a new request: the PDP answers a repeated request id with its first record.
    """
    req = json_format.Parse((EXAMPLES / name).read_text(), pb.DecideRequest())
    req.request_id = f"{req.request_id}-{uuid.uuid4().hex[:12]}"
    if tokens:
        devissuer.forward_tokens(req, dev_issuers())
    return req


def request(**context: Any) -> pb.DecideRequest:
    """A DecideRequest from a dict in proto3 JSON form of ActionContext."""
    return json_format.ParseDict({"context": context}, pb.DecideRequest())


def start_child(
    command: str,
    *args: str,
    env: dict[str, str],
    log: Path,
    stdout: int | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[str]:
    """Starts ``pdp serve`` or ``pdp dev`` (``command``) as a child with its output appended to ``log``
    (standard output too, unless ``stdout`` says otherwise); returns once it listens, or fails the test."""
    log.touch()
    before = log.stat().st_size
    with log.open("a") as out:
        process = subprocess.Popen(
            [*PDP_COMMAND, command, *args],
            cwd=ROOT,
            env=env,
            stdout=out if stdout is None else stdout,
            stderr=out,
            text=True,
            preexec_fn=preexec_fn,  # noqa: PLW1509  (only limits, set before exec)
        )

    def started() -> bool:
        return "PDP gRPC on" in log.read_bytes()[before:].decode(errors="replace") or process.poll() is not None

    wait_for(started, timeout_s=30, what=f"pdp {command}")
    assert process.poll() is None, log.read_text()
    return process


def interop_cases() -> list[dict[str, Any]]:
    """The AuthZEN interop Todo scenario's cases: each a ``name``, the ``endpoint`` it posts to
    (``evaluation`` or ``evaluations``), the ``request`` body, and what it ``expect``s (the decision,
    or the list of decisions of a batch)."""
    cases: list[dict[str, Any]] = json.loads(INTEROP_CASES.read_text())["cases"]
    return cases


def interop_answer(session: requests.Session, url: str, case: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Posts an :func:`interop_cases` case to the AuthZEN face at ``url`` as the interop harness does;
    returns what it decided (in the form of the case's ``expect``) and the whole answer."""
    r = session.post(f"{url}/access/v1/{case['endpoint']}", json=case["request"], timeout=10)
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    got = doc["decision"] if case["endpoint"] == "evaluation" else [e["decision"] for e in doc["evaluations"]]
    return got, doc


def claims_of(record: str) -> dict[str, Any]:
    """The claims of a record (its JWS payload), decoded without the PDP's code."""
    payload = record.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def assert_fail_closed(resp: pb.DecideResponse, error_code: str) -> None:
    """No policy verdict: DENY, indeterminate, the ``pdp.*`` code, and that code as the only reason."""
    assert resp.outcome == pb.OUTCOME_DENY
    assert resp.indeterminate
    assert resp.error_code == error_code
    assert [r.code for r in resp.reasons] == [error_code]


@dataclasses.dataclass
class Pdp:
    server: PdpServer
    port: int
    channel: grpc.Channel
    stub: pb_grpc.DecisionServiceStub
    health: health_pb2_grpc.HealthStub

    def health_status(self, service: str = "") -> int:
        return int(self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue_cert(
    name: str, sans: list[x509.GeneralName], issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


class LocalContainers:
    """A deployment file's containers run as local processes, its container paths mapped under a
    temporary ``home`` (tests/unit/test_compose.py, tests/unit/test_k8s.py)."""

    def __init__(self, home: Path, paths: dict[str, Path]) -> None:
        pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, sorted(paths, key=len, reverse=True))) + ")")
        self.local: Callable[[str], str] = lambda s: pattern.sub(lambda m: str(paths[m.group(1)]), s)
        self.home = home
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Starts one container's process, its output in ``home/<name>.out``."""
        out = (self.home / f"{name}.out").open("wb")
        process = subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=out, stderr=out)
        out.close()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stops them in reverse order of start (the PDP first, its OPA last)."""
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=20)


Rewrite = Callable[[str, bytes], tuple[int, bytes]]


class CountingProxy:
    """Forwards POSTs to OPA, recording each (path, body); holds them while ``gate`` is clear."""

    def __init__(self, opa_url: str) -> None:
        self.opa = urllib.parse.urlsplit(opa_url).netloc
        self.queries: list[tuple[str, dict[str, Any]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.rewrite: Rewrite | None = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                proxy.queries.append((self.path, json.loads(body)))
                proxy.gate.wait(10)
                conn = http.client.HTTPConnection(proxy.opa, timeout=10)
                conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                status, raw = resp.status, resp.read()
                conn.close()
                if proxy.rewrite is not None:
                    status, raw = proxy.rewrite(self.path, raw)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def decisions(self) -> list[tuple[str, dict[str, Any]]]:
        """The queries for decisions, leaving out the PDP's health probes (their input is empty)."""
        return [(p, body) for p, body in self.queries if body["input"]]

    def paths(self) -> list[str]:
        """The rule paths queried for decisions."""
        return [p.split("?", 1)[0] for p, _ in self.decisions()]

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()
