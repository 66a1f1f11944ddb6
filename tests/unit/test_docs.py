"""README.md and docs/: every relative link resolves, and the configuration table is Settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pdp.config import Settings
from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc: Path) -> None:
    links = [link for link in LINK.findall(doc.read_text()) if not re.match(r"^[a-z]+:", link)]
    for link in links:
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve() if target else doc
        assert path.exists(), f"{doc.name}: {link} does not exist"
        if anchor:
            assert anchor in anchors(path), f"{doc.name}: no heading for #{anchor} in {path.name}"


def test_readme_is_what_a_newcomer_needs() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def config_table() -> dict[str, str]:
    """variable → the default column of docs/configuration.md's table."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    return dict(re.findall(r"^\| `(PDP_[A-Z_]+)` \| ([^|]+) \|", text, re.MULTILINE))


def test_the_configuration_table_lists_every_variable_settings_reads() -> None:
    read = set(re.findall(r'"(PDP_[A-Z_]+)"', (ROOT / "pdp" / "config.py").read_text()))
    table = config_table()
    assert set(table) == read
    assert len(table) == len(dataclasses.fields(Settings))  # one variable per setting


def test_every_documented_default_is_the_default() -> None:
    checked = 0
    for variable, cell in config_table().items():
        literal = re.fullmatch(r"`([^`]+)`", cell.strip())
        if literal is None:  # no value of its own by default
            assert cell.startswith(("unset", "required", "`opa` on `PATH`")), variable
            continue
        assert Settings.from_env({variable: literal[1]}) == Settings(), f"{variable}'s documented default"
        checked += 1
    assert checked == 35


TEST_REF = re.compile(r"^(?:(?P<file>(?:tests|rego)/[\w/]+\.(?:py|rego)|\w+\.py))?(?:::(?P<name>test_\w+))?$")


def test_the_threat_model_cites_tests_that_exist() -> None:
    """Each `file::test` (or `::test`, in the file named before it on the row) names a real test."""
    cited = 0
    for row in (ROOT / "docs" / "threat-model.md").read_text().splitlines():
        current: Path | None = None
        for token in re.findall(r"`([^`]+)`", row):
            m = TEST_REF.match(token)
            if not m or not (m["file"] or m["name"]):
                continue
            if m["file"]:
                found = [ROOT / m["file"]] if "/" in m["file"] else sorted((ROOT / "tests").rglob(m["file"]))
                assert len(found) == 1 and found[0].exists(), f"threat-model.md: {m['file']} is not one test file"
                current = found[0]
            if m["name"]:
                assert current is not None, f"threat-model.md: ::{m['name']} names no file before it"
                defined = re.search(rf"^(?:def |){m['name']}(?:\(| if )", current.read_text(), re.MULTILINE)
                assert defined, f"threat-model.md: {current.relative_to(ROOT)} has no {m['name']}"
                cited += 1
    assert cited >= 20, f"only {cited} tests cited: is the table's format still `file::test`?"
