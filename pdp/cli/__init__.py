"""The ``pdp`` command: one module per command group, registered from :data:`COMMANDS`.

A new command group is one module with a ``register(subcommands)`` function (see
:mod:`pdp.cli.base`) and one line in :data:`COMMANDS`. Every command's errors derive from
:class:`pdp.errors.PdpError`; :func:`main` prints them as one line (what failed, what to do) and
exits non-zero, never with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pdp import __version__, devissuer
from pdp.cli import audit, decide, dev, keys, policy, serve
from pdp.cli.base import Register
from pdp.errors import ConfigError, PdpError
from pdp.pep import cli as mcp_proxy
from pdp.report import cli as report

COMMANDS: list[Register] = [
    serve.register,
    dev.register,
    decide.register,
    keys.register,
    audit.register,
    mcp_proxy.register,
    report.register,
    policy.register,  # after report: adds to its `pdp policy` group
    devissuer.add_parser,
]
"""Each command group's ``register``, in the order ``pdp --help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``pdp`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PdpError as e:
        print(one_line(args.command, e), file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except OSError as e:
        print(f"pdp {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def one_line(command: str, error: PdpError) -> str:
    """What failed and, when the error kind says it, what to do, as one line."""
    kind = "configuration error: " if isinstance(error, ConfigError) else ""
    hint = f" ({error.hint})" if error.hint else ""
    return f"pdp {command}: {kind}{error}{hint}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pdp",
        description="Policy decision point for AI agents: gRPC Decide in front of an OPA sidecar.",
        epilog="Configuration comes from PDP_* environment variables; see docs/configuration.md.",
    )
    p.add_argument("--version", action="version", version=f"pdp {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND", dest="command")
    for register in COMMANDS:
        register(sub)
    return p
