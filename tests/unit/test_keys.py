"""pdp/keys.py: the signing key on disk, its JWKS, rotation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pdp import keys
from pdp.errors import ConfigError
from pdp.keys import KeyRing


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return keys.rotate(tmp_path / "keys")


def test_private_keys_are_0600_and_a_readable_one_is_refused(tmp_path: Path, ring: KeyRing) -> None:
    pem = tmp_path / "keys" / f"{ring.kid}.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in json.dumps(ring.jwks) and "d" not in ring.jwks["keys"][0]
    pem.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        KeyRing.load(tmp_path / "keys")


def test_the_kid_is_the_rfc7638_thumbprint_and_the_jwks_round_trips(ring: KeyRing) -> None:
    (public,) = keys.public_keys(ring.jwks).values()
    assert keys.jwk(public)["kid"] == ring.kid
    assert set(keys.public_keys(ring.jwks)) == {ring.kid}
    assert keys.public_keys({"keys": [{"kty": "RSA", "kid": "x"}]}) == {}  # only Ed25519 counts


def test_rotation_keeps_every_public_key_and_drops_the_old_private_one(tmp_path: Path, ring: KeyRing) -> None:
    new = keys.rotate(tmp_path / "keys")
    assert new.kid != ring.kid
    assert set(keys.public_keys(new.jwks)) == {ring.kid, new.kid}
    assert not (tmp_path / "keys" / f"{ring.kid}.pem").exists()
    assert keys.ensure(tmp_path / "keys").kid == new.kid  # ensure loads, never rotates


def test_a_missing_key_directory_says_how_to_make_a_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pdp keys generate"):
        KeyRing.load(tmp_path / "nowhere")
