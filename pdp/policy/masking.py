"""Policy-driven masking: the bundle decides which input fields a decision record must not carry.

Like OPA's ``system.log.mask``, but evaluated by the PDP before it signs, in the same evaluation
as the decision: the rule at ``PDP_MASK_PATH`` (``pdp/mask/answer`` in this project's bundle,
``rego/pdp/mask/``) answers the decision and ``hide: {"mask": [JSON pointer...], "erase": [...]}``
for each input (``pdp/mask/answers`` for each of ``input.requests``). The pointers are added to
the static ``PDP_MASK_POINTERS`` / ``PDP_ERASE_POINTERS``; the record lists what was masked and erased.

Fail closed: when the masking rule cannot be evaluated or answers something else than pointers,
no record is written that might carry what the policy wanted hidden, and the decision is a DENY
(``pdp.opa_error`` / ``pdp.policy_malformed``). A bundle without the rule (undefined) masks only
the static pointers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from pdp.errors import PolicyMalformed, PolicyUndefined
from pdp.opa import OpaAnswer, OpaClient

log = logging.getLogger(__name__)


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
    """Reads the masks from the answer the decider got: with masking on, the decider queries the
    bundle's combined rule (``PDP_MASK_PATH``, ``pdp/mask/answer``: ``{"decision": ..., "hide":
    {"mask": [...], "erase": [...]}}``; ``pdp/mask/answers`` for a batch), so the decision and its
    masks come from one evaluation.

    A bundle without the combined rule (it answers undefined) is asked again on its plain decision
    rule: it works, with the static pointers only and one warning, at the cost of that second query.

    Args:
        opa_url: the OPA serving the live bundle.
        path: the combined rule (for messages).
        decision_path, batch_path: the plain decision rules (the fallback).
    """

    def __init__(self, *, opa_url: str, path: str, decision_path: str, batch_path: str) -> None:
        self.path = path
        self._plain = OpaClient(opa_url, decision_path, batch_path=batch_path)
        self._warned = False

    def split(
        self, answers: list[OpaAnswer], inputs: Sequence[dict[str, Any]], *, timeout_s: float
    ) -> tuple[list[OpaAnswer], list[Pointers]]:
        """The decision answers (as if the plain decision rule had been queried) and the masks for each.

        Raises:
            NoVerdict: the fallback query failed, or no rule answered (no bundle).
            PolicyMalformed: the combined answer is not ``{decision, hide}`` or ``hide`` is not pointers.
        """
        if answers and not any(a.defined for a in answers):
            return self._fallback(inputs, timeout_s=timeout_s)
        out, hide = [], []
        for a in answers:
            doc = a.result
            if not isinstance(doc, dict) or "decision" not in doc:
                raise PolicyMalformed(f"{self.path} is not an object with the decision and what to hide")
            out.append(dataclasses.replace(a, result=doc["decision"]))
            hide.append(self._read(doc.get("hide")))
        return out, hide

    def _fallback(
        self, inputs: Sequence[dict[str, Any]], *, timeout_s: float
    ) -> tuple[list[OpaAnswer], list[Pointers]]:
        if len(inputs) == 1:
            plain = [self._plain.query(inputs[0], timeout_s=timeout_s)]
        else:
            plain = self._plain.query_batch(list(inputs), timeout_s=timeout_s)
        if not any(a.defined for a in plain):
            raise PolicyUndefined("the decision document is undefined (is the bundle loaded?)")
        if not self._warned:
            self._warned = True
            log.warning("the bundle has no %s rule: records are masked by the static pointers only", self.path)
        return plain, [NONE] * len(plain)

    def _read(self, doc: Any) -> Pointers:
        if not isinstance(doc, dict):
            raise PolicyMalformed(f"{self.path}.hide is a {type(doc).__name__}, not {{mask, erase}}")
        out: dict[str, tuple[str, ...]] = {}
        for key in ("mask", "erase"):
            value = doc.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and p.startswith("/") for p in value):
                raise PolicyMalformed(f"{self.path}.hide.{key} is not a list of JSON pointers")
            out[key] = tuple(sorted(value))
        return Pointers(**out)

    def close(self) -> None:
        self._plain.close()
