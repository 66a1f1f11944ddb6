from __future__ import annotations

import copy
import hashlib
from typing import Any

from google.protobuf import json_format

from pdp.digest import action_digest, request_digest
from pdp.v1 import decision_pb2 as pb

BASE: dict[str, Any] = {
    "agent": {"id": "payments-agent"},
    "action": {
        "tool": "payments.transfer",
        "operation": "execute",
        "arguments": {"amount": 5000.0, "currency": "USD", "to": {"iban": "DE89370400440532013000"}},
        "destination": {"address": ""},
    },
    "resource": {"type": "account", "id": "ACC-1"},
    "asserted": {"destination": {"kind": ""}},
}


def test_matches_the_documented_recipe() -> None:
    # The canonical bytes written out by hand, as a PEP in another language would build them.
    canonical = (
        '{"agent":"payments-agent","arguments":{"amount":5000,"currency":"USD",'
        '"to":{"iban":"DE89370400440532013000"}},"destination":{"address":"","kind":""},'
        '"operation":"execute","resource":{"id":"ACC-1","type":"account"},"tool":"payments.transfer"}'
    )
    assert action_digest(BASE) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def test_key_order_does_not_matter() -> None:
    reordered = copy.deepcopy(BASE)
    reordered["action"]["arguments"] = {"to": {"iban": "DE89370400440532013000"}, "currency": "USD", "amount": 5000}
    assert action_digest(reordered) == action_digest(BASE)


def test_every_part_of_the_action_changes_the_digest() -> None:
    seen = {action_digest(BASE)}
    for path, value in [
        (("agent", "id"), "support-bot"),
        (("action", "tool"), "payments.refund"),
        (("action", "operation"), "read"),
        (("action", "arguments"), {"amount": 5001.0, "currency": "USD"}),
        (("resource", "id"), "ACC-2"),
        (("resource", "type"), "ledger"),
    ]:
        changed = copy.deepcopy(BASE)
        changed[path[0]][path[1]] = value
        seen.add(action_digest(changed))
    changed = copy.deepcopy(BASE)
    changed["action"]["destination"] = {"address": "evil.example"}
    seen.add(action_digest(changed))
    changed = copy.deepcopy(BASE)
    changed["asserted"]["destination"] = {"kind": "external"}  # the recipe keeps the kind (stable for PEPs)
    seen.add(action_digest(changed))
    assert len(seen) == 9


def test_request_digest_matches_the_documented_recipe() -> None:
    request = json_format.ParseDict(
        {
            "requestId": "r-1",
            "context": {
                "agent": {"id": "a"},
                "action": {"tool": "t", "arguments": {"n": 1.0}},
                "risk": {"score": 18.0},
                "principalToken": "tok",
            },
        },
        pb.DecideRequest(),
    )
    # proto3 JSON mapping (camelCase, defaults omitted), RFC 8785, SHA-256: by hand, as another language would.
    canonical = (
        '{"context":{"action":{"arguments":{"n":1},"tool":"t"},"agent":{"id":"a"},'
        '"principalToken":"tok","risk":{"score":18}},"requestId":"r-1"}'
    )
    assert request_digest(request) == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    request.context.principal_token = "other"
    assert request_digest(request) != "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
