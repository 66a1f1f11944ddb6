"""The proxy's channel to the PDP: TLS (``--ca``), mTLS (``--cert``/``--key``), or plaintext on loopback only.

Under mTLS the PDP takes the proxy's identity from its certificate (its SPIFFE ID, else its subject):
the records are made for that name, the agent bindings and roles are checked against it, and only
this proxy may fetch the approval tokens of the escalations its calls opened. Plaintext is for a PDP
on this machine; a PDP elsewhere without TLS must be asked for explicitly (``--allow-insecure-non-loopback``,
as ``PDP_ALLOW_INSECURE_NON_LOOPBACK`` does for ``pdp serve``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pdp.client import is_loopback
from pdp.errors import PdpError


@dataclasses.dataclass(frozen=True, kw_only=True)
class TlsError(PdpError):
    """A TLS option the proxy cannot use; ``flag`` names it."""

    flag: str
    problem: str

    def __str__(self) -> str:
        return f"{self.flag}: {self.problem}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Channel:
    """How to reach the PDP: the address, and the credentials (None: plaintext)."""

    address: str
    credentials: grpc.ChannelCredentials | None = None
    options: tuple[tuple[str, str], ...] = ()


def configure(
    *,
    address: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    server_name: str = "",
    allow_insecure: bool = False,
) -> tuple[Channel, str]:
    """The channel the options ask for, and a warning to log ("" none).

    Args:
        address: the PDP's gRPC address (``--pdp``).
        ca: the CA certificates to trust for the PDP's certificate (``--ca``); None with a client
            certificate: the system's roots.
        cert: the proxy's client certificate chain (``--cert``), for mTLS; goes with ``key``.
        key: its private key (``--key``).
        server_name: the name to expect in the PDP's certificate, if not the address's host.
        allow_insecure: plaintext to a PDP beyond loopback is allowed (with a warning).

    Raises:
        TlsError: a file is missing, unreadable or not PEM, the key does not match the certificate,
            ``--cert``/``--key`` come alone, or plaintext beyond loopback was not allowed.
    """
    if (cert is None) != (key is None):
        raise TlsError(flag="--cert" if cert is None else "--key", problem="--cert and --key go together (mTLS)")
    if ca is None and cert is None:
        if server_name:
            raise TlsError(flag="--server-name", problem="applies to TLS only: give --ca (or --cert and --key)")
        if is_loopback(address):
            return Channel(address=address), ""
        if not allow_insecure:
            raise TlsError(
                flag="--pdp",
                problem=f"{address} is beyond loopback and the channel would be plaintext: anyone on the path could "
                "read the questions and the PDP could not tell this proxy from any other caller. Give --ca (and "
                "--cert/--key for mTLS), or --allow-insecure-non-loopback if something else protects the network",
            )
        return Channel(address=address), (
            f"INSECURE: asking the PDP at {address} over plaintext beyond loopback (--allow-insecure-non-loopback): "
            "the PDP sees an anonymous caller"
        )
    roots = _read(ca, "--ca") if ca is not None else None
    if roots is not None:
        _certificates(roots, "--ca")
    chain = key_pem = None
    if cert is not None and key is not None:
        chain, key_pem = _read(cert, "--cert"), _read(key, "--key")
        _check_pair(chain, key_pem)
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key_pem, certificate_chain=chain)
    options = (("grpc.ssl_target_name_override", server_name),) if server_name else ()
    return Channel(address=address, credentials=credentials, options=options), ""


def _read(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TlsError(flag=flag, problem=f"cannot read {path}: {e.strerror or e}") from None


def _certificates(pem: bytes, flag: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise TlsError(flag=flag, problem="not a PEM certificate (or bundle of certificates)") from None


def _check_pair(chain: bytes, key_pem: bytes) -> None:
    leaf = _certificates(chain, "--cert")[0]
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TlsError(flag="--key", problem=f"not an unencrypted PEM private key ({e})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, spki) != leaf.public_key().public_bytes(
        serialization.Encoding.PEM, spki
    ):
        raise TlsError(flag="--key", problem="does not belong to the certificate given with --cert")
