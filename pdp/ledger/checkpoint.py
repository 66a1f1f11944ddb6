"""Checkpoints in the C2SP tlog-checkpoint format, signed as C2SP signed notes (Ed25519).

A checkpoint body is ``<origin>\\n<tree size>\\n<base64 root hash>\\n``; the note adds an empty line
and one signature line per signer: ``— <key name> <base64(4-byte key hash ‖ 64-byte signature)>``.
The key hash is the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key), so a verifier key
is written ``<name>+<8 hex>+<base64(0x01 ‖ public key)>`` (the form Go's sumdb/note reads).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from pdp.errors import CheckpointError

_ALG_ED25519 = b"\x01"
_DASH = "\u2014"
_NAME = re.compile(r"^[^\s+]+$")


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_hash(name: str, public: Ed25519PublicKey) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + _raw(public)).digest()[:4]


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    """The note verifier key string for ``name`` and ``public``."""
    return f"{name}+{key_hash(name, public).hex()}+{base64.b64encode(_ALG_ED25519 + _raw(public)).decode()}"


def sign(checkpoint: Checkpoint, *, name: str, key: Ed25519PrivateKey) -> bytes:
    """The signed note for a checkpoint."""
    if not _NAME.match(name):
        raise ValueError(f"bad note key name {name!r}")
    body = checkpoint.body()
    sig = base64.b64encode(key_hash(name, key.public_key()) + key.sign(body)).decode()
    return body + f"\n{_DASH} {name} {sig}\n".encode()


def open_note(note: bytes, verifiers: dict[tuple[str, bytes], Ed25519PublicKey]) -> Checkpoint:
    """Parses a signed checkpoint and checks that a known key signed it.

    Args:
        note: the signed note, exactly as stored.
        verifiers: known keys by (name, key hash); see :func:`key_hash`.

    Raises:
        CheckpointError: malformed, unsigned by any known key, or a signature that fails.
    """
    try:
        text = note.decode()
    except UnicodeDecodeError:
        raise CheckpointError("the note is not UTF-8") from None
    body, sep, sigs = text.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError("the note has no signature block")
    body += "\n"
    checkpoint = _parse_body(body)
    verified = False
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise CheckpointError(f"bad signature line {line!r}")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise CheckpointError("a signature is not base64") from None
        public = verifiers.get((parts[1], blob[:4]))
        if public is None or len(blob) != 68:
            continue  # a signer we do not know; the note must still carry one we do
        try:
            public.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError(f"the signature by {parts[1]} does not verify") from None
        verified = True
    if not verified:
        raise CheckpointError("no signature by a known key")
    return checkpoint


def _parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or not lines[0] or not lines[1].isdigit() or (lines[1] != "0" and lines[1].startswith("0")):
        raise CheckpointError("the checkpoint body is malformed")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise CheckpointError("the root hash is not base64") from None
    if len(root) != 32:
        raise CheckpointError("the root hash is not 32 bytes")
    return Checkpoint(origin=lines[0], size=int(lines[1]), root=root)


def note_verifiers(origin: str, keys: dict[str, Ed25519PublicKey]) -> dict[tuple[str, bytes], Ed25519PublicKey]:
    """Checkpoint verifiers for every public key (rotation keeps old checkpoints verifiable)."""
    return {(origin, key_hash(origin, k)): k for k in keys.values()}
