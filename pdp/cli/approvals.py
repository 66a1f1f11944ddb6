"""``pdp approvals list|show|approve|reject``: an approver's side of escalations, over ApprovalService.

The approver is whoever the client certificate names (``--cert``/``--key``, trusted by ``--ca``): the
PDP takes the identity from the TLS handshake, never from an option. ``--dev-as`` names an approver
only to a PDP started with ``PDP_APPROVALS_DEV_LOGIN=1`` on loopback (development).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp.cli.base import Subcommands, addr_option, env_path
from pdp.grpc.approvals import DEV_LOGIN_METADATA
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc


def register(sub: Subcommands) -> None:
    a = sub.add_parser("approvals", help="list, show, approve or reject escalations as the certificate's approver")
    actions = a.add_subparsers(required=True, metavar="ACTION", dest="action")
    for name, what in (
        ("list", "the escalations waiting for you (your roles, not about you)"),
        ("show", "one escalation: the action, agent, principal, reasons, votes"),
        ("approve", "approve an escalation; prints it and your approval token"),
        ("reject", "reject an escalation (one rejection closes it)"),
    ):
        p = actions.add_parser(name, help=what)
        if name != "list":
            p.add_argument("escalation_id")
        if name in ("approve", "reject"):
            p.add_argument("--comment", default="", help="why (kept in the signed log)")
        addr_option(p)
        p.add_argument("--cert", type=Path, default=env_path("PDP_CLIENT_CERT_FILE"), help="client certificate (PEM)")
        p.add_argument("--key", type=Path, default=env_path("PDP_CLIENT_KEY_FILE"), help="client private key (PEM)")
        p.add_argument("--ca", type=Path, default=env_path("PDP_CLIENT_CA_FILE"), help="CA of the PDP's certificate")
        p.add_argument("--server-name", default="", help="the name in the PDP's certificate, if not the address's")
        p.add_argument("--dev-as", default="", help="approver identity for a dev-login PDP (loopback, no mTLS)")
        p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds (default: %(default)s)")
        p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    calls: dict[str, Callable[[apb_grpc.ApprovalServiceStub, dict[str, Any]], Any]] = {
        "list": lambda s, kw: s.ListEscalations(apb.ListEscalationsRequest(), **kw),
        "show": lambda s, kw: s.GetEscalation(apb.GetEscalationRequest(escalation_id=args.escalation_id), **kw),
        "approve": lambda s, kw: s.Approve(
            apb.ApproveRequest(escalation_id=args.escalation_id, comment=args.comment), **kw
        ),
        "reject": lambda s, kw: s.Reject(
            apb.RejectRequest(escalation_id=args.escalation_id, comment=args.comment), **kw
        ),
    }
    if bool(args.cert) != bool(args.key):
        print("pdp approvals: --cert and --key go together", file=sys.stderr)
        return 2
    kw: dict[str, Any] = {"timeout": args.timeout}
    if args.dev_as:
        kw["metadata"] = [(DEV_LOGIN_METADATA, args.dev_as)]
    with _channel(args) as channel:
        try:
            response = calls[args.action](apb_grpc.ApprovalServiceStub(channel), kw)
        except grpc.RpcError as e:
            print(f"pdp approvals {args.action}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    print(json_format.MessageToJson(response, indent=2))
    return 0


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.cert:
        return grpc.insecure_channel(args.addr)
    creds = grpc.ssl_channel_credentials(
        args.ca.read_bytes() if args.ca else None, args.key.read_bytes(), args.cert.read_bytes()
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.addr, creds, options=options)
