"""``pdp mcp-proxy``: put the policy in front of an MCP server.

Over stdio it launches the server command and speaks MCP on its own stdin/stdout::

    pdp mcp-proxy --agent support-bot --mapping examples/mcp/filesystem.json -- \\
        npx @modelcontextprotocol/server-filesystem /data

Over streamable HTTP it listens and forwards to the server's URL::

    pdp mcp-proxy --agent support-bot --mapping git.json --listen 127.0.0.1:8765 --upstream http://127.0.0.1:9000/mcp
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio

from pdp.client import Client
from pdp.pep import mapping as mapping_file
from pdp.pep import tls
from pdp.pep.gate import Gate, Settings
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb

log = logging.getLogger("pdp.pep")


def register(subparsers: Any) -> None:
    """Adds the ``mcp-proxy`` command to the ``pdp`` command's subparsers."""
    p = subparsers.add_parser(
        "mcp-proxy",
        help="a policy-gated MCP proxy: stdio (-- server command) or streamable HTTP (--listen, --upstream)",
        description="Every tools/call is decided by the PDP and forwarded only on a verified allow.",
    )
    p.add_argument("--agent", required=True, help="the agent id the calls are made for (its registry entry)")
    p.add_argument("--agent-version", default="", help="the agent's version (checked against the registry)")
    p.add_argument("--principal", default="", help="on whose behalf the agent acts (optional)")
    p.add_argument(
        "--principal-token-file",
        type=Path,
        default=os.environ.get("PDP_PRINCIPAL_TOKEN_FILE") or None,
        help="a file holding the principal's OIDC/JWT token, forwarded with every question and read "
        "again for each (PDP_PRINCIPAL_TOKEN_FILE; else the token itself from PDP_PRINCIPAL_TOKEN)",
    )
    p.add_argument("--mapping", type=Path, required=True, help="the server's mapping file (JSON or YAML)")
    p.add_argument(
        "--pdp",
        default=os.environ.get("PDP_ADDR", "127.0.0.1:50051"),
        help="the PDP's gRPC address (PDP_ADDR; default: %(default)s)",
    )
    for flag, variable, what in (
        ("--ca", "PDP_CLIENT_CA_FILE", "TLS to the PDP: the CA certificate(s) to trust for the PDP's certificate; "
         "without TLS options the proxy speaks plaintext, to a loopback --pdp only"),
        ("--cert", "PDP_CLIENT_CERT_FILE", "mTLS: this proxy's client certificate (PEM), with --key; the PDP takes "
         "the proxy's identity from it (its SPIFFE ID, else its subject)"),
        ("--key", "PDP_CLIENT_KEY_FILE", "mTLS: the private key of --cert (unencrypted PEM)"),
    ):  # fmt: skip
        p.add_argument(flag, type=Path, default=env_path(variable), metavar="FILE", help=f"{what} ({variable})")
    p.add_argument("--server-name", default="", help="TLS: the name in the PDP's certificate, if not the host of --pdp")
    p.add_argument(
        "--allow-insecure-non-loopback",
        action="store_true",
        help="let the proxy ask a PDP beyond loopback over plaintext (refused otherwise; logged as a warning)",
    )
    p.add_argument("--jwks", type=Path, help="trust these public keys (default: the PDP's GetJwks)")
    p.add_argument("--timeout", type=float, default=2.0, help="deadline of each PDP call, seconds (default: 2)")
    p.add_argument(
        "--list-ttl", type=float, default=30.0, help="how long a tools/list verdict is cached, seconds (default: 30)"
    )
    p.add_argument(
        "--approval-wait",
        type=_wait_seconds,
        default=0.0,
        metavar="SECONDS",
        help="how long a tools/call that needs approval stays pending while the proxy waits for the approvers "
        "before it refuses (default: 0: refuse at once; the client retries the same call once approved); a "
        "call whose request carries a progressToken gets notifications/progress meanwhile",
    )
    p.add_argument(
        "--approval-console",
        default=os.environ.get("PDP_APPROVAL_CONSOLE_URL", ""),
        metavar="URL",
        help="the approver console's address, named in the answer to a call that needs approval "
        "(PDP_APPROVAL_CONSOLE_URL)",
    )
    p.add_argument("--listen", help="streamable HTTP: HOST:PORT to listen on (with --upstream)")
    p.add_argument("--upstream", help="streamable HTTP: the MCP server's URL")
    p.add_argument("--log-level", default=os.environ.get("PDP_LOG_LEVEL", "WARNING"), help="(default: WARNING)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="stdio: -- the server command and its arguments")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the proxy until the client (stdio) or the process (HTTP) stops."""
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    http = args.listen is not None or args.upstream is not None
    if http and (not args.listen or not args.upstream or command):
        return _usage("streamable HTTP needs both --listen and --upstream, and no server command")
    if not http and not command:
        return _usage("give the server command after --, or --listen and --upstream")
    try:
        mapping = mapping_file.load(args.mapping)
        to, warning = tls.configure(
            address=args.pdp,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            server_name=args.server_name,
            allow_insecure=args.allow_insecure_non_loopback,
        )
        jwks = json.loads(args.jwks.read_text()) if args.jwks else None
    except (mapping_file.MappingError, tls.TlsError) as e:
        return _usage(str(e))
    except (OSError, ValueError) as e:
        return _usage(f"--jwks: cannot read {args.jwks}: {e}")
    if warning:
        log.warning("%s", warning)
    principal = pb.Principal(id=args.principal) if args.principal else None
    token_file: Path | None = args.principal_token_file
    if token_file is not None and not token_file.is_file():
        return _usage(f"--principal-token-file: {token_file} is not a readable file")
    settings = Settings(
        agent=pb.Agent(id=args.agent, version=args.agent_version),
        principal=principal,
        principal_token="" if token_file else os.environ.get("PDP_PRINCIPAL_TOKEN", "").strip(),
        principal_token_file=token_file,
        timeout_s=args.timeout,
        list_ttl_s=args.list_ttl,
        approval_wait_s=args.approval_wait,
        console_url=args.approval_console,
    )
    from pdp.pep import tracing, transports

    tracer = tracing.tracer()
    with tracing.channel(to) as channel:
        gate = Gate(
            client=Client(channel),
            mapping=mapping,
            settings=settings,
            jwks=jwks,
            approvals=apb_grpc.ApprovalServiceStub(channel),
        )
        if http:
            host, _, port = args.listen.rpartition(":")
            anyio.run(transports.serve_http, gate, host or "127.0.0.1", int(port), args.upstream, tracer)
        else:
            anyio.run(transports.serve_stdio, gate, command, tracer)
    return 0


def env_path(name: str) -> Path | None:
    # pdp.cli.base has the same; importing it from here would load the whole ``pdp`` command.
    return Path(os.environ[name]) if os.environ.get(name) else None


def _wait_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be 0..3600 seconds, not {text!r}")
    return seconds


def _usage(problem: str) -> int:
    print(f"pdp mcp-proxy: {problem}", file=sys.stderr)
    return 2
