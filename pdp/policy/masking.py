"""Policy-driven masking: the bundle decides which input fields a decision record must not carry.

Like OPA's ``system.log.mask``, but evaluated by the PDP before it signs: the rule at
``PDP_MASK_PATH`` (``pdp/mask/pointers`` in this project's bundle, ``rego/pdp/mask/``) answers
``{"mask": [JSON pointer...], "erase": [JSON pointer...]}`` for each input, and its batch rule
(``pdp/mask/batch``) the same for each of ``input.requests``. They are added to the static
``PDP_MASK_POINTERS`` / ``PDP_ERASE_POINTERS``; the record lists what was masked and erased.

Fail closed: when the masking rule cannot be evaluated or answers something else than pointers,
no record is written that might carry what the policy wanted hidden, and the decision is a DENY
(``pdp.opa_error`` / ``pdp.policy_malformed``). A bundle without the rule (undefined) masks only
the static pointers.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

from pdp.errors import PolicyMalformed
from pdp.opa import OpaAnswer, OpaClient

MASK = "**masked**"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pointers:
    """What to hide of one input: JSON pointers to mask and to erase."""

    mask: tuple[str, ...] = ()
    erase: tuple[str, ...] = ()

    def __add__(self, other: Pointers) -> Pointers:
        return Pointers(
            mask=tuple(dict.fromkeys(self.mask + other.mask)), erase=tuple(dict.fromkeys(self.erase + other.erase))
        )


NONE = Pointers()


class PolicyMasks:
    """Asks the bundle which fields to hide, one query per decision (or per DecideBatch call).

    Args:
        opa_url: the OPA serving the live bundle.
        path: the masking rule (e.g. ``pdp/mask/pointers``).
        batch_path: its batch rule (e.g. ``pdp/mask/batch``).
    """

    def __init__(self, *, opa_url: str, path: str, batch_path: str) -> None:
        self._opa = OpaClient(opa_url, path, batch_path=batch_path)
        self.path = path

    def pointers(self, inputs: Sequence[dict[str, Any]], *, timeout_s: float) -> list[Pointers]:
        """The pointers for each input, in order.

        Raises:
            NoVerdict: OPA could not be asked (the caller fails closed).
            PolicyMalformed: the answer is not pointers.
        """
        if len(inputs) == 1:
            answers = [self._opa.query(inputs[0], timeout_s=timeout_s)]
        else:
            answers = self._opa.query_batch(list(inputs), timeout_s=timeout_s)
        return [self._read(a) for a in answers]

    def _read(self, answer: OpaAnswer) -> Pointers:
        if not answer.defined:
            return NONE
        doc = answer.result
        if not isinstance(doc, dict):
            raise PolicyMalformed(f"{self.path} is a {type(doc).__name__}, not {{mask, erase}}")
        out: dict[str, tuple[str, ...]] = {}
        for key in ("mask", "erase"):
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
                raise PolicyMalformed(f"{self.path}.{key} is not a list of JSON pointers")
            out[key] = tuple(sorted(value))
        return Pointers(**out)

    def close(self) -> None:
        self._opa.close()


def redact(input_doc: dict[str, Any], pointers: Pointers) -> tuple[dict[str, Any], list[str], list[str]]:
    """A copy of the input with the pointers masked or erased (through objects and arrays), and
    the pointers that applied."""
    if not pointers.mask and not pointers.erase:
        return input_doc, [], []
    doc = copy.deepcopy(input_doc)
    masked = [p for p in pointers.mask if _apply(doc, p, erase=False)]
    # Later array elements first, so that erasing one does not move the next one named.
    erased = [p for p in sorted(pointers.erase, key=_order, reverse=True) if _apply(doc, p, erase=True)]
    return doc, masked, sorted(erased)


def _order(pointer: str) -> list[tuple[int, int | str]]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in pointer.split("/")]


def _apply(doc: Any, pointer: str, *, erase: bool) -> bool:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    if not tokens:
        return False
    node = doc
    for t in tokens[:-1]:
        node = _child(node, t)
        if node is None:
            return False
    last = tokens[-1]
    if isinstance(node, dict) and last in node:
        if erase:
            del node[last]
        else:
            node[last] = MASK
        return True
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        if erase:
            del node[int(last)]
        else:
            node[int(last)] = MASK
        return True
    return False


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        return node.get(token)
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    return None
