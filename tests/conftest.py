"""Shared fixtures: a real opa process on a free port, a real PDP gRPC server on port 0."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import devissuer, keys
from pdp.config import Settings
from pdp.server import PdpServer, create_server
from pdp.sidecar import OpaSidecar, free_port
from pdp.trust import TrustConfig
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "rego"
EXAMPLES = ROOT / "examples"


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
    PDPs of :func:`start_pdp` trust them unless told otherwise."""
    return devissuer.init(Path(tempfile.mkdtemp(prefix="pdp-test-issuers-"))).parent


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


@pytest.fixture(scope="session")
def opa_bin() -> str:
    path = os.environ.get("PDP_OPA_BIN") or str(ROOT / ".bin" / "opa")
    if not shutil.which(path):
        pytest.fail(f"no opa binary at {path}: run `make tools` (tests never mock OPA)")
    return path


@pytest.fixture
def start_opa(opa_bin: str, tmp_path: Path) -> Iterator[Callable[..., OpaSidecar]]:
    """Starts real OPA processes; stops them all at the end of the test."""
    started: list[OpaSidecar] = []

    def start(bundle: Path = BUNDLE, addr: str | None = None, config: dict[str, Any] | None = None) -> OpaSidecar:
        config_file = None
        if config is not None:
            config_file = tmp_path / f"opa-config-{len(started)}.json"
            config_file.write_text(json.dumps(config))
        log_file = (tmp_path / f"opa-{len(started)}.log").open("wb")
        sidecar = OpaSidecar(
            opa_bin=opa_bin,
            bundle=bundle,
            addr=addr or f"127.0.0.1:{free_port()}",
            config_file=config_file,
            log_file=log_file,
        )
        started.append(sidecar)
        sidecar.start()
        return sidecar

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def opa(start_opa: Callable[..., OpaSidecar]) -> OpaSidecar:
    """A real OPA serving the project's bundle."""
    return start_opa()


@dataclasses.dataclass
class Pdp:
    server: PdpServer
    port: int
    channel: grpc.Channel
    stub: pb_grpc.DecisionServiceStub
    health: health_pb2_grpc.HealthStub

    def health_status(self, service: str = "") -> int:
        return int(self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


@pytest.fixture
def start_pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Pdp]]:
    """Starts real PDP gRPC servers on free ports, each with its own key and decision log
    (unless ``key_dir`` / ``log_dir`` are given); stops them at the end of the test."""
    started: list[Pdp] = []

    def start(opa_url: str, **overrides: Any) -> Pdp:
        home = tmp_path_factory.mktemp("pdp")
        settings = dataclasses.replace(
            Settings(
                listen="127.0.0.1:0",
                opa_url=opa_url,
                health_interval_s=0.1,
                key_dir=home / "keys",
                log_dir=home / "log",
                trust=TrustConfig.load(dev_issuers() / "trust.json"),
            ),
            **overrides,
        )
        if settings.key_dir is not None:
            keys.ensure(settings.key_dir)
        server, port = create_server(settings)
        server.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        pdp = Pdp(server, port, channel, pb_grpc.DecisionServiceStub(channel), health_pb2_grpc.HealthStub(channel))
        started.append(pdp)
        return pdp

    yield start
    for p in started:
        p.channel.close()
        p.server.stop(1)


@pytest.fixture
def pdp(opa: OpaSidecar, start_pdp: Callable[..., Pdp]) -> Pdp:
    """A PDP in front of a real OPA serving the project's bundle."""
    return start_pdp(opa.url)
