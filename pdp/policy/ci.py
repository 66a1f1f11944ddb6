"""``pdp policy ci``: the checks a policy team runs on its own bundle repository, in CI or by hand.

In order, stopping at the first that fails: ``opa fmt`` (no unformatted file), ``opa check
--strict``, ``opa test`` with a coverage threshold, Regal lint, and (given a decision log and its
public keys) the replay gate: ``pdp replay`` of the log against the bundle, failing on the changes
the team chose (by default any that grants more: ``deny->allow``, ``require_approval->allow``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step:
    """One check: its name and command."""

    name: str
    cmd: list[str]


def steps(
    bundle: Path,
    *,
    opa_bin: str,
    regal_bin: str | None,
    coverage: float,
    replay: Sequence[str] = (),
) -> list[Step]:
    """The checks for ``bundle``; Regal is left out when ``regal_bin`` is None, the replay gate
    when ``replay`` (the arguments after ``pdp replay``) is empty."""
    b = str(bundle)
    out = [
        Step(name="opa fmt", cmd=[opa_bin, "fmt", "--fail", "--list", b]),
        Step(name="opa check --strict", cmd=[opa_bin, "check", "--strict", b]),
        Step(name=f"opa test, coverage >= {coverage:g}%", cmd=[opa_bin, "test", "--coverage", b]),
    ]
    if regal_bin is not None:
        out.append(Step(name="regal lint", cmd=[regal_bin, "lint", b]))
    if replay:
        out.append(Step(name="replay gate", cmd=[sys.executable, "-m", "pdp", "replay", *replay, "--bundle", b]))
    return out


def run(steps: Sequence[Step], *, coverage: float, out: IO[str] = sys.stdout) -> int:
    """Runs the checks in order; returns 0, or the failing check's exit status (at least 1)."""
    for step in steps:
        done = subprocess.run(step.cmd, capture_output=True, text=True, check=False)
        failed = done.returncode != 0
        detail = ""
        if step.name.startswith("opa test") and not failed:
            got = _coverage(done.stdout)
            failed = got is None or got < coverage
            detail = f" ({got:.1f}%)" if got is not None else " (no coverage report)"
        print(f"{'FAIL' if failed else 'ok  '} {step.name}{detail}", file=out)
        if failed:
            if step.name.startswith("opa test"):
                # The coverage report is JSON; the failing tests read better from a plain run.
                plain = [c for c in step.cmd if c != "--coverage"]
                done = subprocess.run(plain, capture_output=True, text=True, check=False)
            print(_tail(done.stdout + done.stderr), file=out)
            return done.returncode or 1
        if step.name == "replay gate":
            print(_tail(done.stdout), file=out)
    print("policy ci: all checks passed", file=out)
    return 0


def _coverage(stdout: str) -> float | None:
    try:
        return float(json.loads(stdout)["coverage"])
    except (ValueError, KeyError, TypeError):
        return None


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join("     " + line for line in text.strip().splitlines()[-lines:])


def find_regal(given: str | None) -> str | None:
    """The Regal binary: the one given, else ``regal`` on ``PATH``, else None (the step is skipped)."""
    return given or shutil.which("regal")
