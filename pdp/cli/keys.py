"""``pdp keys generate|rotate|jwks|note-keys``: the signing key and what verifiers need of it."""

from __future__ import annotations

import argparse
import json
import sys

from pdp import keys
from pdp.cli.base import Subcommands, path_option
from pdp.config import Settings
from pdp.keys import KeyRing
from pdp.ledger import checkpoint


def register(sub: Subcommands) -> None:
    k = sub.add_parser("keys", help="generate or rotate the signing key; print the JWKS or note verifier keys")
    actions = k.add_subparsers(required=True, metavar="ACTION", dest="action")
    for name, func, what in (
        ("generate", _generate, "generate a first signing key"),
        ("rotate", _rotate, "make a new active key; old public keys stay in the JWKS"),
        ("jwks", _jwks, "print the JWKS"),
        ("note-keys", _note_keys, "print the checkpoints' C2SP note verifier keys"),
    ):
        a = actions.add_parser(name, help=what)
        path_option(a, "--dir", "PDP_KEY_DIR", "the key directory")
        a.set_defaults(func=func)
        if name == "generate":
            a.add_argument("--if-missing", action="store_true", help="succeed without change if a key exists")
        if name == "note-keys":
            a.add_argument(
                "--origin",
                default=Settings().log_origin,
                help="the log's origin (PDP_LOG_ORIGIN; default: %(default)s)",
            )


def _generate(args: argparse.Namespace) -> int:
    if (args.dir / "active").exists():
        if args.if_missing:
            print(f"active key {KeyRing.load(args.dir).kid} (kept)")
            return 0
        print(f"pdp keys: {args.dir} already has a key; use `pdp keys rotate`", file=sys.stderr)
        return 2
    return _rotate(args)


def _rotate(args: argparse.Namespace) -> int:
    ring = keys.rotate(args.dir)
    print(f"active key {ring.kid}; public keys in {args.dir / 'jwks.json'}")
    return 0


def _jwks(args: argparse.Namespace) -> int:
    print(json.dumps(KeyRing.load(args.dir).jwks, indent=2))
    return 0


def _note_keys(args: argparse.Namespace) -> int:
    # One C2SP note verifier key per public key, for checkpoint verifiers such as Go's sumdb/note.
    jwks = json.loads((args.dir / "jwks.json").read_text())
    for public in keys.public_keys(jwks).values():
        print(checkpoint.verifier_key(args.origin, public))
    return 0
