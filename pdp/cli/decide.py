"""``pdp decide FILE...``: send a Decide request (several files: one DecideBatch) and print the answer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp import devissuer
from pdp.cli.base import Subcommands, addr_option
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

_EXPLAIN = {"none": 0, "notes": 1, "fails": 2, "full": 3}


def register(sub: Subcommands) -> None:
    c = sub.add_parser(
        "decide", help="send a Decide request from a JSON file (several files: one DecideBatch) and print the answer"
    )
    c.add_argument("file", nargs="+", help="request in proto3 JSON (a DecideRequest); - reads standard input")
    addr_option(c)
    c.add_argument("--explain", choices=sorted(_EXPLAIN), help="override the request's explain level")
    c.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default: %(default)s)")
    c.add_argument(
        "--dev-issuer",
        type=Path,
        metavar="DIR",
        help="mint a principal token, risk assertion and lineage attestations for what each request asserts, "
        "with the dev issuers in DIR (pdp dev: .run/issuers), and forward them",
    )
    c.set_defaults(func=_decide)


def _decide(args: argparse.Namespace) -> int:
    requests = []
    for name in args.file:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
            requests.append(json_format.Parse(text, pb.DecideRequest()))
        except (OSError, json_format.ParseError) as e:
            print(f"pdp decide: cannot read a DecideRequest from {name}: {e}", file=sys.stderr)
            return 2
    if args.explain is not None:
        if len(requests) > 1:
            print("pdp decide: --explain needs a single request (DecideBatch gives no explanations)", file=sys.stderr)
            return 2
        requests[0].explain = _EXPLAIN[args.explain]  # type: ignore[assignment]
    if args.dev_issuer is not None:
        try:
            for r in requests:
                devissuer.forward_tokens(r, args.dev_issuer)
        except (OSError, ValueError) as e:
            print(f"pdp decide: --dev-issuer: {e}", file=sys.stderr)
            return 2
    with grpc.insecure_channel(args.addr) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        try:
            if len(requests) == 1:
                response: Any = stub.Decide(requests[0], timeout=args.timeout)
            else:
                response = stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"pdp decide: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(response, indent=2))
    return 0
