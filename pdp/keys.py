"""Ed25519 signing keys: generate, load, rotate; their public half as a JWKS.

A key directory holds one private key per ``kid`` (``<kid>.pem``, PKCS#8, mode 0600), the file
``active`` naming the key that signs now, and ``jwks.json`` with the public keys of every key that
ever signed (rotation adds; nothing is removed, so old records and checkpoints keep verifying),
and ``id-secret``, the secret decision ids are derived with (:func:`id_secret`).
A retired key's private file is deleted at rotation. The ``kid`` is the RFC 7638 JWK thumbprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from pdp.encoding import b64url, b64url_decode
from pdp.errors import ConfigError

ALG = "EdDSA"  # the JWS alg (RFC 8037); the JWKS carries the same, see FACTS on interop


def jwk(public: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK, with its RFC 7638 thumbprint as ``kid``."""
    x = b64url(public.public_bytes(Encoding.Raw, PublicFormat.Raw))
    thumb = hashlib.sha256(json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":")).encode())
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": b64url(thumb.digest()), "use": "sig", "alg": ALG}


def public_keys(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS by ``kid``; anything else in it is ignored."""
    keys = {}
    for k in jwks.get("keys", []):
        if k.get("kty") == "OKP" and k.get("crv") == "Ed25519" and isinstance(k.get("kid"), str):
            raw = b64url_decode(k["x"])
            keys[k["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


@dataclasses.dataclass(frozen=True)
class KeyRing:
    """The active signing key and every public key that ever signed."""

    kid: str
    private: Ed25519PrivateKey = dataclasses.field(repr=False)
    jwks: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> KeyRing:
        """Loads the active key.

        Raises:
            ConfigError: no key, a private key readable by others, or files that disagree.
        """
        try:
            kid = (directory / "active").read_text().strip()
            path = directory / f"{kid}.pem"
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(f"{path} is readable by others (mode {oct(mode & 0o777)}); chmod 600 it")
            key = load_pem_private_key(path.read_bytes(), password=None)
            jwks = json.loads((directory / "jwks.json").read_text())
        except FileNotFoundError as e:
            raise ConfigError(
                f"no signing key in {directory} ({e.filename} missing): run `pdp keys generate`"
            ) from None
        except ValueError as e:
            raise ConfigError(f"the signing key in {directory} cannot be read: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path} is not an Ed25519 key")
        if jwk(key.public_key())["kid"] != kid or kid not in public_keys(jwks):
            raise ConfigError(f"{directory}: the active key {kid} is not the key in its file or not in jwks.json")
        return cls(kid=kid, private=key, jwks=jwks)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rotate(directory: Path) -> KeyRing:
    """Makes a new active key (the first one, if there is none); old public keys stay in the JWKS."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = None
    jwks: dict[str, Any] = {"keys": []}
    if (directory / "active").exists():
        old = KeyRing.load(directory)
        jwks = old.jwks
    key = Ed25519PrivateKey.generate()
    public = jwk(key.public_key())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    _write(directory / f"{public['kid']}.pem", pem, 0o600)
    _write(directory / "jwks.json", json.dumps({"keys": [*jwks["keys"], public]}, indent=2).encode(), 0o644)
    _write(directory / "active", public["kid"].encode() + b"\n", 0o644)
    if old is not None:
        (directory / f"{old.kid}.pem").unlink(missing_ok=True)
    id_secret(directory)  # made once, beside the first key (rotation keeps it: ids stay stable)
    return KeyRing.load(directory)


def ensure(directory: Path) -> KeyRing:
    """Loads the key ring, generating a first key if the directory has none (development)."""
    if not (directory / "active").exists():
        return rotate(directory)
    return KeyRing.load(directory)


ID_SECRET = "id-secret"  # noqa: S105  (a file name, not a secret)
"""The file in the key directory holding the server-held secret decision ids are derived with."""


def id_secret(directory: Path) -> bytes:
    """The decision-id secret (32 random bytes, mode 0600), made on first use.

    Raises:
        ConfigError: it cannot be read or made (a read-only key directory without the file).
    """
    path = directory / ID_SECRET
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise ConfigError(f"PDP_KEY_DIR: cannot make {path}: {e} (create it: 32 random bytes, mode 0600)") from None
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32))
            f.flush()
            os.fsync(f.fileno())
    try:
        secret = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"PDP_KEY_DIR: cannot read {path}: {e}") from None
    if len(secret) < 16:
        raise ConfigError(f"PDP_KEY_DIR: {path} must hold at least 16 random bytes")
    return secret
