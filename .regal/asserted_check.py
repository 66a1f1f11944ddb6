#!/usr/bin/env python3
"""Fails when a rule that can allow or relax a decision reads asserted data.

The trust model (docs/trust-model.md) lets the policy use what the caller merely asserts
(``input.asserted``) only to make a decision stricter. This check reads the bundle's rules as
``opa parse --format json`` ASTs and reports, with the chain of rules that leads there:

1. every rule named ``allow`` (in any package) that reads ``input.asserted``, directly or
   through any rule or function it uses, transitively within the bundle;
2. every negated expression (``not ...``) and every ``every`` domain, in a rule named ``deny``
   or ``escalate`` or in any rule those use, that reads ``input.asserted`` directly or
   through a rule or function that does: a negated asserted fact relaxes (absent, the rule
   fires; asserted, it does not).

"Reads input.asserted" is decided conservatively: a reference ``input.asserted...``, ``input``
as a whole (``object.get(input, ...)``, ``with input as``) and ``input[x]`` with a non-constant
key all count. What it does not see: a value read from input.asserted into a variable and
negated in another expression of the same body (``v := trust.asserted(...); not v in list``):
that form fires when nothing was asserted (the default value is what is compared), which the
trust model accepts as "unknown = most restrictive". Usage:

    asserted_check.py [--opa PATH] BUNDLE_DIR

Exit status 0 when clean, 1 with one line per finding, 2 on usage or parse errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

ALLOW_NAMES = frozenset({"allow"})
STRICT_NAMES = frozenset({"deny", "escalate"})


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule definition: where it is, its name, and its AST."""

    key: tuple[str, ...]
    file: str
    row: int
    ast: dict[str, Any]


def _nodes(node: Any, *, skip_ref_heads: bool = False) -> Iterator[dict[str, Any]]:
    """Every object anywhere under ``node``, ``node`` included (of a ref, optionally not its head)."""
    if isinstance(node, dict):
        yield node
        children: Any = node.values()
        if skip_ref_heads and node.get("type") == "ref" and isinstance(node.get("value"), list):
            children = node["value"][1:]
        for value in children:
            yield from _nodes(value, skip_ref_heads=skip_ref_heads)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value, skip_ref_heads=skip_ref_heads)


def _terms(node: Any) -> Iterator[dict[str, Any]]:
    """Every term (``{"type", "value"}``) under ``node``; of a ref, the ref and its subscripts."""
    return (n for n in _nodes(node, skip_ref_heads=True) if "type" in n and "value" in n)


def _exprs(node: Any) -> Iterator[dict[str, Any]]:
    """Every expression (``{"index", "terms"}``) anywhere under ``node``, nested bodies too."""
    return (n for n in _nodes(node) if "terms" in n and "index" in n)


def _everys(node: Any) -> Iterator[dict[str, Any]]:
    """Every ``every`` construct under ``node``."""
    return (n for n in _nodes(node) if "domain" in n and "body" in n)


