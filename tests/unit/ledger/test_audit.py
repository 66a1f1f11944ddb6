"""``pdp audit verify`` on a log written by an earlier version of the PDP (tests/data/legacy-log)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pdp.cli import main
from pdp.ledger.audit import AuditError, verify_log
from tests.helpers import ROOT

LEGACY = ROOT / "tests" / "data" / "legacy-log"


def test_a_log_written_before_the_record_refactor_still_verifies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(LEGACY / "log"), "--jwks", str(LEGACY / "jwks.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 9 entries (8 decisions, 1 outcome reports), 5 checkpoints of pdp.example/legacy")


def test_a_flipped_byte_in_the_legacy_log_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "log"
    shutil.copytree(LEGACY / "log", log)
    segment = log / "segment-000001.log"
    data = bytearray(segment.read_bytes())
    data[40] ^= 1
    segment.write_bytes(bytes(data))
    jwks = json.loads((LEGACY / "jwks.json").read_text())
    with pytest.raises(AuditError, match=r"segment-000001\.log"):
        verify_log(log, jwks=jwks)
