"""Policy result → verdict, under the policy contract, failing closed.

The contract (``rego/README.md``): the decision document is an object with
``outcome`` ∈ {"allow", "deny", "require_approval"}, ``reasons`` (a list of objects with a
non-empty string ``code``, and optional ``message``, ``rule``, ``severity``) and
``obligations`` (a list of objects with a non-empty string ``type`` and optional object
``params``), and optionally ``facts`` (an object: the looked-up values the decision rested on,
copied into the signed record) and ``budgets`` (budget claims, see :class:`BudgetClaim`). Anything
else is :class:`~pdp.errors.PolicyMalformed`: a verdict the PDP cannot
read in full is not a verdict, because dropping an obligation or a reason would fail open.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterable
from typing import Any

from pdp.errors import NoVerdict, PolicyMalformed, PolicyUndefined


class Outcome(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


@dataclasses.dataclass(frozen=True)
class Reason:
    code: str
    message: str = ""
    rule: str = ""
    severity: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "rule": self.rule, "severity": self.severity}


@dataclasses.dataclass(frozen=True)
class Obligation:
    type: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "params": self.params}


_WINDOW = re.compile(r"^([1-9][0-9]{0,6})(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> int | None:
    """A duration like ``90s``, ``15m``, ``1h``, ``24h``, ``7d`` in seconds (None: not one)."""
    m = _WINDOW.match(text)
    return int(m.group(1)) * _UNIT_S[m.group(2)] if m else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class BudgetClaim:
    """What the policy says an allowed action uses: ``amount`` of ``budget`` for ``key``, at most
    ``limit`` in any sliding ``window`` (``"90s"``, ``"15m"``, ``"1h"``, ``"24h"``, ``"7d"``).

    Amounts and limits are integers in minor units (cents) or calls (rate limits: amount 1).
    ``ceiling`` (≤ ``limit``), when the policy sets it, is the most this allow may bring the counter
    to: a review threshold the usage it saw stayed under (rego/pdp/budgets: ``reserved``).
    """

    budget: str
    key: str
    amount: int
    limit: int
    window: str
    ceiling: int | None = None

    @property
    def cap(self) -> int:
        """What the reservation may bring the counter to: the ceiling, else the limit."""
        return self.limit if self.ceiling is None else self.ceiling

    @property
    def window_s(self) -> int:
        """The window in seconds."""
        return duration_s(self.window) or 0  # checked when read: never 0

    @property
    def counter(self) -> str:
        """The shared store's key: one counter per budget and key."""
        return f"{self.budget}:{self.key}"

    def to_dict(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        if self.ceiling is None:
            del doc["ceiling"]
        return doc


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    """The PDP's answer. ``indeterminate`` verdicts are always DENY."""

    outcome: Outcome
    reasons: tuple[Reason, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    indeterminate: bool = False
    error_code: str = ""
    budgets: tuple[BudgetClaim, ...] = ()
    facts: dict[str, Any] = dataclasses.field(default_factory=dict)  # the looked-up values it rested on

    def __post_init__(self) -> None:
        if self.indeterminate and self.outcome is not Outcome.DENY:
            raise ValueError("an indeterminate verdict must be DENY")

    def to_dict(self) -> dict[str, Any]:
        """The decision document this verdict reads as (the policy contract's shape)."""
        doc: dict[str, Any] = {
            "outcome": self.outcome.value,
            "reasons": [r.to_dict() for r in self.reasons],
            "obligations": [o.to_dict() for o in self.obligations],
            "facts": self.facts,
        }
        if self.budgets:
            doc["budgets"] = [b.to_dict() for b in self.budgets]
        return doc


def interpret(result: Any, *, defined: bool = True) -> Verdict:
    """Reads a decision document.

    Args:
        result: the document OPA returned.
        defined: False when OPA returned no document at all.

    Raises:
        PolicyUndefined: there is no document.
        PolicyMalformed: the document breaks the contract; the message says where.
    """
    if not defined:
        raise PolicyUndefined("the decision document is undefined (is the bundle loaded?)")
    if not isinstance(result, dict):
        raise PolicyMalformed(f"decision is a {type(result).__name__}, not an object")
    try:
        outcome = Outcome(result.get("outcome"))
    except ValueError:
        raise PolicyMalformed(f"outcome {result.get('outcome')!r} is not allow, deny or require_approval") from None
    reasons = tuple(_reason(r, i) for i, r in enumerate(_list(result, "reasons")))
    if not reasons:
        # Every answer says why (the grant, the denial, the pending approval); one that does not
        # is a policy defect an operator must see, not an ALLOW nobody can explain.
        raise PolicyMalformed(f"a {outcome.value} decision without any reason")
    facts = result.get("facts", {})
    if not isinstance(facts, dict):
        raise PolicyMalformed(f"facts is a {type(facts).__name__}, not an object")
    return Verdict(
        outcome=outcome,
        reasons=reasons,
        obligations=tuple(_obligation(o, i) for i, o in enumerate(_list(result, "obligations"))),
        budgets=tuple(_budget(b, i) for i, b in enumerate(_list(result, "budgets"))),
        facts=facts,
    )


# The rules of the PDP's own answers, not the policy's: the kill switch (before the policy runs), a
# budget reservation that did not fit and an approval already used (after it). A candidate policy
# has nothing to say about them: the shadow and replay leave them out.
RULE_SUSPENSIONS = "pdp.suspensions"
RULE_BUDGETS = "pdp.budgets"
RULE_APPROVALS = "pdp.approvals"
_PDP_RULES = frozenset({RULE_SUSPENSIONS, RULE_BUDGETS, RULE_APPROVALS})


def made_by_pdp(rules: Iterable[str]) -> bool:
    """Whether the PDP itself (kill switch, budget reservation, single-use approval) gave the answer
    whose reasons name these ``rules``."""
    return not _PDP_RULES.isdisjoint(rules)


def fail_closed(error: NoVerdict) -> Verdict:
    """The verdict when no policy verdict was reached: DENY, indeterminate, with why."""
    return Verdict(
        outcome=Outcome.DENY,
        reasons=(Reason(code=error.error_code, message=str(error), rule="pdp.fail_closed", severity="high"),),
        indeterminate=True,
        error_code=error.error_code,
    )


def _list(result: dict[str, Any], key: str) -> list[Any]:
    value = result.get(key, [])
    if not isinstance(value, list):
        raise PolicyMalformed(f"{key} is a {type(value).__name__}, not a list")
    return value


def _reason(r: Any, i: int) -> Reason:
    if not isinstance(r, dict) or not isinstance(r.get("code"), str) or not r["code"]:
        raise PolicyMalformed(f"reasons[{i}] is not an object with a non-empty string code")
    fields = {k: r.get(k, "") for k in ("message", "rule", "severity")}
    for k, v in fields.items():
        if not isinstance(v, str):
            raise PolicyMalformed(f"reasons[{i}].{k} is not a string")
    return Reason(code=r["code"], **fields)


def _obligation(o: Any, i: int) -> Obligation:
    if not isinstance(o, dict) or not isinstance(o.get("type"), str) or not o["type"]:
        raise PolicyMalformed(f"obligations[{i}] is not an object with a non-empty string type")
    params = o.get("params", {})
    if not isinstance(params, dict):
        raise PolicyMalformed(f"obligations[{i}].params is not an object")
    return Obligation(type=o["type"], params=params)


def _budget(b: Any, i: int) -> BudgetClaim:
    if not isinstance(b, dict):
        raise PolicyMalformed(f"budgets[{i}] is not an object")
    for name in ("budget", "key", "window"):
        if not isinstance(b.get(name), str) or not b[name]:
            raise PolicyMalformed(f"budgets[{i}].{name} is not a non-empty string")
    for name in ("amount", "limit", *(["ceiling"] if "ceiling" in b else [])):
        value = b.get(name)
        # JSON numbers: 25000 and 25000.0 are the same integer; 0.5 and True are not amounts.
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < 0:
            raise PolicyMalformed(f"budgets[{i}].{name} is not a non-negative integer")
    if duration_s(b["window"]) is None:
        raise PolicyMalformed(f"budgets[{i}].window {b['window']!r} is not a duration like 90s, 15m, 1h, 24h or 7d")
    ceiling = int(b["ceiling"]) if "ceiling" in b else None
    if ceiling is not None and ceiling > b["limit"]:
        raise PolicyMalformed(f"budgets[{i}].ceiling {ceiling} is above its limit {int(b['limit'])}")
    return BudgetClaim(
        budget=b["budget"],
        key=b["key"],
        amount=int(b["amount"]),
        limit=int(b["limit"]),
        window=b["window"],
        ceiling=ceiling,
    )
