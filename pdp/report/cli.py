"""``pdp report`` and ``pdp policy catalog``: the offline governance commands.

Both read files only (a log directory and public keys, a bundle directory), never a running PDP.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pdp import __version__
from pdp.config import Settings
from pdp.ledger.audit import AuditError
from pdp.policy import catalog as catalogs
from pdp.report import evidence, html, source
from pdp.report.figures import Period, Tally


def register(sub: Any) -> None:
    """Adds ``report`` and ``policy catalog`` to the ``pdp`` command's subparsers."""
    r = sub.add_parser("report", help="governance report (HTML + JSON) computed from a verified decision log")
    r.add_argument("log_dir", type=Path, help="the log directory (PDP_LOG_DIR)")
    r.add_argument("--jwks", type=Path, required=True, help="the JWKS file (PDP_KEY_DIR/jwks.json, or GetJwks)")
    r.add_argument("--since", type=time_arg, help="first decision time in the period (RFC 3339 or a date; UTC)")
    r.add_argument("--until", type=time_arg, help="end of the period, exclusive (RFC 3339 or a date; UTC)")
    r.add_argument("--out", type=Path, default=Path("report"), help="output directory (default: %(default)s)")
    r.add_argument(
        "--bundle", type=Path, help="policy bundle: link reason codes to its catalog, list rules never fired"
    )
    r.add_argument("--evidence", action="store_true", help="also write the evidence pack (OUT/evidence)")
    r.set_defaults(func=_report)

    p = sub.add_parser("policy", help="policy bundle tools")
    add_catalog(p.add_subparsers(required=True, metavar="ACTION"))


def add_catalog(policy_sub: Any) -> None:
    """Adds ``catalog`` to the ``pdp policy`` subparsers."""
    c = policy_sub.add_parser("catalog", help="every rule with its reason code, severity, title, pack, test coverage")
    c.add_argument("bundle", type=Path, help="the bundle directory (e.g. rego)")
    c.add_argument("--out", type=Path, help="write catalog.md and catalog.json here (default: Markdown to stdout)")
    c.set_defaults(func=_catalog)


def time_arg(text: str) -> float:
    """An RFC 3339 time or a date (UTC when it names no zone) as epoch seconds, for argparse."""
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time or a date") from None
    return (t if t.tzinfo else t.replace(tzinfo=datetime.UTC)).timestamp()


def _report(args: argparse.Namespace) -> int:
    try:
        jwks_bytes = args.jwks.read_bytes()
        jwks = json.loads(jwks_bytes)
    except (OSError, ValueError) as e:
        print(f"pdp report: cannot read {e}", file=sys.stderr)
        return 2
    tally = Tally(period=Period(since=args.since, until=args.until))
    # The bundle's catalog (a few OPA runs, seconds) is read while the log verifies; a bundle that
    # cannot be read still stops the report with exit 2, as if it had been read first.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog") as side:
        pending = side.submit(catalogs.load, args.bundle, opa_bin=Settings.from_env().opa_bin) if args.bundle else None
        src = _verified(args, jwks, tally)
        try:
            catalog = pending.result() if pending else None
        except (OSError, ValueError) as e:
            print(f"pdp report: cannot read {e}", file=sys.stderr)
            return 2
        except catalogs.CatalogError as e:
            print(f"pdp report: {e}", file=sys.stderr)
            return 2
    if not isinstance(src, source.Source):
        code, why = src
        print(f"pdp report: {why}", file=sys.stderr)
        return code
    figures = tally.figures(catalog=catalog.anchors() if catalog else None, provenance=src.provenance())
    figures["generated_by"] = {"pdp": __version__, "bundle": catalog.to_dict() if catalog else None}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    (args.out / "report.html").write_text(html.render(figures, catalog=catalog))
    if catalog is not None:
        _write_catalog(catalog, args.out)
    done = f"{figures['decisions']['total']} decisions, checkpoint {src.checkpoint.origin} size {src.checkpoint.size}"
    if args.evidence:
        pack = evidence.write(args.out, source=src, jwks_bytes=jwks_bytes, figures=figures, command=_command(args))
        done += f"; evidence pack in {pack}"
    print(f"report of {done}: {args.out / 'report.html'}, {args.out / 'report.json'}")
    return 0


def _verified(args: argparse.Namespace, jwks: dict[str, Any], tally: Tally) -> source.Source | tuple[int, str]:
    """The verified log with every entry counted in ``tally``, or the exit code and what went wrong."""
    try:
        return source.read(args.log_dir, jwks=jwks, on_entry=tally.add)
    except AuditError as e:
        return 1, f"the log does not verify, no report written: {e}"
    except source.ReportError as e:
        return 1, str(e)
    except OSError as e:
        return 2, f"cannot read the log: {e}"


def _command(args: argparse.Namespace) -> str:
    """The ``pdp report`` command line that reproduces this report (for the evidence README)."""
    words = ["pdp", "report", str(args.log_dir), "--jwks", str(args.jwks)]
    for flag in ("since", "until"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", datetime.datetime.fromtimestamp(getattr(args, flag), datetime.UTC).isoformat()]
    if args.bundle is not None:
        words += ["--bundle", str(args.bundle)]
    return shlex.join([*words, "--out", str(args.out), "--evidence"])


def _catalog(args: argparse.Namespace) -> int:
    try:
        catalog = catalogs.load(args.bundle, opa_bin=Settings.from_env().opa_bin)
    except catalogs.CatalogError as e:
        print(f"pdp policy catalog: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        print(catalog.markdown(), end="")
        return 0
    _write_catalog(catalog, args.out)
    print(f"{len(catalog.rules)} rules: {args.out / 'catalog.md'}, {args.out / 'catalog.json'}")
    return 0


def _write_catalog(catalog: catalogs.Catalog, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "catalog.md").write_text(catalog.markdown())
    (out / "catalog.json").write_text(json.dumps(catalog.to_dict(), indent=2) + "\n")
