"""``pdp policy keygen|build|ci`` and ``pdp replay``: the policy lifecycle commands (docs/policy-lifecycle.md).

Both read and write files and start their own OPA when they need one; neither talks to a PDP.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pdp.cli.base import Subcommands
from pdp.config import Settings
from pdp.errors import AuditError, SidecarError
from pdp.policy import bundles, ci, replay
from pdp.report.cli import time_arg
from pdp.sidecar import OpaSidecar, free_port

EXIT_GATE = 1
"""``pdp replay``: the candidate crossed a threshold."""
EXIT_UNREADABLE = 2
"""``pdp replay``: a file could not be read, or the candidate bundle does not load."""
EXIT_TAMPERED = 3
"""``pdp replay``: the log does not verify; nothing was replayed."""


def register(sub: Subcommands) -> None:
    """Adds ``policy keygen``, ``policy build`` and ``replay`` to the ``pdp`` command's subparsers."""
    actions = policy_actions(sub)
    k = actions.add_parser("keygen", help="make a bundle signing key pair (ES256) in a directory")
    k.add_argument("dir", type=Path, help="where bundle-signing.pem (0600) and bundle-signing.pub.pem go")
    k.add_argument("--if-missing", action="store_true", help="keep an existing key")
    k.set_defaults(func=_keygen)

    b = actions.add_parser("build", help="build a bundle directory into a signed bundle tarball (opa build, ES256)")
    b.add_argument("source", type=Path, help="the bundle directory (e.g. rego)")
    b.add_argument(
        "--signing-key", type=Path, required=True, help="private key file, or a directory from `pdp policy keygen`"
    )
    b.add_argument("--out", type=Path, default=Path("bundle.tar.gz"), help="the tarball (default: %(default)s)")
    b.add_argument("--revision", help="the .manifest revision (default: the source's)")
    b.add_argument(
        "--make-key",
        action="store_true",
        help="make the key in the --signing-key directory when it has none (as `pdp policy keygen --if-missing`)",
    )
    b.add_argument(
        "--opa-config",
        type=Path,
        help="also write the OPA configuration that loads this tarball from where it is, verifies it with the "
        "key's public half and id, and turns on the status the PDP reads (as `pdp dev` starts OPA)",
    )
    b.set_defaults(func=_build)

    c = actions.add_parser(
        "ci", help="the checks for a policy repository: fmt, check --strict, tests with coverage, Regal, replay gate"
    )
    c.add_argument("bundle", type=Path, help="the bundle directory")
    c.add_argument("--coverage", type=float, default=100.0, help="least test coverage in %% (default: %(default)s)")
    c.add_argument("--regal", help="the regal binary (default: regal on PATH; without one the step is skipped)")
    c.add_argument("--replay-log", type=Path, help="replay this decision log against the bundle as a gate")
    c.add_argument("--jwks", type=Path, help="the replayed log's public keys (with --replay-log)")
    c.add_argument("--replay-out", type=Path, help="write the replay's impact.json and impact.html here")
    c.add_argument(
        "--fail-on",
        default=",".join(replay.DEFAULT_FAIL_ON),
        help="replay changes that fail the gate (default: %(default)s)",
    )
    c.add_argument("--exclude-masked", action="store_true", help="replay gate: leave changes on masked input out")
    c.set_defaults(func=_ci)

    r = sub.add_parser(
        "replay", help="replay a verified decision log against a candidate bundle; report and gate the changes"
    )
    r.add_argument("log_dir", type=Path, help="the decision log directory (PDP_LOG_DIR)")
    r.add_argument("--bundle", type=Path, required=True, help="the candidate: a bundle directory or signed tarball")
    r.add_argument("--jwks", type=Path, required=True, help="the log's public keys (PDP_KEY_DIR/jwks.json, GetJwks)")
    r.add_argument("--verification-key", type=Path, help="the candidate tarball must be signed by this key")
    r.add_argument("--since", type=time_arg, help="first decision time replayed (RFC 3339 or a date; UTC)")
    r.add_argument("--until", type=time_arg, help="end of the period, exclusive (RFC 3339 or a date; UTC)")
    r.add_argument(
        "--fail-on",
        type=_kinds,
        default=replay.DEFAULT_FAIL_ON,
        help="changes that fail the gate, comma-separated before->after or 'reasons', or 'none' "
        f"(default: {','.join(replay.DEFAULT_FAIL_ON)})",
    )
    r.add_argument("--max-changes", type=int, help="fail when more decisions than this change at all")
    r.add_argument(
        "--exclude-masked",
        action="store_true",
        help="leave changes on masked input out of the gate (they may be the mask's doing); still reported",
    )
    r.add_argument("--out", type=Path, help="write impact.json and impact.html here")
    r.add_argument("--batch", type=int, default=100, help="decisions per OPA query (default: %(default)s)")
    r.add_argument("--examples", type=int, default=5, help="example changes kept per kind (default: %(default)s)")
    r.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help="progress bar on stderr (auto: when it is a terminal)",
    )
    r.set_defaults(func=_replay)


