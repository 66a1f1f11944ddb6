"""Writes the Kubernetes JSON schemas kubeconform reads, offline, from the installed kubernetes-validate package.

kubernetes-validate (a dev dependency, pinned in constraints.txt) ships per-version schemas generated
from Kubernetes' OpenAPI documents: ``v<version>-local-strict/<kind>-<group>-<version>.json`` plus one
``_definitions.json``. Each file names itself ``https://kubernetes.io/api/...`` (``$id``) and refers to
``/api/_definitions.json#/$defs/...``, which a JSON Schema loader resolves to a web address. This copies
a version's directory with those references made relative to the file (``_definitions.json#...``) and
the ``$id`` dropped, so kubeconform resolves every reference on disk and never opens a connection.

Usage: ``python tools/kubeconform/schemas.py OUT_DIR VERSION...`` writes ``OUT_DIR/v<VERSION>-local-strict/``;
point kubeconform at it with ``-schema-location 'OUT_DIR/{{ .NormalizedKubernetesVersion }}-local{{
.StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json' -strict -kubernetes-version VERSION``.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

_REMOTE = "/api/_definitions.json#"


def _local(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _local(v) for k, v in node.items() if k != "$id"}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REMOTE):
            out["$ref"] = "_definitions.json#" + ref.removeprefix(_REMOTE)
        return out
    if isinstance(node, list):
        return [_local(v) for v in node]
    return node


def write(out_dir: Path, version: str) -> Path:
    """Writes the strict schemas of one Kubernetes version; returns their directory.

    Raises:
        FileNotFoundError: the installed kubernetes-validate has no schemas for ``version``.
    """
    name = f"v{version}-local-strict"
    source = resources.files("kubernetes_validate") / "kubernetes-json-schema" / name
    if not source.is_dir():
        raise FileNotFoundError(f"kubernetes-validate ships no {name}: pick a version it has, or upgrade it")
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.name.endswith(".json"):
            (target / entry.name).write_text(json.dumps(_local(json.loads(entry.read_text()))))
    return target


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for version in argv[1:]:
        print(write(Path(argv[0]), version))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
