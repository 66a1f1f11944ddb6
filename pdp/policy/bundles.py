"""Signed policy bundles: the signing key, ``opa build --signing-key``, OPA's verification config,
and what OPA's ``/v1/status`` says about the bundles it holds.

**Algorithm: ES256 (ECDSA P-256).** OPA signs and verifies EdDSA on the command line
(``opa build/run --signing-alg EdDSA``), but its configuration file rejects ``keys.<id>.algorithm:
EdDSA``, and a bundle polled from a bundle server is verified with a key from that file. ES256 is
accepted by both, so one key and one bundle work for ``pdp dev`` (a bundle file on the command
line) and for production (polled from an HTTP server with ETag). RS256/PS256 would too, with
larger keys and signatures.

**Key id.** The signing key's id is the RFC 7638 thumbprint of its public JWK, so the id in the
bundle's signature header, in OPA's ``keys`` config and in every decision record names exactly one
public key: a record says which key signed the policy that decided it (OPA refuses any bundle that
key did not sign), and the revision it carries is covered by that signature (``.manifest`` is one
of the signed files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pdp.encoding import b64url, b64url_decode, sha256_digest
from pdp.errors import PdpError
from pdp.opa import UnixHTTPConnection

SIGNING_ALG = "ES256"
PRIVATE_FILE = "bundle-signing.pem"
PUBLIC_FILE = "bundle-signing.pub.pem"


class BundleError(PdpError):
    """A bundle cannot be built, read or verified; the message names the file."""

    hint = "see docs/policy-lifecycle.md"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SigningKey:
    """A bundle signing key pair on disk.

    Attributes:
        private: the PKCS#8 PEM private key (mode 0600), or None for a verification-only key.
        public: the SubjectPublicKeyInfo PEM public key.
        key_id: the RFC 7638 thumbprint of the public key.
    """

    private: Path | None
    public: Path
    key_id: str

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Loads a key from a private key file, a public key file, or a directory holding them.

        Raises:
            BundleError: no ES256 (P-256) key there.
        """
        private: Path | None = None
        if path.is_dir():
            private = path / PRIVATE_FILE if (path / PRIVATE_FILE).is_file() else None
            public = path / PUBLIC_FILE
        else:
            data = _read(path)
            if b"PRIVATE KEY" in data:
                private, public = path, path.with_name(path.name.removesuffix(".pem") + ".pub.pem")
                if not public.is_file():
                    _write(public, _public_pem(_private_key(data, path)), 0o644)
            else:
                public = path
        return cls(private=private, public=public, key_id=key_id(_read(public)))

    @property
    def public_pem(self) -> str:
        return self.public.read_text()


