from __future__ import annotations

from typing import Any

import pytest

from pdp.errors import OpaTimeout, PolicyMalformed, PolicyUndefined
from pdp.verdict import Obligation, Outcome, Reason, Verdict, fail_closed, interpret


def test_reads_a_well_formed_decision() -> None:
    v = interpret(
        {
            "outcome": "allow",
            "reasons": [{"code": "tool.granted", "message": "ok", "rule": "r", "severity": "low"}],
            "obligations": [{"type": "redact", "params": {"fields": ["ssn"]}}, {"type": "audit"}],
            "extra": "ignored",
        }
    )
    assert v == Verdict(
        outcome=Outcome.ALLOW,
        reasons=(Reason("tool.granted", "ok", "r", "low"),),
        obligations=(Obligation("redact", {"fields": ["ssn"]}), Obligation("audit", {})),
    )
    assert not v.indeterminate


def test_undefined_is_no_verdict() -> None:
    with pytest.raises(PolicyUndefined):
        interpret(None, defined=False)


@pytest.mark.parametrize(
    "result",
    [
        None,
        "allow",
        True,
        [],
        {},
        {"outcome": "ALLOW"},
        {"outcome": "permit"},
        {"outcome": "allow"},
        {"outcome": "allow", "reasons": []},
        {"outcome": "deny", "reasons": []},
        {"outcome": "allow", "reasons": "fine"},
        {"outcome": "allow", "reasons": [{"message": "no code"}]},
        {"outcome": "allow", "reasons": [{"code": ""}]},
        {"outcome": "allow", "reasons": [{"code": "c", "severity": 3}]},
        {"outcome": "allow", "reasons": [{"code": "c"}], "obligations": {"type": "redact"}},
        {"outcome": "allow", "reasons": [{"code": "c"}], "obligations": [{"params": {}}]},
        {"outcome": "allow", "reasons": [{"code": "c"}], "obligations": [{"type": "redact", "params": ["ssn"]}]},
        {"outcome": "allow", "reasons": [{"code": "c"}], "facts": ["catalog-1"]},
    ],
)
def test_anything_off_contract_is_malformed(result: Any) -> None:
    # An ALLOW whose obligations cannot be read in full must not become an ALLOW without them.
    with pytest.raises(PolicyMalformed):
        interpret(result)


def test_fail_closed_is_an_indeterminate_deny() -> None:
    v = fail_closed(OpaTimeout("too slow"))
    assert v.outcome is Outcome.DENY
    assert v.indeterminate
    assert v.error_code == "pdp.opa_timeout"
    assert v.reasons[0].code == "pdp.opa_timeout"


def test_an_indeterminate_allow_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="must be DENY"):
        Verdict(outcome=Outcome.ALLOW, indeterminate=True, error_code="x")


def test_facts_pass_through_to_the_record_and_default_to_empty() -> None:
    facts = {"catalog_revision": "cat-7", "resource": {"classification": "secret", "catalogued": True}}
    v = interpret({"outcome": "deny", "reasons": [{"code": "c"}], "facts": facts})
    assert v.facts == facts and v.to_dict()["facts"] == facts
    assert interpret({"outcome": "deny", "reasons": [{"code": "c"}]}).to_dict()["facts"] == {}
