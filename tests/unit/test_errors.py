"""pdp/errors.py: one error tree, and no module outside the gRPC face knows gRPC status codes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pdp
from pdp.errors import PdpError
from tests.helpers import ROOT


def pdp_modules() -> list[str]:
    return [
        m.name for m in pkgutil.walk_packages(pdp.__path__, "pdp.") if not m.name.startswith(("pdp.v1", "pdp.__main__"))
    ]


def test_every_exception_the_pdp_defines_derives_from_one_base() -> None:
    defined = [
        (name, cls)
        for module in pdp_modules()
        for name, cls in inspect.getmembers(importlib.import_module(module), inspect.isclass)
        if issubclass(cls, BaseException) and cls.__module__.startswith("pdp.")
    ]
    assert len(defined) >= 14
    assert [name for name, cls in defined if not issubclass(cls, PdpError)] == []


def test_only_the_grpc_face_maps_errors_to_status_codes() -> None:
    for path in (ROOT / "pdp").rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("pdp/grpc/", "pdp/v1/")):
            continue
        assert "grpc.StatusCode" not in path.read_text(), f"{rel} maps errors to gRPC status codes"
    for name in ("pdp/errors.py", "pdp/ledger/log.py", "pdp/ledger/audit.py", "pdp/ledger/merkle.py"):
        assert "import grpc" not in (ROOT / name).read_text(), name
