"""The console's settings: it never listens without a way to know who the approver is."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.config import Settings
from pdp.errors import ConfigError


def test_the_console_is_off_unless_asked_for() -> None:
    assert Settings.from_env({}).console_listen == ""


def test_a_console_without_mtls_or_the_dev_login_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="PDP_CONSOLE_LISTEN needs PDP_TLS_CLIENT_CA_FILE"):
        Settings.from_env({"PDP_CONSOLE_LISTEN": "127.0.0.1:8081"})


@pytest.mark.parametrize("listen", ["127.0.0.1:8081", "localhost:8081", "[::1]:8081"])
def test_the_dev_login_is_honoured_on_loopback(listen: str) -> None:
    settings = Settings.from_env({"PDP_CONSOLE_LISTEN": listen, "PDP_CONSOLE_DEV_LOGIN": "1"})
    assert settings.console_dev_login_honoured


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "10.0.0.5:8081", "[::]:8081", "console.bank.example:8081"])
def test_the_dev_login_is_not_honoured_off_loopback(listen: str) -> None:
    with pytest.raises(ConfigError, match="PDP_CONSOLE_LISTEN needs"):
        Settings.from_env({"PDP_CONSOLE_LISTEN": listen, "PDP_CONSOLE_DEV_LOGIN": "1"})


def test_the_dev_login_is_not_honoured_under_tls(tmp_path: Path) -> None:
    for name in ("cert", "key"):
        (tmp_path / name).write_text("x")
    env = {"PDP_TLS_CERT_FILE": str(tmp_path / "cert"), "PDP_TLS_KEY_FILE": str(tmp_path / "key")}
    with pytest.raises(ConfigError, match="PDP_CONSOLE_LISTEN needs"):
        Settings.from_env({**env, "PDP_CONSOLE_LISTEN": "127.0.0.1:8081", "PDP_CONSOLE_DEV_LOGIN": "1"})
    (tmp_path / "ca").write_text("x")
    mtls = Settings.from_env({**env, "PDP_TLS_CLIENT_CA_FILE": str(tmp_path / "ca"), "PDP_CONSOLE_LISTEN": "[::1]:0"})
    assert mtls.console_listen == "[::1]:0" and not mtls.console_dev_login_honoured


def test_the_dev_login_switch_is_a_boolean() -> None:
    with pytest.raises(ConfigError, match="PDP_CONSOLE_DEV_LOGIN: 'maybe' is not a boolean"):
        Settings.from_env({"PDP_CONSOLE_DEV_LOGIN": "maybe"})
