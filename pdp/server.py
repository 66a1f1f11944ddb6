"""Where the gRPC server was: :mod:`pdp.grpc` now; these names stay importable from here."""

from __future__ import annotations

from pdp.grpc.app import PdpServer, create_server
from pdp.grpc.convert import to_proto
from pdp.grpc.health import SERVICE_NAME, OpaHealthMonitor
from pdp.grpc.servicer import DecisionServicer

__all__ = ["SERVICE_NAME", "DecisionServicer", "OpaHealthMonitor", "PdpServer", "create_server", "to_proto"]
