"""The batch rules (``pdp/decisions``, ``pdp/mask/answers``: what coalesced Decide calls and DecideBatch
query) evaluate each request once, as the single rules do: counted with OPA's profiler, which is
exact where timings are not. A rule written with two complementary bodies (``if outcome ==
"allow"`` / ``if outcome != "allow"``) once made OPA evaluate the whole decision twice for each
element of a batch, where the input is replaced with ``with``: double the OPA time of every
batched decision, unseen by any result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.policy import v2

EXAMPLES = sorted(p.stem for p in (v2.ROOT / "examples").glob("*.json"))


def evaluations(query: str, input_doc: Any, tmp_path: Path) -> int:
    """How many expressions OPA evaluated to answer ``query`` (its profile's total ``num_eval``)."""
    path = tmp_path / "input.json"
    path.write_text(json.dumps(input_doc))
    command = [v2.OPA, "eval", "--bundle", str(v2.REGO), "--ignore", "*_test.rego", "--input", str(path)]
    out = subprocess.run(
        [*command, "--profile", "--profile-limit", "100000", "--format", "json", query],
        capture_output=True,
        text=True,
        check=True,
    )
    return sum(p["num_eval"] for p in json.loads(out.stdout)["profile"])


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize(
    ("single", "batch"), [("pdp.decision", "pdp.decisions"), ("pdp.mask.answer", "pdp.mask.answers")]
)
def test_a_batch_evaluates_each_request_once(name: str, single: str, batch: str, tmp_path: Path) -> None:
    doc = v2.build(v2.example(name))
    alone = evaluations(f"data.{single}", doc, tmp_path)
    in_batch = evaluations(f"data.{batch}", {"requests": [doc, doc]}, tmp_path)
    assert in_batch <= 2 * alone + 10, f"{batch}: {in_batch} evaluations for two requests, {alone} for one alone"
