"""Server credentials: TLS from PDP_TLS_CERT_FILE/PDP_TLS_KEY_FILE, mTLS with PDP_TLS_CLIENT_CA_FILE."""

from __future__ import annotations

import grpc

from pdp.config import Settings
from pdp.errors import ConfigError


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    """The credentials for a TLS port.

    Raises:
        ConfigError: a certificate or key file cannot be read.
    """
    assert settings.tls_cert_file and settings.tls_key_file
    try:
        ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
        pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    except OSError as e:
        raise ConfigError(f"cannot read a TLS file: {e}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)