def generate(directory: Path) -> SigningKey:
    """Writes a new P-256 key pair into ``directory`` (private 0600) and returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(directory / PRIVATE_FILE, pem, 0o600)
    _write(directory / PUBLIC_FILE, _public_pem(key), 0o644)
    return SigningKey.load(directory)


def ensure(directory: Path) -> SigningKey:
    """The key pair in ``directory``, generated on first use."""
    if (directory / PRIVATE_FILE).is_file():
        return SigningKey.load(directory)
    return generate(directory)


def key_id(public_pem: bytes) -> str:
    """The RFC 7638 JWK thumbprint (base64url SHA-256) of an EC P-256 public key.

    Raises:
        BundleError: not a P-256 public key.
    """
    try:
        public = serialization.load_pem_public_key(public_pem)
    except ValueError as e:
        raise BundleError(f"not a PEM public key: {e}") from None
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise BundleError(f"bundle keys are ECDSA P-256 ({SIGNING_ALG}); this is another kind of key")
    nums = public.public_numbers()
    members = {
        "crv": "P-256",
        "kty": "EC",
        "x": b64url(nums.x.to_bytes(32, "big")),
        "y": b64url(nums.y.to_bytes(32, "big")),
    }
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Built:
    """A signed bundle tarball.

    Attributes:
        path: the ``.tar.gz``.
        revision: the ``.manifest`` revision (covered by the signature).
        key_id: the signing key's id.
        signature_digest: ``sha256:`` of the signature token in ``.signatures.json``.
    """

    path: Path
    revision: str
    key_id: str
    signature_digest: str

    def to_dict(self) -> dict[str, str]:
        return {
            "path": str(self.path),
            "revision": self.revision,
            "key_id": self.key_id,
            "signature_digest": self.signature_digest,
        }


def build(source: Path, out: Path, *, opa_bin: str, key: SigningKey, revision: str | None = None) -> Built:
    """Builds ``source`` (a bundle directory) into a signed tarball with ``opa build``.

    Policy tests (``*_test.rego``) are left out: they are not policy.

    Raises:
        BundleError: the source is not a bundle directory, the key has no private half, or
            ``opa build`` failed (its message is included).
    """
    if not (source / ".manifest").is_file():
        raise BundleError(f"{source} is not a bundle directory (no .manifest)")
    if key.private is None:
        raise BundleError(f"{key.public} is a public key; signing needs the private key")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    cmd = [opa_bin, "build", "--bundle", ".", "--ignore", "*_test.rego", "--output", str(tmp.resolve())]
    cmd += ["--signing-key", str(key.private.resolve()), "--signing-alg", SIGNING_ALG]
    cmd += ["--verification-key-id", key.key_id]
    if revision:
        cmd += ["--revision", revision]
    # Run inside the bundle so the signed file names are the bundle's own paths (pdp/x.rego).
    done = subprocess.run(cmd, cwd=source, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"opa build {source} failed: {done.stderr.strip() or done.stdout.strip()}")
    os.replace(tmp, out)  # a bundle server never serves a half-written file
    return inspect(out)


def inspect(path: Path) -> Built:
    """Reads a bundle tarball's revision, signing key id and signature digest (not verified).

    Raises:
        BundleError: not a bundle tarball, or unsigned.
    """
    try:
        with tarfile.open(path, "r:gz") as tar:
            files = {m.name.lstrip("/"): m for m in tar.getmembers() if m.isfile()}
            manifest = _member_json(tar, files, ".manifest", path)
            signatures = _member_json(tar, files, ".signatures.json", path)
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{path}: not a bundle tarball: {e}") from None
    tokens = signatures.get("signatures") if isinstance(signatures, dict) else None
    if not isinstance(tokens, list) or not tokens or not isinstance(tokens[0], str):
        raise BundleError(f"{path}: .signatures.json holds no signature")
    head = tokens[0].split(".", 1)[0]
    try:
        header = json.loads(b64url_decode(head))
    except ValueError:
        raise BundleError(f"{path}: the bundle signature is not a JWS") from None
    return Built(
        path=path,
        revision=str(manifest.get("revision", "")) if isinstance(manifest, dict) else "",
        key_id=str(header.get("kid", "")),
        signature_digest=sha256_digest(tokens[0].encode()),
    )


def _member_json(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], name: str, path: Path) -> Any:
    member = files.get(name)
    f = tar.extractfile(member) if member is not None else None
    if f is None:
        raise BundleError(f"{path}: no {name} in the bundle")
    try:
        return json.loads(f.read())
    except ValueError:
        raise BundleError(f"{path}: {name} is not JSON") from None


def verification_args(key: SigningKey) -> list[str]:
    """``opa run`` flags that make OPA refuse a bundle file this key did not sign."""
    return ["--verification-key", str(key.public), "--verification-key-id", key.key_id, "--signing-alg", SIGNING_ALG]


def polling_config(
    *,
    resource: str,
    key: SigningKey,
    url: str | None = None,
    name: str = "rego",
    min_delay_s: int = 10,
    max_delay_s: int = 20,
) -> dict[str, Any]:
    """OPA configuration that polls a signed bundle and verifies it.

    From a bundle server, OPA sends the last ETag in ``If-None-Match``, so an unchanged bundle
    costs a 304. The status plugin turns on ``/v1/status``, where a refused reload shows: OPA's
    ``/health?bundles`` stays 200 while it keeps the old bundle. It is enabled through its
    Prometheus option, which (unlike ``console``) prints nothing: the console would get a line of
    some 60 KB of metrics at each activation.

    Args:
        resource: the bundle's path on the server (``bundles/rego.tar.gz``), or without ``url``
            a ``file://`` URL (``pdp dev``; OPA reads a file resource once, it does not poll it).
        key: the public key bundles must be signed with.
        url: the bundle server's base URL (``http://host:port``).
        name: the bundle's name (its revision is reported under it).
        min_delay_s, max_delay_s: polling interval bounds.
    """
    bundle: dict[str, Any] = {
        "resource": resource,
        "signing": {"keyid": key.key_id},
        "polling": {"min_delay_seconds": min_delay_s, "max_delay_seconds": max_delay_s},
    }
    config: dict[str, Any] = {
        "bundles": {name: bundle},
        "keys": {key.key_id: {"algorithm": SIGNING_ALG, "key": key.public_pem}},
        "status": {"prometheus": True},
    }
    if url is not None:
        bundle["service"] = "bundles"
        config["services"] = {"bundles": {"url": url}}
    return config


def dev_bundle(source: Path, run_dir: Path, *, opa_bin: str) -> tuple[Built, dict[str, Any]]:
    """``pdp dev``: signs ``source`` with a dev key (made under ``run_dir`` on first use) into
    ``run_dir/bundle/rego.tar.gz``, and the OPA configuration that loads and verifies it from
    there (a ``file://`` resource is read once: restart ``pdp dev`` after a policy change).

    Raises:
        BundleError: as :func:`build`.
    """
    key = ensure(run_dir / "bundle-key")
    built = build(source, run_dir / "bundle" / "rego.tar.gz", opa_bin=opa_bin, key=key)
    return built, serving_config(built, key)


def serving_config(built: Built, key: SigningKey) -> dict[str, Any]:
    """The OPA configuration that loads ``built`` from its file, verified with ``key``, with the
    status the PDP reads (a ``file://`` resource is read once: restart OPA after a new build)."""
    return polling_config(resource=built.path.resolve().as_uri(), key=key, min_delay_s=1, max_delay_s=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BundleState:
    """One bundle as OPA's ``/v1/status`` reports it.

    Attributes:
        name: the bundle's name.
        active_revision: the revision OPA serves ("" before the first activation).
        last_activation: when a revision was last activated (RFC 3339, "" never).
        error: the last load's error code and message ("" when it succeeded): a refused reload
            while ``active_revision`` keeps the old policy.
        last_request: when OPA last asked the bundle server.
    """

    name: str
    active_revision: str
    last_activation: str
    error: str
    last_request: str


def _get(opa_url: str, path: str, timeout_s: float) -> dict[str, Any] | None:
    """``result`` of a GET on OPA's REST API; None on any failure."""
    conn: http.client.HTTPConnection
    if opa_url.startswith("unix://"):
        conn = UnixHTTPConnection(opa_url.removeprefix("unix://"), timeout_s)
    else:
        conn = http.client.HTTPConnection(opa_url.removeprefix("http://"), timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return None
        result = json.loads(body).get("result")
    except (OSError, http.client.HTTPException, ValueError, AttributeError):
        return None
    finally:
        conn.close()
    return result if isinstance(result, dict) else None


def read_signing_keys(opa_url: str, *, timeout_s: float) -> dict[str, str]:
    """Each configured bundle's verification key id, from OPA's ``GET /v1/config`` (which shows
    key ids, never key material); empty for bundles given on OPA's command line."""
    config = _get(opa_url, "/v1/config", timeout_s) or {}
    bundles = config.get("bundles") if isinstance(config.get("bundles"), dict) else {}
    return {
        str(name): str(b["signing"]["keyid"])
        for name, b in (bundles or {}).items()
        if isinstance(b, dict) and isinstance(b.get("signing"), dict) and b["signing"].get("keyid")
    }


def read_status(opa_url: str, *, timeout_s: float) -> dict[str, BundleState] | None:
    """OPA's view of its bundles from ``GET /v1/status``; None when the status plugin is off
    (bundles given on the command line) or OPA cannot be reached.
    """
    status = _get(opa_url, "/v1/status", timeout_s)
    if status is None:
        return None
    bundles = status.get("bundles") or {}
    if not isinstance(bundles, dict):
        return None
    return {
        str(name): BundleState(
            name=str(name),
            active_revision=str(b.get("active_revision", "")),
            last_activation=str(b.get("last_successful_activation", "")),
            error=f"{b['code']}: {b.get('message', '')}" if b.get("code") else "",
            last_request=str(b.get("last_request", "")),
        )
        for name, b in bundles.items()
        if isinstance(b, dict)
    }


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _private_key(data: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except ValueError as e:
        raise BundleError(f"{path}: not a PEM private key: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BundleError(f"{path}: bundle keys are ECDSA P-256 ({SIGNING_ALG})")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"cannot read the bundle key {path}: {e.strerror}") from None


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
