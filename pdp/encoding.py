"""The two encodings every signed thing uses, each in one place: ``sha256:`` digests and base64url."""

from __future__ import annotations

import base64
import hashlib

SHA256 = "sha256:"


def sha256_digest(data: bytes) -> str:
    """``sha256:<lowercase hex>`` of ``data``: how every digest in a record, an approval or the log is written."""
    return SHA256 + hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2), as in JWS and JWK."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str | bytes) -> bytes:
    """The bytes of unpadded base64url text.

    Raises:
        ValueError: padding, non-ASCII or a character outside the base64url alphabet.
    """
    raw = text.encode() if isinstance(text, str) else text
    if b"=" in raw or not raw.isascii():
        raise ValueError("padding or non-ASCII in base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