def policy_actions(sub: Subcommands) -> Subcommands:
    """The subparsers of ``pdp policy``, made here unless another command group made them first."""
    existing = sub.choices.get("policy")
    if existing is None:
        p = sub.add_parser("policy", help="policy bundle tools")
        return p.add_subparsers(required=True, metavar="ACTION")
    return next(a for a in existing._actions if isinstance(a, argparse._SubParsersAction))


def _kinds(text: str) -> tuple[str, ...]:
    try:
        return replay.kinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _keygen(args: argparse.Namespace) -> int:
    if (args.dir / bundles.PRIVATE_FILE).exists() and not args.if_missing:
        print(f"pdp policy keygen: {args.dir} already has a bundle signing key", file=sys.stderr)
        return 2
    key = bundles.ensure(args.dir)
    print(f"bundle signing key {key.key_id}: private {key.private}, public {key.public}")
    return 0


def _build(args: argparse.Namespace) -> int:
    try:
        key = bundles.ensure(args.signing_key) if args.make_key else bundles.SigningKey.load(args.signing_key)
        built = bundles.build(
            args.source, args.out, opa_bin=Settings.from_env().opa_bin, key=key, revision=args.revision
        )
    except bundles.BundleError as e:
        print(f"pdp policy build: {e}", file=sys.stderr)
        return 2
    if args.opa_config is not None:
        config = bundles.serving_config(built, key)
        args.opa_config.write_text(json.dumps(config, indent=2) + "\n")
    print(json.dumps(built.to_dict(), indent=2))
    return 0


def _ci(args: argparse.Namespace) -> int:
    if (args.replay_log is None) != (args.jwks is None):
        print("pdp policy ci: --replay-log and --jwks go together", file=sys.stderr)
        return 2
    gate: list[str] = []
    if args.replay_log is not None:
        gate = [str(args.replay_log), "--jwks", str(args.jwks), "--fail-on", args.fail_on]
        gate += ["--out", str(args.replay_out)] if args.replay_out else []
        gate += ["--exclude-masked"] if args.exclude_masked else []
    checks = ci.steps(
        args.bundle,
        opa_bin=Settings.from_env().opa_bin,
        regal_bin=ci.find_regal(args.regal),
        coverage=args.coverage,
        replay=gate,
    )
    return ci.run(checks, coverage=args.coverage)


