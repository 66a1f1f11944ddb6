"""``pdp audit verify`` on a log written by an earlier version of the PDP (tests/data/legacy-log), and
on logs whose checkpoints are not consistent (``pdp report`` refuses those too)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from pdp import keys, records
from pdp.cli import main
from pdp.keys import KeyRing
from pdp.ledger import checkpoint, merkle
from pdp.ledger.audit import AuditError, verify_log
from pdp.ledger.files import CHECKPOINTS, frame, segment_name
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


ORIGIN = "test.example/split"


def _decision(ring: KeyRing, i: int, outcome: str) -> bytes:
    claims = {
        "decision_id": f"d-{i}",
        "timestamp": "2026-11-24T10:00:00Z",
        "pdp": {"type": "decision", "log_index": str(i), "outcome": outcome, "agent": {"id": "agent-1"}},
    }
    return records.sign(claims, ring, typ=records.TYP_DECISION).encode()


def _note(ring: KeyRing, entries: list[bytes]) -> bytes:
    """A checkpoint, signed with the log's own key, over exactly these entries."""
    root = merkle.root([merkle.leaf_hash(e) for e in entries])
    return checkpoint.sign(checkpoint.Checkpoint(ORIGIN, len(entries), root), name=ORIGIN, key=ring.private)


def _write(directory: Path, entries: list[bytes], notes: list[bytes]) -> Path:
    directory.mkdir()
    (directory / segment_name(0)).write_bytes(b"".join(frame(e) for e in entries))
    (directory / CHECKPOINTS).write_bytes(b"".join(frame(n) for n in notes))
    return directory


def _histories(ring: KeyRing) -> tuple[list[bytes], list[bytes]]:
    """The log as it is (10 decisions), and the history it had when the first checkpoint was
    signed: entry 2 was a deny, later rewritten into an allow and re-signed for the same index."""
    log = [_decision(ring, i, "allow") for i in range(10)]
    before = [*log[:2], _decision(ring, 2, "deny"), *log[3:]]
    return log, before


def _refused(log: Path, jwks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], why: str) -> None:
    assert main(["audit", "verify", str(log), "--jwks", str(jwks)]) == 1
    assert re.search(why, capsys.readouterr().err)
    out = tmp_path / "report"
    assert main(["report", str(log), "--jwks", str(jwks), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "the log does not verify, no report written" in err
    assert re.search(why, err)
    assert not out.exists()


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return keys.rotate(tmp_path / "keys")


def test_checkpoints_over_one_history_verify_and_report(
    ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log, _ = _histories(ring)
    directory = _write(tmp_path / "log", log, [_note(ring, log[:0]), _note(ring, log[:5]), _note(ring, log)])
    jwks = tmp_path / "keys" / "jwks.json"
    assert main(["audit", "verify", str(directory), "--jwks", str(jwks)]) == 0
    assert capsys.readouterr().out.startswith(
        f"OK: 10 entries (10 decisions, 0 outcome reports), 3 checkpoints of {ORIGIN}"
    )
    assert main(["report", str(directory), "--jwks", str(jwks), "--out", str(tmp_path / "report")]) == 0
    figures = json.loads((tmp_path / "report" / "report.json").read_text())
    assert figures["decisions"]["by_outcome"]["allow"] == 10
    assert figures["provenance"]["checkpoint"]["size"] == 10


def test_an_earlier_checkpoint_over_another_history_is_refused(
    ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entry 2 was rewritten (validly signed, at its own index) and the latest checkpoint signed
    over the rewritten log: every record and the latest checkpoint verify, but the checkpoint
    published before the rewrite is not a prefix of this log, so the log is not consistent."""
    log, before = _histories(ring)
    directory = _write(tmp_path / "log", log, [_note(ring, before[:5]), _note(ring, log)])
    why = r"entry 4: the root up to here differs from the checkpoint of size 5"
    with pytest.raises(AuditError, match=why):
        verify_log(directory, jwks=ring.jwks)
    _refused(directory, tmp_path / "keys" / "jwks.json", tmp_path, capsys, why)


def test_two_checkpoints_of_one_size_over_different_histories_are_refused(
    ring: KeyRing, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A split view: the log signed two checkpoints of size 10 with different roots (one for the
    history some readers saw); the one that matches the files comes last."""
    log, before = _histories(ring)
    directory = _write(tmp_path / "log", log, [_note(ring, log[:5]), _note(ring, before), _note(ring, log)])
    why = r"entry 9: the root up to here differs from the checkpoint of size 10"
    with pytest.raises(AuditError, match=why):
        verify_log(directory, jwks=ring.jwks)
    _refused(directory, tmp_path / "keys" / "jwks.json", tmp_path, capsys, why)


def test_an_empty_checkpoint_with_a_root_is_refused(ring: KeyRing, tmp_path: Path) -> None:
    log, _ = _histories(ring)
    empty = checkpoint.sign(checkpoint.Checkpoint(ORIGIN, 0, merkle.leaf_hash(log[0])), name=ORIGIN, key=ring.private)
    directory = _write(tmp_path / "log", log, [empty, _note(ring, log)])
    with pytest.raises(AuditError, match="differs from the checkpoint of size 0"):
        verify_log(directory, jwks=ring.jwks)
