"""The committed stubs are exactly what `make protos` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-Iprotos",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--plugin=protoc-gen-mypy={venv_bin / 'protoc-gen-mypy'}", f"--mypy_out={tmp_path}",
            f"--plugin=protoc-gen-mypy_grpc={venv_bin / 'protoc-gen-mypy_grpc'}", f"--mypy_grpc_out={tmp_path}",
            *protos,
        ],
        cwd=ROOT, check=True,
    )  # fmt: skip
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert fresh, "protoc generated nothing"
    stale = [str(rel) for rel, data in fresh.items() if (ROOT / rel).read_bytes() != data]
    assert not stale, f"stubs differ from protos/ (run `make protos`): {stale}"
