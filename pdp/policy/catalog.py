"""The policy catalog: every rule that yields a reason, from its METADATA, with its test coverage.

Read with OPA itself, never by parsing Rego here: ``opa parse --format json`` on each policy file
of the bundle (tests are skipped) gives each rule's annotations (``title``, ``description``,
``custom.code``, ``custom.severity``) and its source span; ``opa test --coverage --format json``
on the bundle gives the covered and uncovered lines, so a rule's coverage is the share of its
lines that the bundle's tests ran.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

from pdp.errors import PdpError

_PACKAGE_ROOT = ("pdp",)


class CatalogError(PdpError):
    """The bundle cannot be read (no such directory, OPA failed, or a rule lacks its code)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """One reason-yielding rule of the bundle."""

    code: str
    severity: str
    title: str
    description: str
    pack: str
    package: str
    rule: str
    file: str
    line: int
    coverage: float | None  # percent of the rule's lines the tests ran; None: no coverage data

    @property
    def anchor(self) -> str:
        return anchor(self.code)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "anchor": self.anchor}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Catalog:
    """The bundle's rules, ordered by pack and code."""

    bundle: str
    revision: str
    rules: tuple[Rule, ...]

    def anchors(self) -> dict[str, str]:
        """Reason code → the rule's anchor."""
        return {r.code: r.anchor for r in self.rules}

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "revision": self.revision, "rules": [r.to_dict() for r in self.rules]}

    def markdown(self) -> str:
        """The catalog for a policy owner to sign off."""
        lines = [
            f"# Policy catalog: `{self.bundle}` revision `{self.revision}`",
            "",
            f"{len(self.rules)} rules that yield a reason code, from their METADATA annotations; coverage is the",
            "share of each rule's lines run by the bundle's tests (`opa test --coverage`).",
            "",
            "| code | severity | pack | title | coverage |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| [`{r.code}`](#{r.anchor}) | {r.severity} | {r.pack} | {_cell(r.title)} | {_percent(r.coverage)} |"
            for r in self.rules
        ]
        for r in self.rules:
            lines += [
                "",
                f'<a id="{r.anchor}"></a>',
                f"## `{r.code}` — {r.title}",
                "",
                r.description.strip() or "(no description)",
                "",
                f"- severity: {r.severity}",
                f"- pack: {r.pack} (package `{r.package}`, rule `{r.rule}`, `{r.file}:{r.line}`)",
                f"- test coverage: {_percent(r.coverage)}",
            ]
        return "\n".join(lines) + "\n"


def anchor(code: str) -> str:
    """A reason code's anchor in the catalog (Markdown and HTML)."""
    return "rule-" + "".join(c if c.isalnum() else "-" for c in code)


def load(bundle: Path, *, opa_bin: str, coverage: bool = True) -> Catalog:
    """Reads every reason-yielding rule of a bundle directory.

    Raises:
        CatalogError: no bundle there, OPA failed on it, or a rule with a code lacks a title.
    """
    if not bundle.is_dir():
        raise CatalogError(f"{bundle} is not a bundle directory")
    lines = _coverage(bundle, opa_bin) if coverage else None
    rules = []
    for path in sorted(bundle.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        rules += _rules(
            path, _run(opa_bin, "parse", "--format", "json", "--json-include", "locations", str(path)), lines
        )
    seen: dict[str, Rule] = {}
    for r in rules:
        if r.code in seen:
            raise CatalogError(
                f"reason code {r.code} is yielded by {seen[r.code].file}:{seen[r.code].line} and {r.file}:{r.line}"
            )
        seen[r.code] = r
    return Catalog(
        bundle=str(bundle),
        revision=_revision(bundle),
        rules=tuple(sorted(rules, key=lambda r: (r.pack, r.code))),
    )


def _rules(path: Path, ast: dict[str, Any], lines: dict[str, tuple[set[int], set[int]]] | None) -> list[Rule]:
    package = ".".join(str(t["value"]) for t in ast["package"]["path"][1:])
    found = []
    for rule in ast.get("rules", []):
        for note in rule.get("annotations", []):
            custom = note.get("custom") or {}
            if "code" not in custom:
                continue
            if not note.get("title"):
                raise CatalogError(f"{path}: the rule with code {custom['code']} has no METADATA title")
            loc = rule["location"]
            span = range(loc["row"], loc["row"] + base64.b64decode(loc.get("text", "")).count(b"\n") + 1)
            found.append(
                Rule(
                    code=str(custom["code"]),
                    severity=str(custom.get("severity", "")),
                    title=str(note["title"]),
                    description=str(note.get("description", "")),
                    pack=_pack(package),
                    package=package,
                    rule=str(rule["head"].get("name") or rule["head"]["ref"][0]["value"]),
                    file=str(path),
                    line=int(loc["row"]),
                    coverage=_rule_coverage(lines.get(str(path)), span) if lines is not None else None,
                )
            )
    return found


def _pack(package: str) -> str:
    """``pdp.packs.fintech`` → fintech, ``pdp.baseline`` → baseline, ``pdp`` → decision."""
    parts = package.split(".")
    if tuple(parts[: len(_PACKAGE_ROOT)]) == _PACKAGE_ROOT:
        parts = parts[len(_PACKAGE_ROOT) :]
    if parts[:1] == ["packs"]:
        parts = parts[1:]
    return ".".join(parts) or "decision"


def _coverage(bundle: Path, opa_bin: str) -> dict[str, tuple[set[int], set[int]]]:
    """File → (covered lines, uncovered lines), from the bundle's own tests."""
    report = _run(opa_bin, "test", "--coverage", "--format", "json", str(bundle))
    files: dict[str, tuple[set[int], set[int]]] = {}
    for name, f in report.get("files", {}).items():
        files[name] = (_lines(f.get("covered", [])), _lines(f.get("not_covered", [])))
    return files


def _lines(ranges: list[dict[str, Any]]) -> set[int]:
    return {row for r in ranges for row in range(r["start"]["row"], r["end"]["row"] + 1)}


def _rule_coverage(lines: tuple[set[int], set[int]] | None, span: range) -> float | None:
    if lines is None:
        return 0.0  # no test touched the file
    covered, uncovered = (len(s.intersection(span)) for s in lines)
    return round(100 * covered / (covered + uncovered), 1) if covered + uncovered else None


def _revision(bundle: Path) -> str:
    try:
        return str(json.loads((bundle / ".manifest").read_text()).get("revision", ""))
    except (OSError, ValueError):
        return ""


def _run(opa_bin: str, *args: str) -> dict[str, Any]:
    try:
        done = subprocess.run([opa_bin, *args], capture_output=True, text=True, timeout=120, check=False)
    except OSError as e:
        raise CatalogError(f"cannot run {opa_bin}: {e}") from None
    if done.returncode != 0:
        raise CatalogError(f"opa {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}%"
