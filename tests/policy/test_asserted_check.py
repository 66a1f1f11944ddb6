"""The asserted-data check of ``make policy-check`` (.regal/asserted_check.py), on the real bundle and
on copies of it with a planted bad rule: each plant must fail the check, naming the rule."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.policy.v2 import OPA, REGO, ROOT

CHECK = ROOT / ".regal" / "asserted_check.py"


def run_check(bundle: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--opa", OPA, str(bundle)], capture_output=True, text=True, check=False
    )


def planted(tmp_path: pathlib.Path, rego: str) -> pathlib.Path:
    bundle = tmp_path / "rego"
    shutil.copytree(REGO, bundle)
    imports = "import data.pdp.trust\n\n" if "trust." in rego else ""
    (bundle / "pdp" / "baseline" / "planted.rego").write_text(f"package pdp.baseline\n\n{imports}{rego}")
    return bundle


def test_the_real_bundle_passes() -> None:
    result = run_check(REGO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no allow/relaxing rule reads input.asserted" in result.stdout


@pytest.mark.parametrize(
    ("rego", "finding"),
    [
        # An allow rule reading an asserted fact directly.
        (
            'allow contains "v" if input.asserted.agent.version == "1.4.1"\n',
            "allow/relaxing rule pdp.baseline.allow reads input.asserted",
        ),
        # ... through a helper, and the helper through the trust package's accessor.
        (
            'allow contains "p" if _treating\n\n_treating if trust.purpose == "treatment"\n',
            "pdp.baseline.allow -> pdp.baseline._treating -> pdp.trust.purpose",
        ),
        # ... through `input` as a whole.
        (
            'allow contains "o" if object.get(input, ["asserted", "risk", "score"], 100) < 10\n',
            "allow/relaxing rule pdp.baseline.allow reads input.asserted",
        ),
        # A deny that an asserted fact switches off: absent, it denies; asserted, it does not.
        (
            'deny contains "n" if not input.asserted.environment.change_ref\n',
            "`not` over asserted data in pdp.baseline.deny (input.asserted)",
        ),
        # ... through a helper rule.
        (
            'escalate contains "e" if not _low\n\n_low if trust.asserted(["risk", "score"], 100) < 10\n',
            "`not` over asserted data in pdp.baseline.escalate (pdp.baseline._low -> pdp.trust.asserted",
        ),
        # An `every` over asserted entries holds when there are none.
        (
            'deny contains "w" if {\n\tevery e in trust.asserted_lineage {\n\t\te.verified == false\n\t}\n}\n',
            "`every` over asserted data in pdp.baseline.deny",
        ),
    ],
    ids=["allow-direct", "allow-transitive", "allow-whole-input", "deny-not", "escalate-not-helper", "deny-every"],
)
def test_a_planted_rule_fails_the_check(tmp_path: pathlib.Path, rego: str, finding: str) -> None:
    bundle = planted(tmp_path, rego)
    assert subprocess.run([OPA, "check", "--strict", str(bundle)], capture_output=True, check=False).returncode == 0
    result = run_check(bundle)
    assert result.returncode == 1
    assert finding in result.stdout, result.stdout
    assert "let asserted data allow or relax" in result.stderr


def test_a_stricter_use_of_asserted_data_passes(tmp_path: pathlib.Path) -> None:
    # Asserted data that only adds a denial is what the trust model allows.
    bundle = planted(tmp_path, 'deny contains "t" if trust.asserted(["risk", "score"], 0) > 99\n')
    result = run_check(bundle)
    assert result.returncode == 0, result.stdout


def test_make_policy_check_runs_the_check() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = makefile.split("\npolicy-check:", 1)[1].split("\n\n", 1)[0]
    assert ".regal/asserted_check.py" in target


def test_the_regal_custom_rule_fails_a_planted_rule(tmp_path: pathlib.Path) -> None:
    # The same rule, per file, as a Regal custom rule (.regal/rules): `regal lint rego` fails.
    shutil.copytree(ROOT / ".regal", tmp_path / ".regal")
    planted(tmp_path, 'allow contains "v" if input.asserted.agent.version == "1.4.1"\n')
    regal = str(ROOT / ".bin" / "regal")
    result = subprocess.run([regal, "lint", "rego"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "Asserted data read where it can allow or relax a decision" in result.stdout
    assert "planted.rego" in result.stdout
    clean = subprocess.run([regal, "lint", "rego"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout
