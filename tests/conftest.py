"""Shared fixtures: a real opa process on a free port, a real PDP gRPC server on port 0."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from pdp import keys
from pdp.config import Settings
from pdp.policy.bundles import SigningKey
from pdp.server import create_server
from pdp.sidecar import OpaSidecar, free_port
from pdp.trust import TrustConfig
from pdp.v1 import decision_pb2_grpc as pb_grpc
from tests.helpers import (
    BUNDLE,
    ROOT,
    Pdp,
    dev_issuers,
)

pytest_plugins = ["tests.postgres"]


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

    def start(
        bundle: Path | None = BUNDLE,
        addr: str | None = None,
        config: dict[str, Any] | None = None,
        key: SigningKey | None = None,
    ) -> OpaSidecar:
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
            verification_key=key,  # a signed bundle: OPA refuses one this key did not sign
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
        # Full explanations of the bundle run to megabytes: a PEP asking for one must accept the answer.
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 64 << 20)])
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
