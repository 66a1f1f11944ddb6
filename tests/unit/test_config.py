from __future__ import annotations

import pytest

from pdp import devissuer
from pdp.config import Settings
from pdp.errors import ConfigError


def test_defaults_serve_on_loopback() -> None:
    s = Settings.from_env({})
    assert s.listen == "127.0.0.1:50051"
    assert s.opa_url == "http://127.0.0.1:8181"
    assert s.decision_path == "pdp/decision"


def test_values_are_read() -> None:
    s = Settings.from_env(
        {
            "PDP_LISTEN": "[::1]:0",
            "PDP_OPA_URL": "unix:///run/opa.sock",
            "PDP_OPA_TIMEOUT_MS": "250",
            "PDP_MAX_DEPTH": "8",
            "PDP_LOG_LEVEL": "debug",
        }
    )
    assert (s.listen, s.opa_url, s.opa_timeout_s, s.max_depth, s.log_level) == (
        "[::1]:0",
        "unix:///run/opa.sock",
        0.25,
        8,
        "DEBUG",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PDP_LISTEN", "50051"),
        ("PDP_LISTEN", "host:99999"),
        ("PDP_OPA_URL", "https://opa.example.com"),
        ("PDP_OPA_URL", "unix://relative.sock"),
        ("PDP_DECISION_PATH", "pdp.decision"),
        ("PDP_OPA_TIMEOUT_MS", "fast"),
        ("PDP_OPA_TIMEOUT_MS", "0"),
        ("PDP_MAX_REQUEST_BYTES", "10"),
        ("PDP_LOG_LEVEL", "chatty"),
        ("PDP_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("PDP_TRUST_FILE", "/nonexistent/trust.json"),
    ],
)
def test_invalid_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}"):
        Settings.from_env({name: value})


def test_tls_needs_cert_and_key_together(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="together"):
        Settings.from_env({"PDP_TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="mTLS needs TLS"):
        Settings.from_env({"PDP_TLS_CLIENT_CA_FILE": str(cert)})


def test_trust_file_is_loaded_and_checked_at_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    trust = devissuer.init(tmp_path / "issuers")
    settings = Settings.from_env({"PDP_TRUST_FILE": str(trust)})
    assert set(settings.trust.issuers["principal"]) == {devissuer.ISSUERS["principal"]}
    assert Settings.from_env({}).trust.issuers == {}  # unset: nothing is verifiable
    (tmp_path / "issuers" / "risk.jwks.json").write_text('{"keys": []}')
    with pytest.raises(ConfigError, match=r"^PDP_TRUST_FILE risk\[0\]\.jwks_file: "):
        Settings.from_env({"PDP_TRUST_FILE": str(trust)})
