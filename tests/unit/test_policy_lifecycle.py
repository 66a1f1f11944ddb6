"""Pure parts of the policy lifecycle: masking pointers, divergence kinds, replay tallies and gates."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pdp.policy import bundles, masking, replay, shadow
from pdp.records import redact
from pdp.verdict import Outcome, Reason, Verdict


def verdict(outcome: str, *codes: str) -> Verdict:
    return Verdict(outcome=Outcome(outcome), reasons=tuple(Reason(code=c) for c in codes))


def test_redact_masks_and_erases_through_objects_and_arrays() -> None:
    doc = {"action": {"arguments": {"patient_id": "p-1", "contacts": [{"phone": "1"}, {"phone": "2"}], "n": [1, 2, 3]}}}
    pointers = masking.Pointers(
        mask=("/action/arguments/patient_id", "/action/arguments/contacts/1/phone", "/missing/x"),
        erase=("/action/arguments/n/0", "/action/arguments/n/2"),
    )
    shown, masked, erased = redact(doc, mask=pointers.mask, erase=pointers.erase)
    assert shown["action"]["arguments"] == {
        "patient_id": "**masked**",
        "contacts": [{"phone": "1"}, {"phone": "**masked**"}],
        "n": [2],
    }
    assert masked == ["/action/arguments/patient_id", "/action/arguments/contacts/1/phone"]
    assert erased == ["/action/arguments/n/0", "/action/arguments/n/2"]
    assert doc["action"]["arguments"]["patient_id"] == "p-1", "the live input is not changed"


def test_pointers_add_without_repeats() -> None:
    both = masking.Pointers(mask=("/a",), erase=("/b",)) + masking.Pointers(mask=("/a", "/c"))
    assert both == masking.Pointers(mask=("/a", "/c"), erase=("/b",))


@pytest.mark.parametrize(
    ("live", "reasons", "candidate", "expected"),
    [
        ("allow", ["tool.granted"], verdict("deny", "tool.not_granted"), "allow->deny"),
        ("deny", ["x"], verdict("allow", "x"), "deny->allow"),
        ("deny", ["a", "b"], verdict("deny", "b", "a"), None),
        ("deny", ["a"], verdict("deny", "a", "b"), "reasons"),
    ],
)
def test_divergence_kinds(live: str, reasons: list[str], candidate: Verdict, expected: str | None) -> None:
    assert shadow.kind(live, reasons, candidate) == expected


def recorded(i: int, outcome: str, *reasons: str, masked: bool = False) -> replay.Recorded:
    return replay.Recorded(
        log_index=i,
        decision_id=f"d{i}",
        timestamp="2026-11-25T00:00:00Z",
        agent="a",
        tool="t",
        outcome=outcome,
        reasons=reasons,
        input={},
        masked=masked,
    )


def test_impact_tallies_and_gate() -> None:
    impact = replay.Impact(examples=1)
    impact.add(recorded(0, "deny", "x"), verdict("allow", "y"))
    impact.add(recorded(1, "deny", "x", masked=True), verdict("allow", "y"))
    impact.add(recorded(2, "allow", "y"), verdict("allow", "y"))
    assert (impact.replayed, impact.changed, impact.changes_on_masked_input) == (3, 2, 1)
    assert impact.to_dict()["by_kind"] == {"deny->allow": 2}
    assert len(impact.examples["deny->allow"]) == 1
    assert impact.gate(fail_on=replay.DEFAULT_FAIL_ON, max_changes=None) == ["2 deny->allow change(s)"]
    assert impact.gate(fail_on=(), max_changes=2) == []
    assert impact.gate(fail_on=(), max_changes=1) == ["2 changes in all (at most 1 allowed)"]
    assert impact.gate(fail_on=replay.DEFAULT_FAIL_ON, max_changes=None, exclude_masked=True) == [
        "1 deny->allow change(s)"
    ]
    assert impact.to_dict()["by_kind_on_masked_input"] == {"deny->allow": 1}


def test_fail_on_kinds_are_checked() -> None:
    assert replay.kinds("deny→allow, reasons") == ("deny->allow", "reasons")
    assert replay.kinds("none") == ()
    with pytest.raises(ValueError, match="maybe->allow"):
        replay.kinds("maybe->allow")


ED25519_PUBLIC = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)


def test_bundle_key_id_is_the_jwk_thumbprint(tmp_path: Path) -> None:
    key = bundles.generate(tmp_path)
    assert key.key_id == bundles.key_id(key.public.read_bytes())
    assert len(key.key_id) == 43  # base64url of SHA-256
    assert bundles.SigningKey.load(key.public) == bundles.SigningKey(private=None, public=key.public, key_id=key.key_id)
    with pytest.raises(bundles.BundleError, match="P-256"):
        bundles.key_id(ED25519_PUBLIC)
