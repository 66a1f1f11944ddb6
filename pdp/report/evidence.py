"""The auditor's evidence pack: the checkpoint, the public keys, and how to re-verify everything."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdp.report.source import Source

CHECKPOINT = "checkpoint.txt"
JWKS = "jwks.json"
NOTE_KEYS = "note-keys.txt"
README = "README.md"
SUMS = "SHA256SUMS"


def write(out: Path, *, source: Source, jwks_bytes: bytes, figures: Mapping[str, Any], command: str) -> Path:
    """Writes the pack into ``out/evidence`` and returns that directory.

    Args:
        out: the report's output directory (``report.json`` and ``report.html`` are already there).
        source: the verified log the report was computed from.
        jwks_bytes: the JWKS exactly as given.
        figures: the report's figures (for the period and the root in the README).
        command: the ``pdp report`` command line that produced the report.
    """
    pack = out / "evidence"
    pack.mkdir(parents=True, exist_ok=True)
    (pack / CHECKPOINT).write_bytes(source.note)
    (pack / JWKS).write_bytes(jwks_bytes)
    (pack / NOTE_KEYS).write_text("".join(k + "\n" for k in source.note_keys))
    (pack / README).write_text(_readme(source, figures, command))
    sums = [p for p in sorted(out.iterdir()) if p.is_file()] + [p for p in sorted(pack.iterdir()) if p.name != SUMS]
    (pack / SUMS).write_text(
        "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(out)}\n" for p in sums)
    )
    return pack


def _readme(source: Source, figures: Mapping[str, Any], command: str) -> str:
    cp = source.checkpoint
    period = figures["period"]
    return f"""# Evidence pack: decision log `{cp.origin}`

The governance report beside this directory (`report.json`, `report.html`) was computed from the
signed decision log of the PDP `{cp.origin}`, verified in full, up to this signed checkpoint:

| | |
|---|---|
| origin | `{cp.origin}` |
| tree size (entries covered) | {cp.size} |
| root hash (base64) | `{figures["provenance"]["checkpoint"]["root_base64"]}` |
| root hash (hex) | `{cp.root.hex()}` |
| period | {period["since"] or "beginning of the log"} to {period["until"] or "end of the log"} |
| decisions in the period | {figures["decisions"]["total"]} |

It was produced by:

```sh
{command}
```

## What is here

| file | what |
|---|---|
| `{CHECKPOINT}` | the signed checkpoint (a C2SP tlog checkpoint in a C2SP signed note), byte for byte as stored |
| `{JWKS}` | the public keys (JWKS, Ed25519 `OKP` keys) every record is signed with |
| `{NOTE_KEYS}` | the same keys as signed-note verifier keys, `<name>+<key hash>+<base64 key>` |
| `{SUMS}` | SHA-256 of the report files and of this pack (`sha256sum -c {SUMS}` from the report directory) |

The log directory itself (`segment-NNNNNN.log`, `checkpoints.log`) is delivered beside this pack.
Each segment holds framed entries: 4-byte big-endian length, the record (a compact JWS), 4-byte
big-endian CRC-32 of length and record. Entry `i` across the segments in order is leaf `i` of an
RFC 6962 Merkle tree (leaf = SHA-256(0x00 ‖ record), node = SHA-256(0x01 ‖ left ‖ right)).

## 1. Re-verify with the PDP's own tool

```sh
pdp audit verify LOG_DIR --jwks evidence/{JWKS}
```

It checks every frame, every record's signature and `log_index`, every outcome report's link to its
decision, every checkpoint's signature, and every checkpoint's root against the RFC 6962 root of the
first `size` verified entries. That last check is also the consistency check between checkpoints:
all of them are roots of prefixes of one verified sequence of entries, so each is a prefix of every
later one, which is what an RFC 6962 consistency proof between two of them would prove. Then
recompute the report and compare its figures:

```sh
pdp report LOG_DIR --jwks evidence/{JWKS} {_period_args(period)}--out /tmp/again
diff <(python3 -m json.tool report.json) <(python3 -m json.tool /tmp/again/report.json)
```

While the log has not grown past size {cp.size}, the two are identical; when it has, the new report
names a newer checkpoint, and `pdp audit verify` on the grown log shows this one is a prefix of it
(its root must be the root of the first {cp.size} entries). A running PDP also serves the RFC 6962
consistency proof between two sizes (`GetConsistencyProof`, auditor role).

## 2. Verify the checkpoint with Go's signed-note verifier

Go's reference implementation of signed notes is `golang.org/x/mod/sumdb/note`; the project's
`tools/notecheck` is a few lines around it (`make tools` builds `.bin/notecheck`):

```sh
notecheck $(cat evidence/{NOTE_KEYS}) < evidence/{CHECKPOINT}
```

It prints the checkpoint body (origin, size, base64 root) when a key signed it, and exits 1 otherwise.

## 3. Verify the records with any JOSE library

Each record is a JWS compact serialization, `alg` `EdDSA` (Ed25519), with `kid` and `typ`
(`pdp-decision+jws`, `pdp-outcome+jws`, ...). With Python's `jwcrypto`, reading the segments with the
standard library and recomputing the tree root:

```python
import hashlib, json, pathlib, struct
from jwcrypto import jwk, jws

keys = jwk.JWKSet.from_json(pathlib.Path("evidence/{JWKS}").read_text())
leaves = []
for seg in sorted(pathlib.Path("LOG_DIR").glob("segment-*.log")):
    data, pos = seg.read_bytes(), 0
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        record = data[pos + 4 : pos + 4 + n]
        pos += 8 + n
        token = jws.JWS()
        token.deserialize(record.decode())
        kid = json.loads(token.objects["protected"])["kid"]
        token.verify(keys.get_key(kid), alg="EdDSA")  # raises if the signature does not verify
        leaves.append(hashlib.sha256(b"\\x00" + record).digest())

def root(h):
    if len(h) == 1:
        return h[0]
    k = 1 << ((len(h) - 1).bit_length() - 1)
    return hashlib.sha256(b"\\x01" + root(h[:k]) + root(h[k:])).digest()

print(root(leaves[:{cp.size}]).hex())  # must print {cp.root.hex()}
```

In JavaScript, `jose`'s `compactVerify(record, createLocalJWKSet(jwks))` does the same per record.
"""


def _period_args(period: Mapping[str, Any]) -> str:
    args = ""
    if period["since"]:
        args += f"--since {period['since']} "
    if period["until"]:
        args += f"--until {period['until']} "
    return args
