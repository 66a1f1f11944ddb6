"""The gRPC framework's own ceiling: a Decide servicer that does no work, sync vs grpc.aio.

    .venv/bin/python bench/framework.py [--seconds S] [--concurrency C]

Both servers parse the same request mix and answer one prebuilt DecideResponse, so what is
measured is grpcio itself (threads and the GIL for the sync server, one event loop for aio).
It tells whether porting the PDP to grpc.aio could pay: the PDP can never be faster than the
framework it runs in. Not a PDP: no policy, no record, nothing decided.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from concurrent import futures
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Measured, ghz, point, table

from pdp.sidecar import free_port
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

ANSWER = pb.DecideResponse(decision_id="bench", outcome=pb.OUTCOME_ALLOW)


class Bare(pb_grpc.DecisionServiceServicer):
    def Decide(self, request: pb.DecideRequest, context: grpc.ServicerContext) -> pb.DecideResponse:  # noqa: N802
        return ANSWER


class BareAio(pb_grpc.DecisionServiceServicer):
    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:  # type: ignore[override]  # noqa: N802
        return ANSWER


def serve_sync(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_DecisionServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_DecisionServiceServicer_to_server(BareAio(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--serve", choices=["sync", "aio"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve == "sync":
        serve_sync(args.port)
        return 0
    if args.serve == "aio":
        asyncio.run(serve_aio(args.port))
        return 0
    points = []
    with tempfile.TemporaryDirectory(prefix="pdp-bench-") as tmp:
        for kind in ("sync", "aio"):
            port = free_port()
            proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)])
            try:
                addr = f"127.0.0.1:{port}"
                ghz(addr, Path(tmp), seconds=1, concurrency=args.concurrency, rate=0, explain=0)  # warm-up
                m = Measured({"server": proc.pid})
                r = ghz(addr, Path(tmp), seconds=args.seconds, concurrency=args.concurrency, rate=0, explain=0)
                points.append(point(f"bare grpcio {kind}", "peak", args.concurrency, 0, r, m))
            finally:
                proc.terminate()
                proc.wait(10)
    print(table(points))
    print(f"aio/sync throughput: {points[1].rps / points[0].rps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
