"""What every command module shares: the registration signature, logging set-up, env defaults."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pdp.config import Settings

Subcommands = Any  # argparse's _SubParsersAction, which typeshed keeps private
Register = Callable[[Subcommands], None]

log = logging.getLogger("pdp")


def env_path(name: str) -> Path | None:
    """The path in environment variable ``name``, or None when it is unset (a default for ``--dir``)."""
    value = os.environ.get(name)
    return Path(value) if value else None


def path_option(parser: argparse.ArgumentParser, flag: str, variable: str, what: str) -> None:
    """Adds ``flag`` as a path defaulting to ``$variable``, required when that is unset."""
    default = env_path(variable)
    parser.add_argument(
        flag, type=Path, default=default, required=default is None, help=f"{what} (default: ${variable})"
    )


def addr_option(parser: argparse.ArgumentParser) -> None:
    """Adds ``--addr``, the PDP's gRPC address: ``$PDP_ADDR``, else where ``pdp serve`` listens by default."""
    parser.add_argument(
        "--addr",
        default=os.environ.get("PDP_ADDR") or Settings.listen,
        help="the PDP's gRPC address (PDP_ADDR; default: %(default)s)",
    )


def setup_logging(level: str) -> None:
    """Sends the ``pdp`` logger's records to standard error, once."""
    log.setLevel(level)
    if log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