def _replay(args: argparse.Namespace) -> int:
    try:
        jwks = json.loads(args.jwks.read_text())
        key = bundles.SigningKey.load(args.verification_key) if args.verification_key else None
    except (OSError, ValueError, bundles.BundleError) as e:
        print(f"pdp replay: cannot read {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    impact = replay.Impact(examples=args.examples)
    try:
        decisions, impact.skipped = _verified(args, jwks, impact)
    except AuditError as e:
        print(f"pdp replay: the log does not verify, nothing replayed: {e}", file=sys.stderr)
        return EXIT_TAMPERED
    except OSError as e:
        print(f"pdp replay: cannot read the log: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    show = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    try:
        with _candidate(args.bundle, key) as opa_url:
            replay.replay(
                decisions,
                opa_url=opa_url,
                batch_size=args.batch,
                impact=impact,
                progress=replay.Progress(total=len(decisions)) if show else None,
            )
    except (SidecarError, replay.ReplayError, bundles.BundleError) as e:
        print(f"pdp replay: {e}", file=sys.stderr)
        return EXIT_UNREADABLE
    crossed = impact.gate(fail_on=args.fail_on, max_changes=args.max_changes, exclude_masked=args.exclude_masked)
    report = {
        "log": str(args.log_dir),
        "bundle": str(args.bundle),
        "since": args.since,
        "until": args.until,
        "gate": {
            "fail_on": list(args.fail_on),
            "max_changes": args.max_changes,
            "exclude_masked": args.exclude_masked,
            "crossed": crossed,
        },
        "impact": impact.to_dict(),
    }
    _summary(report, sys.stdout)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "impact.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "impact.html").write_text(replay.html_page(report, title=f"Policy replay: {args.bundle}"))
        print(f"written: {args.out / 'impact.json'}, {args.out / 'impact.html'}")
    return EXIT_GATE if crossed else 0


def _verified(args: argparse.Namespace, jwks: dict[str, Any], impact: replay.Impact) -> tuple[list[Any], int]:
    start = time.perf_counter()
    decisions, skipped = replay.read_log(args.log_dir, jwks=jwks, since=args.since, until=args.until)
    impact.verify_seconds = time.perf_counter() - start
    return decisions, skipped


@contextlib.contextmanager
def _candidate(bundle: Path, key: bundles.SigningKey | None) -> Iterator[str]:
    """A real OPA serving the candidate on a free port, its log in a temporary file."""
    with tempfile.TemporaryFile() as opa_log:
        sidecar = OpaSidecar(
            opa_bin=Settings.from_env().opa_bin,
            bundle=bundle,
            addr=f"127.0.0.1:{free_port()}",
            log_file=opa_log,
            verification_key=key,
        )
        try:
            sidecar.start()
        except SidecarError:
            opa_log.seek(0)
            raise SidecarError(
                f"the candidate bundle {bundle} does not load: {opa_log.read().decode(errors='replace')[-500:]}"
            ) from None
        try:
            yield sidecar.url
        finally:
            sidecar.stop()


def _summary(report: dict[str, Any], out: Any) -> None:
    impact = report["impact"]
    seconds = impact["seconds"]
    rate = impact["replayed"] / seconds["replay"] if seconds["replay"] else 0.0
    print(
        f"replayed {impact['replayed']} decisions against {report['bundle']} in {seconds['replay']:.2f}s "
        f"({rate:,.0f}/s; log verified in {seconds['verify']:.2f}s); "
        f"{impact['changed']} changed, {impact['skipped_without_verdict']} skipped (no policy verdict recorded)",
        file=out,
    )
    for kind, n in impact["by_kind"].items():
        print(f"  {kind}: {n}", file=out)
    if impact["changes_on_masked_input"]:
        print(f"  (of which on masked input: {impact['changes_on_masked_input']})", file=out)
    for examples in impact["examples"].values():
        for e in examples[:2]:
            print(
                f"  e.g. #{e['log_index']} {e['agent']} {e['tool']}: {e['before']['outcome']} "
                f"{e['before']['reasons']} -> {e['after']['outcome']} {e['after']['reasons']}",
                file=out,
            )
    crossed = report["gate"]["crossed"]
    print(f"GATE FAILED: {'; '.join(crossed)}" if crossed else "gate passed", file=out)
