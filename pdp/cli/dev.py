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

from pdp import devissuer, keys
from pdp.cli import serve
from pdp.cli.base import Subcommands, log, setup_logging
from pdp.config import Settings
from pdp.policy import bundles
from pdp.sidecar import OpaSidecar
from pdp.telemetry import opa_tracing_config

DEV_DEFAULTS = {
    "PDP_KEY_DIR": ".run/keys",
    "PDP_LOG_DIR": ".run/log",
    "PDP_HTTP_LISTEN": "127.0.0.1:8080",
    "PDP_CONSOLE_LISTEN": "127.0.0.1:8081",
    "PDP_CONSOLE_DEV_LOGIN": "1",
}
"""Development defaults: a generated key and a log under .run/ (ignored by git); the HTTP face on
loopback (``PDP_HTTP_LISTEN=`` turns it off); the approver console on loopback with its local-only
dev login (``PDP_CONSOLE_LISTEN=`` turns it off)."""


def register(sub: Subcommands) -> None:
    d = sub.add_parser("dev", help="start an OPA sidecar with the bundle, and serve in front of it")
    d.add_argument("--bundle", type=Path, default=Path("rego"), help="policy bundle directory (default: rego)")
    d.add_argument(
        "--opa-addr",
        default="",
        help="where the OPA sidecar listens (default: a unix socket in a new 0700 directory only this user can "
        "enter; a host:port opens OPA's REST API to everyone on the host)",
    )
    d.add_argument(
        "--issuer-dir",
        type=Path,
        default=Path(".run/issuers"),
        help="dev token issuers, made on first start and trusted unless PDP_TRUST_FILE is set (default: %(default)s)",
    )
    d.add_argument("--shadow-bundle", type=Path, help="a candidate bundle directory evaluated beside the live one")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The defaults go into the settings, not into os.environ: the children see the caller's environment.
    defaults = dict(DEV_DEFAULTS)
    if "PDP_TRUST_FILE" not in os.environ:  # dev issuers, so examples can forward verifiable tokens
        defaults["PDP_TRUST_FILE"] = str(devissuer.init(args.issuer_dir))
    base = Settings.from_env({**defaults, **os.environ})
    assert base.key_dir is not None
    keys.ensure(base.key_dir)
    setup_logging(base.log_level)
    log.info(
        "trusting the token issuers of %s (pdp decide --dev-issuer %s forwards tokens)",
        base.trust.source,
        args.issuer_dir,
    )
    if not (args.bundle / ".manifest").is_file():
        print(f"pdp dev: {args.bundle} is not a bundle directory (no .manifest)", file=sys.stderr)
        return 2
    # The bundle is signed with a dev key (beside the key dir, in bundle-key/) and OPA verifies it
    # through its configuration, as in production; OPA joins the PDP's traces when the PDP exports them.
    built, config = bundles.dev_bundle(args.bundle, base.key_dir.parent, opa_bin=base.opa_bin)
    config.update(opa_tracing_config() or {})
    fd, name = tempfile.mkstemp(prefix="pdp-opa-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)  # JSON is YAML
    config_file = Path(name)
    # OPA's REST API reads all policy and data and takes writes: by default only this user may reach
    # it, on unix sockets in a new 0700 directory (removed on the way out).
    private = Path(tempfile.mkdtemp(prefix="pdp-opa-"))
    addr = args.opa_addr or f"unix://{private / 'opa.sock'}"
    if args.opa_addr:
        log.warning("OPA's REST API on %s: anyone who can reach it reads all policy and data", addr)
    sidecar = OpaSidecar(opa_bin=base.opa_bin, bundle=None, addr=addr, config_file=config_file, bundles_ready=True)
    shadow = None
    if args.shadow_bundle is not None:
        shadow = OpaSidecar(opa_bin=base.opa_bin, bundle=args.shadow_bundle, addr=f"unix://{private / 'shadow.sock'}")
    try:
        sidecar.start()
        log.info(
            "OPA sidecar on %s serving %s (revision %r of %s) signed by key %s",
            sidecar.url,
            built.path,
            built.revision,
            args.bundle,
            built.key_id,
        )
        settings = dataclasses.replace(base, opa_url=sidecar.url)
        if shadow is not None:
            shadow.start()
            log.info("shadow candidate %s on OPA %s", args.shadow_bundle, shadow.url)
            settings = dataclasses.replace(settings, shadow_opa_url=shadow.url)
        return serve.run(settings)
    finally:
        for s in (shadow, sidecar):
            if s is not None:
                s.stop()
        log.info("OPA sidecar stopped")
        config_file.unlink(missing_ok=True)
        shutil.rmtree(private, ignore_errors=True)
