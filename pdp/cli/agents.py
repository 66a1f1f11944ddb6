"""``pdp agents suspend|resume|list``: the kill switch, through a running PDP's AdminService.

The PDP signs each change into its log; every replica sharing its state store denies the
suspended agent (or ``--principal``, or ``--tool``) within a second.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp.cli.base import Subcommands, addr_option
from pdp.v1 import admin_pb2 as pb
from pdp.v1 import admin_pb2_grpc as pb_grpc


def register(sub: Subcommands) -> None:
    a = sub.add_parser("agents", help="suspend or resume an agent, principal or tool on every replica (kill switch)")
    actions = a.add_subparsers(required=True, metavar="ACTION", dest="action")
    s = actions.add_parser("suspend", help="deny every decision for it from now on, and say why in the log")
    _subject(s)
    s.add_argument("--reason", required=True, help="why (recorded in the signed log)")
    s.add_argument("--until", default="", help="RFC 3339 time or a duration such as 2h (default: until resumed)")
    s.set_defaults(func=_suspend)
    r = actions.add_parser("resume", help="lift a suspension (recorded in the signed log)")
    _subject(r)
    r.add_argument("--reason", default="", help="why (recorded)")
    r.set_defaults(func=_resume)
    ls = actions.add_parser("list", help="the suspensions in force")
    _connection(ls)
    ls.set_defaults(func=_list)


def _subject(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the agent id (or, with --principal/--tool, the principal id or tool name)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--principal", dest="kind", action="store_const", const="principal", help="NAME is a principal")
    kind.add_argument("--tool", dest="kind", action="store_const", const="tool", help="NAME is a tool")
    p.add_argument("--operator", default=_whoami(), help="who you are, for the record (default: %(default)s)")
    p.set_defaults(kind="agent")
    _connection(p)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's numeric user)
        return ""


def _connection(p: argparse.ArgumentParser) -> None:
    addr_option(p)
    p.add_argument("--ca", type=Path, help="CA certificate of the PDP (TLS); with --cert and --key: mTLS")
    p.add_argument("--cert", type=Path, help="client certificate (mTLS)")
    p.add_argument("--key", type=Path, help="client private key (mTLS)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default: %(default)s)")


def _call(args: argparse.Namespace, method: str, request: Any) -> int:
    if args.ca:
        creds = grpc.ssl_channel_credentials(
            root_certificates=args.ca.read_bytes(),
            private_key=args.key.read_bytes() if args.key else None,
            certificate_chain=args.cert.read_bytes() if args.cert else None,
        )
        channel = grpc.secure_channel(args.addr, creds)
    else:
        channel = grpc.insecure_channel(args.addr)
    with channel:
        try:
            response = getattr(pb_grpc.AdminServiceStub(channel), method)(request, timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"pdp agents: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    return 0


def _suspend(args: argparse.Namespace) -> int:
    request = pb.SuspendRequest(
        kind=args.kind, value=args.name, reason=args.reason, until=args.until, operator=args.operator
    )
    return _call(args, "Suspend", request)


def _resume(args: argparse.Namespace) -> int:
    return _call(
        args, "Resume", pb.ResumeRequest(kind=args.kind, value=args.name, reason=args.reason, operator=args.operator)
    )


def _list(args: argparse.Namespace) -> int:
    return _call(args, "ListSuspensions", pb.ListSuspensionsRequest())
