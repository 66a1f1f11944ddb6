"""The OPA sidecar's start: a real OPA behind a launcher that misbehaves as the machine may make it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.errors import SidecarError
from pdp.sidecar import OpaSidecar, free_port
from tests.helpers import BUNDLE

pytestmark = pytest.mark.integration


def launcher(tmp_path: Path, opa_bin: str, *, aborts: int) -> str:
    """An ``opa`` that is killed by SIGABRT on its first ``aborts`` starts, then is the real one."""
    count = tmp_path / "starts"
    script = tmp_path / "opa"
    script.write_text(
        "#!/bin/sh\n"
        f'n=$(cat "{count}" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}"\n'
        f'[ "$n" -lt {aborts} ] && kill -ABRT $$\n'
        f'exec "{opa_bin}" "$@"\n'
    )
    script.chmod(0o755)
    return str(script)


def test_an_opa_killed_by_a_signal_while_starting_is_started_once_more(tmp_path: Path, opa_bin: str) -> None:
    sidecar = OpaSidecar(opa_bin=launcher(tmp_path, opa_bin, aborts=1), bundle=BUNDLE, addr=f"127.0.0.1:{free_port()}")
    sidecar.start()
    try:
        assert sidecar.healthy()
        assert (tmp_path / "starts").read_text().strip() == "2"
    finally:
        sidecar.stop()


def test_twice_killed_or_an_exit_status_is_an_error(tmp_path: Path, opa_bin: str) -> None:
    sidecar = OpaSidecar(opa_bin=launcher(tmp_path, opa_bin, aborts=2), bundle=BUNDLE, addr=f"127.0.0.1:{free_port()}")
    with pytest.raises(SidecarError, match="status -6"):
        sidecar.start()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.rego").write_text("package x\nthis is not rego\n")
    with pytest.raises(SidecarError, match="status 1"):
        OpaSidecar(opa_bin=opa_bin, bundle=broken, addr=f"127.0.0.1:{free_port()}").start()
