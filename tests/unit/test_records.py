"""pdp/records.py and pdp/schema.py: the typed records keep the wire format byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp import keys, records
from pdp.encoding import b64url, b64url_decode, sha256_digest
from pdp.errors import RecordError
from pdp.ledger.log import read_frames, segments
from pdp.schema import RECORD_TYPES, DecisionRecord, OutcomeRecord, RecordHead
from tests.helpers import ROOT

LEGACY = ROOT / "tests" / "data" / "legacy-log"


def legacy_tokens() -> list[str]:
    return [f.payload.decode() for path in segments(LEGACY / "log") for f in read_frames(path.read_bytes())[0]]


def test_every_record_of_an_earlier_version_reads_back_to_its_exact_signed_payload() -> None:
    jwks = json.loads((LEGACY / "jwks.json").read_text())
    kinds = []
    for token in legacy_tokens():
        typ = records.header_typ(token)
        claims = records.verify(token, keys.public_keys(jwks), typ=typ)
        record = RECORD_TYPES[typ].from_dict(claims)
        assert record.to_dict() == claims
        # the typed record serialises to the very bytes that were signed
        assert records.compact(record.to_dict()) == b64url_decode(token.split(".")[1])
        kinds.append(record.KIND)
    assert kinds.count("decision") == 8 and kinds.count("outcome") == 1


def test_a_typed_record_signs_and_verifies_with_its_own_typ(tmp_path: Path) -> None:
    ring = keys.rotate(tmp_path / "keys")
    token = legacy_tokens()[-1]
    outcome = OutcomeRecord.from_dict(records.unverified_claims(token)).at(41)
    signed = records.sign_record(outcome, ring)
    assert records.header_typ(signed) == records.TYP_OUTCOME
    claims = records.verify(signed, keys.public_keys(ring.jwks), typ=records.TYP_OUTCOME)
    assert RecordHead.from_dict(claims).log_index == "41"
    with pytest.raises(RecordError, match="typ is"):
        records.verify(signed, keys.public_keys(ring.jwks), typ=records.TYP_DECISION)


def test_a_record_missing_a_field_is_refused_naming_it() -> None:
    claims = records.unverified_claims(legacy_tokens()[0])
    del claims["pdp"]["action_digest"]
    with pytest.raises(RecordError, match=r"pdp\.action_digest"):
        DecisionRecord.from_dict(claims)


def test_base64url_is_strict_and_digests_are_prefixed_once() -> None:
    assert b64url_decode(b64url(b"\xff\xfe")) == b"\xff\xfe"
    for bad in ("QQ==", "Q\u00e9"):
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(bad)
    assert sha256_digest(b"").startswith("sha256:e3b0c442")
    assert records.digest({"b": 1, "a": 2}) == sha256_digest(b'{"a":2,"b":1}')