class Bundle:
    """The bundle's rules, indexed by their full path under ``data``."""

    def __init__(self, root: pathlib.Path, opa: str) -> None:
        self.rules: list[Rule] = []
        self._imports: dict[str, dict[str, tuple[str, ...]]] = {}
        self._package: dict[str, tuple[str, ...]] = {}
        for path in sorted(root.rglob("*.rego")):
            if path.name.endswith("_test.rego"):
                continue
            out = subprocess.run(
                [opa, "parse", "--format", "json", "--json-include", "locations,-comments", str(path)],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                raise SystemExit(f"asserted_check: cannot parse {path}: {out.stderr.strip()}")
            module = json.loads(out.stdout)
            package = tuple(t["value"] for t in module["package"]["path"][1:])
            file = str(path)
            self._package[file] = package
            imports: dict[str, tuple[str, ...]] = {}
            for imp in module.get("imports") or []:
                ref = imp["path"]["value"]
                if ref[0]["value"] == "data":
                    target = tuple(t["value"] for t in ref[1:])
                    imports[imp.get("alias") or target[-1]] = target
            self._imports[file] = imports
            for rule in module.get("rules") or []:
                name = rule["head"]["name"] if rule["head"].get("name") else rule["head"]["ref"][0]["value"]
                row = rule.get("location", {}).get("row", 0)
                self.rules.append(Rule(key=(*package, name), file=file, row=row, ast=rule))
        self._names = {r.key for r in self.rules}
        self._deps = {id(r): self._dependencies(r.file, r.ast) for r in self.rules}
        self._tainted = self._taint()

    def _resolve(self, file: str, term: dict[str, Any]) -> set[tuple[str, ...]]:
        """The rule keys a term may refer to (a ref into data, an import, or a local rule)."""
        if term["type"] == "var":
            parts: list[dict[str, Any]] = [term]
        elif term["type"] == "ref":
            parts = term["value"]
        else:
            return set()
        head = parts[0]
        if head.get("type") != "var":
            return set()
        pattern: list[str | None]
        if head["value"] == "data":
            pattern = []
            rest = parts[1:]
        elif head["value"] in self._imports[file]:
            pattern = list(self._imports[file][head["value"]])
            rest = parts[1:]
        elif (*self._package[file], head["value"]) in self._names:
            pattern = [*self._package[file], head["value"]]
            rest = parts[1:]
        else:
            return set()
        for t in rest:
            pattern.append(t["value"] if t["type"] == "string" else None)
        return {key for key in self._names if _matches(key, pattern)}

    def _dependencies(self, file: str, ast: dict[str, Any]) -> set[tuple[str, ...]]:
        deps: set[tuple[str, ...]] = set()
        for term in _terms(ast):
            deps |= self._resolve(file, term)
        return deps

    def _taint(self) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
        """For each rule key that reads input.asserted, directly or not, the chain to the read."""
        tainted: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for r in self.rules:
            if reads_asserted(r.ast):
                tainted[r.key] = [r.key]
        changed = True
        while changed:
            changed = False
            for r in self.rules:
                if r.key in tainted:
                    continue
                for dep in sorted(self._deps[id(r)]):
                    if dep in tainted:
                        tainted[r.key] = [r.key, *tainted[dep]]
                        changed = True
                        break
        return tainted

    def closure(self, names: frozenset[str]) -> list[Rule]:
        """The rules named one of ``names`` and every rule they use, transitively."""
        keys = {r.key for r in self.rules if r.key[-1] in names}
        todo = list(keys)
        while todo:
            key = todo.pop()
            for r in self.rules:
                if r.key == key:
                    for dep in self._deps[id(r)] - keys:
                        keys.add(dep)
                        todo.append(dep)
        return [r for r in self.rules if r.key in keys]

    def expression_taint(self, file: str, node: Any) -> list[tuple[str, ...]] | None:
        """The chain by which ``node`` reads input.asserted, or None."""
        if reads_asserted(node):
            return [("input", "asserted")]
        for term in _terms(node):
            for key in sorted(self._resolve(file, term)):
                if key in self._tainted:
                    return self._tainted[key]
        return None

    def findings(self) -> list[str]:
        """Every violation of the two checks, one line each."""
        found: list[str] = []
        for r in self.closure(ALLOW_NAMES):
            if r.key in self._tainted:
                path = " -> ".join(".".join(k) for k in self._tainted[r.key])
                found.append(f"{r.file}:{r.row}: allow/relaxing rule {'.'.join(r.key)} reads input.asserted ({path})")
        for r in self.closure(STRICT_NAMES):
            for expr in _exprs(r.ast):
                if expr.get("negated"):
                    chain = self.expression_taint(r.file, expr["terms"])
                    if chain is not None:
                        row = expr.get("location", {}).get("row", r.row)
                        via = " -> ".join(".".join(k) for k in chain)
                        found.append(f"{r.file}:{row}: `not` over asserted data in {'.'.join(r.key)} ({via})")
            for every in _everys(r.ast):
                chain = self.expression_taint(r.file, every["domain"])
                if chain is not None:
                    via = " -> ".join(".".join(k) for k in chain)
                    found.append(f"{r.file}:{r.row}: `every` over asserted data in {'.'.join(r.key)} ({via})")
        return sorted(set(found))


def _matches(key: tuple[str, ...], pattern: list[str | None]) -> bool:
    """A rule key matches a ref pattern when one is a prefix of the other (None = any key)."""
    return all(p is None or p == k for k, p in zip(key, pattern, strict=False))


def reads_asserted(node: Any) -> bool:
    """Whether ``node`` contains a reference that may read input.asserted."""
    for term in _terms(node):
        if term["type"] == "var" and term["value"] == "input":
            return True
        if term["type"] == "ref":
            parts = term["value"]
            head = parts[0]
            is_input = head.get("type") == "var" and head.get("value") == "input"
            if is_input and (len(parts) == 1 or parts[1]["type"] != "string" or parts[1]["value"] == "asserted"):
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--opa", default="opa", help="the opa binary")
    parser.add_argument("bundle", type=pathlib.Path)
    args = parser.parse_args(argv)
    if not args.bundle.is_dir():
        print(f"asserted_check: {args.bundle} is not a directory", file=sys.stderr)
        return 2
    found = Bundle(args.bundle, args.opa).findings()
    for line in found:
        print(line)
    if found:
        print(f"asserted_check: {len(found)} rule(s) let asserted data allow or relax", file=sys.stderr)
        return 1
    print(f"asserted_check: no allow/relaxing rule reads input.asserted in {args.bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
