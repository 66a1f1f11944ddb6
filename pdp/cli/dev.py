"""``pdp dev``: an OPA sidecar with the bundle, and ``pdp serve`` in front of it (development)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from pdp import keys
from pdp.cli import serve
from pdp.cli.base import Subcommands, log, setup_logging
from pdp.config import Settings
from pdp.sidecar import OpaSidecar
from pdp.telemetry import opa_tracing_config

DEV_DEFAULTS = {"PDP_KEY_DIR": ".run/keys", "PDP_LOG_DIR": ".run/log", "PDP_HTTP_LISTEN": "127.0.0.1:8080"}
"""Development defaults: a generated key and a log under .run/ (ignored by git); the HTTP face on
loopback (``PDP_HTTP_LISTEN=`` turns it off)."""


def register(sub: Subcommands) -> None:
    d = sub.add_parser("dev", help="start an OPA sidecar with the bundle, and serve in front of it")
    d.add_argument("--bundle", type=Path, default=Path("rego"), help="policy bundle directory (default: rego)")
    d.add_argument(
        "--opa-addr",
        default="",
        help="where the OPA sidecar listens (default: a unix socket in a new 0700 directory only this user can "
        "enter; a host:port opens OPA's REST API to everyone on the host)",
    )
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The defaults go into the settings, not into os.environ: the children see the caller's environment.
    base = Settings.from_env({**DEV_DEFAULTS, **os.environ})
    assert base.key_dir is not None
    keys.ensure(base.key_dir)
    setup_logging(base.log_level)
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
    private = None
    addr = args.opa_addr
    if not addr:  # OPA's REST API reads all policy and data and takes writes: only this user may reach it
        private = Path(tempfile.mkdtemp(prefix="pdp-opa-"))  # mode 0700
        addr = f"unix://{private / 'opa.sock'}"
    else:
        log.warning("OPA's REST API on %s: anyone who can reach it reads all policy and data", addr)
    sidecar = OpaSidecar(opa_bin=base.opa_bin, bundle=args.bundle, addr=addr, config_file=config_file)
    sidecar.start()
    log.info("OPA sidecar on %s serving bundle %s", sidecar.url, args.bundle)
    try:
        return serve.run(dataclasses.replace(base, opa_url=sidecar.url))
    finally:
        sidecar.stop()
        log.info("OPA sidecar stopped")
        if config_file is not None:
            config_file.unlink(missing_ok=True)
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)
