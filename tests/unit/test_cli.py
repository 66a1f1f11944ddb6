"""pdp/cli/: command groups registered from one list; errors as one line; no environment writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pdp import cli
from pdp.config import Settings
from pdp.errors import ConfigError, LedgerCorrupt


def test_every_command_group_is_registered_from_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert len(cli.COMMANDS) >= 5
    for command in ("serve", "dev", "decide", "keys", "audit"):
        assert command in out


def test_pdp_dev_leaves_the_environment_as_it_found_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDP_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.delenv("PDP_LOG_DIR", raising=False)
    before = dict(os.environ)
    assert cli.main(["dev", "--bundle", str(tmp_path)]) == 2  # not a bundle: stops before starting anything
    assert "is not a bundle directory" in capsys.readouterr().err
    assert dict(os.environ) == before


def test_an_error_is_one_line_with_what_to_do() -> None:
    line = cli.one_line("serve", LedgerCorrupt("segment-000000.log offset 10: a frame's CRC does not match"))
    assert line.startswith("pdp serve: segment-000000.log offset 10")
    assert "pdp audit verify" in line and "\n" not in line
    assert cli.one_line("serve", ConfigError("PDP_LISTEN: bad")).startswith(
        "pdp serve: configuration error: PDP_LISTEN"
    )


def test_keys_dir_defaults_to_pdp_key_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PDP_KEY_DIR", str(tmp_path / "keys"))
    assert cli.main(["keys", "generate"]) == 0
    assert (tmp_path / "keys" / "jwks.json").exists()
    assert cli.main(["keys", "jwks"]) == 0
    assert '"kty": "OKP"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["decide", "req.json"], ["agents", "list"], ["approvals", "list"], ["approvals", "show", "esc-1"]]
)
def test_the_client_commands_ask_pdp_addr_else_the_default_listen_address(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PDP_ADDR", raising=False)
    assert cli._parser().parse_args(argv).addr == Settings.listen == "127.0.0.1:50051"
    monkeypatch.setenv("PDP_ADDR", "pdp.example:6000")
    assert cli._parser().parse_args(argv).addr == "pdp.example:6000"
