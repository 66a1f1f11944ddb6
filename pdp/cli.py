"""The ``pdp`` command: serve, run a dev stack, send a decision."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from pdp import __version__, devissuer, keys
from pdp.config import Settings
from pdp.errors import ConfigError
from pdp.keys import KeyRing
from pdp.ledger import checkpoint
from pdp.ledger.audit import AuditError, verify_log
from pdp.server import create_server
from pdp.sidecar import OpaSidecar
from pdp.telemetry import opa_tracing_config
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

log = logging.getLogger("pdp")

_EXPLAIN = {"none": 0, "notes": 1, "fails": 2, "full": 3}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``pdp`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pdp: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdp",
        description="Policy decision point for AI agents: gRPC Decide in front of an OPA sidecar.",
        epilog="Configuration comes from PDP_* environment variables; see README.md.",
    )
    p.add_argument("--version", action="version", version=f"pdp {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="serve Decide, asking the OPA at PDP_OPA_URL")
    s.set_defaults(func=_serve)

    d = sub.add_parser("dev", help="start an OPA sidecar with the bundle, and serve in front of it")
    d.add_argument("--bundle", type=Path, default=Path("rego"), help="policy bundle directory (default: rego)")
    d.add_argument("--opa-addr", default="127.0.0.1:8181", help="where the OPA sidecar listens (default: %(default)s)")
    d.add_argument(
        "--issuer-dir",
        type=Path,
        default=Path(".run/issuers"),
        help="dev token issuers, made on first start and trusted unless PDP_TRUST_FILE is set (default: %(default)s)",
    )
    d.set_defaults(func=_dev)

    c = sub.add_parser(
        "decide", help="send a Decide request from a JSON file (several files: one DecideBatch) and print the answer"
    )
    c.add_argument("file", nargs="+", help="request in proto3 JSON (a DecideRequest); - reads standard input")
    c.add_argument("--addr", default="127.0.0.1:50051", help="PDP address (default: %(default)s)")
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

    k = sub.add_parser("keys", help="generate or rotate the signing key; print the JWKS or note verifier keys")
    k.add_argument(
        "action",
        choices=["generate", "rotate", "jwks", "note-keys"],
        help="generate a first key, rotate, print the JWKS, or print the checkpoints' note verifier keys",
    )
    k.add_argument("--dir", type=Path, required=True, help="the key directory (PDP_KEY_DIR)")
    k.add_argument("--if-missing", action="store_true", help="generate: succeed without change if a key exists")
    k.add_argument(
        "--origin",
        default=Settings().log_origin,
        help="note-keys: the log's origin (PDP_LOG_ORIGIN; default: %(default)s)",
    )
    k.set_defaults(func=_keys)

    a = sub.add_parser("audit", help="verify a decision log from its files and the public keys alone")
    a.add_argument("check", choices=["verify"], help="what to do (verify)")
    a.add_argument("log_dir", type=Path, help="the log directory (PDP_LOG_DIR)")
    a.add_argument("--jwks", type=Path, required=True, help="the JWKS file (PDP_KEY_DIR/jwks.json, or GetJwks)")
    a.set_defaults(func=_audit)
    devissuer.add_parser(sub)
    return p


def _keys(args: argparse.Namespace) -> int:
    if args.action == "jwks":
        print(json.dumps(KeyRing.load(args.dir).jwks, indent=2))
        return 0
    if args.action == "note-keys":
        # One C2SP note verifier key per public key, for checkpoint verifiers such as Go's sumdb/note.
        jwks = json.loads((args.dir / "jwks.json").read_text())
        for public in keys.public_keys(jwks).values():
            print(checkpoint.verifier_key(args.origin, public))
        return 0
    if args.action == "generate" and (args.dir / "active").exists():
        if args.if_missing:
            print(f"active key {KeyRing.load(args.dir).kid} (kept)")
            return 0
        print(f"pdp keys: {args.dir} already has a key; use `pdp keys rotate`", file=sys.stderr)
        return 2
    ring = keys.rotate(args.dir)
    print(f"active key {ring.kid}; public keys in {args.dir / 'jwks.json'}")
    return 0


def _audit(args: argparse.Namespace) -> int:
    try:
        jwks = json.loads(args.jwks.read_text())
        report = verify_log(args.log_dir, jwks=jwks)
    except (OSError, ValueError) as e:
        print(f"pdp audit: cannot read {e}", file=sys.stderr)
        return 2
    except AuditError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(
        f"OK: {report.entries} entries ({report.decisions} decisions, {report.outcomes} outcome reports), "
        f"{report.checkpoints} checkpoints of {report.origin or '(none yet)'}, root {report.root.hex()}"
    )
    return 0


def _setup_logging(level: str) -> None:
    log.setLevel(level)
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False


def _serve(args: argparse.Namespace, settings: Settings | None = None) -> int:
    settings = settings or Settings.from_env()
    _setup_logging(settings.log_level)
    server, port = create_server(settings)
    server.start()
    host = settings.listen.rsplit(":", 1)[0]
    log.info("PDP gRPC on %s:%d, asking OPA at %s for %s", host, port, settings.opa_url, settings.decision_path)
    _wait_for_signal()
    log.info("stopping: draining in-flight calls for up to %.0fs", settings.grace_s)
    server.stop(settings.grace_s)
    return 0


def _dev(args: argparse.Namespace) -> int:
    # Development defaults: a generated key and a log under .run/ (ignored by git).
    os.environ.setdefault("PDP_KEY_DIR", ".run/keys")
    os.environ.setdefault("PDP_LOG_DIR", ".run/log")
    if "PDP_TRUST_FILE" not in os.environ:  # dev issuers, so examples can forward verifiable tokens
        os.environ["PDP_TRUST_FILE"] = str(devissuer.init(args.issuer_dir))
    base = Settings.from_env()
    assert base.key_dir is not None
    keys.ensure(base.key_dir)
    _setup_logging(base.log_level)
    log.info(
        "trusting the token issuers of %s (pdp decide --dev-issuer %s forwards tokens)",
        base.trust.source,
        args.issuer_dir,
    )
    if not (args.bundle / ".manifest").is_file():
        print(f"pdp dev: {args.bundle} is not a bundle directory (no .manifest)", file=sys.stderr)
        return 2
    # OPA joins the PDP's traces when the PDP exports them (OTLP over gRPC).
    config_file = None
    tracing = opa_tracing_config()
    if tracing is not None:
        fd, name = tempfile.mkstemp(prefix="pdp-opa-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            json.dump(tracing, f)  # JSON is YAML
        config_file = Path(name)
    sidecar = OpaSidecar(opa_bin=base.opa_bin, bundle=args.bundle, addr=args.opa_addr, config_file=config_file)
    sidecar.start()
    log.info("OPA sidecar on %s serving bundle %s", sidecar.url, args.bundle)
    try:
        return _serve(args, dataclasses.replace(base, opa_url=sidecar.url))
    finally:
        sidecar.stop()
        log.info("OPA sidecar stopped")
        if config_file is not None:
            config_file.unlink(missing_ok=True)


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


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
