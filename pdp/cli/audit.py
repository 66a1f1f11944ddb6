"""``pdp audit verify``: verify a decision log from its files and the public keys alone."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pdp.cli.base import Subcommands, env_path
from pdp.errors import AuditError
from pdp.ledger.audit import verify_log
from pdp.records import header_typ, unverified_claims
from pdp.schema import TYP_ESCALATION, EscalationRecord


def register(sub: Subcommands) -> None:
    a = sub.add_parser("audit", help="verify a decision log from its files and the public keys alone")
    checks = a.add_subparsers(required=True, metavar="CHECK", dest="check")
    v = checks.add_parser("verify", help="verify every frame, signature, link, checkpoint root and consistency")
    log_dir = env_path("PDP_LOG_DIR")
    key_dir = env_path("PDP_KEY_DIR")
    v.add_argument(
        "log_dir",
        type=Path,
        nargs="?" if log_dir else None,
        default=log_dir,
        help="the log directory (default: $PDP_LOG_DIR)",
    )
    jwks = key_dir / "jwks.json" if key_dir else None
    v.add_argument(
        "--jwks",
        type=Path,
        default=jwks,
        required=jwks is None,
        help="the JWKS file (GetJwks, or the key directory's jwks.json; default: $PDP_KEY_DIR/jwks.json)",
    )
    v.add_argument(
        "--steps", action="store_true", help="also list every escalation step (opened, approved, ...) with its entry"
    )
    v.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    try:
        jwks = json.loads(args.jwks.read_text())
        steps: list[str] = []
        report = verify_log(args.log_dir, jwks=jwks, on_entry=_step_lister(steps) if args.steps else None)
    except (OSError, ValueError) as e:
        print(f"pdp audit: cannot read {e}", file=sys.stderr)
        return 2
    except AuditError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    counted = f", {report.escalations} escalation steps" if report.escalations else ""
    counted += f", {report.suspensions} suspension records" if report.suspensions else ""
    print(
        f"OK: {report.entries} entries ({report.decisions} decisions, {report.outcomes} outcome reports{counted}), "
        f"{report.checkpoints} checkpoints of {report.origin or '(none yet)'}, root {report.root.hex()}"
    )
    for line in steps:
        print(line)
    return 0


def _step_lister(lines: list[str]) -> Callable[[int, bytes], None]:
    """Collects one line per verified escalation step: entry, step, escalation, who, when, decision."""

    def add(index: int, entry: bytes) -> None:
        if header_typ(entry) != TYP_ESCALATION:
            return
        r = EscalationRecord.from_dict(unverified_claims(entry))  # verified just before this call
        by = f" consumed by decision {r.by_decision_id}" if r.by_decision_id else ""
        lines.append(
            f"entry {index}: escalation {r.escalation['id']} {r.step} by {r.actor} at {r.timestamp} "
            f"(decision {r.decision_id}, status {r.escalation['status']}){by}"
        )

    return add
