"""The AuthZEN Authorization API 1.0 on the PDP's HTTP face: real uvicorn, real OPA, real log."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import DNSName, UniformResourceIdentifier
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pdp import devissuer, keys
from pdp.authz import ROUTE_ROLES
from pdp.client import MemoryReplayCache, verify
from pdp.config import Settings
from pdp.errors import ConfigError
from pdp.http import authzen
from pdp.http.app import AuthzenApp
from pdp.records import unverified_claims
from pdp.server import create_server
from pdp.sidecar import OpaSidecar, free_port
from tests.helpers import ROOT, Pdp, dev_issuers, interop_answer, interop_cases, wait_for
from tests.integration.test_mtls import _issue, _pem_key

pytestmark = pytest.mark.integration

ECHO = ROOT / "tests/data/bundles/authzen-echo"
TODO = ROOT / "examples/authzen-todo"
SERVING = health_pb2.HealthCheckResponse.SERVING
INTEROP = interop_cases()


@dataclasses.dataclass
class Face:
    pdp: Pdp
    url: str
    home: Path
    session: requests.Session

    def post(self, path: str, body: Any, **kw: Any) -> requests.Response:
        return self.session.post(f"{self.url}{path}", json=body, timeout=10, **kw)

    def evaluate(self, body: Any, **kw: Any) -> dict[str, Any]:
        r = self.post("/access/v1/evaluation", body, **kw)
        assert r.status_code == 200, r.text
        doc: dict[str, Any] = r.json()
        return doc

    def audit(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pdp", "audit", "verify", str(self.home / "log"), "--jwks", str(self.home / "jwks")],
            capture_output=True,
            text=True,
            check=False,
        )


@pytest.fixture
def start_face(
    start_opa: Callable[..., OpaSidecar], start_pdp: Callable[..., Pdp], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Face]:
    """A PDP serving gRPC and AuthZEN in front of a real OPA serving ``bundle``."""

    def start(bundle: Path = ECHO, opa: OpaSidecar | None = None, ca: Path | None = None, **overrides: Any) -> Face:
        home = tmp_path_factory.mktemp("face")
        opa = opa or start_opa(bundle=bundle)
        pdp = start_pdp(opa.url, http_listen="127.0.0.1:0", key_dir=home / "keys", log_dir=home / "log", **overrides)
        assert pdp.server.http is not None
        session = requests.Session()
        url = f"http://127.0.0.1:{pdp.server.http.port}"
        if ca is not None:
            session.verify = str(ca)
            session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
            url = f"https://localhost:{pdp.server.http.port}"
        face = Face(pdp, url, home, session)
        (home / "jwks").write_text((home / "keys" / "jwks.json").read_text())
        return face

    return start


@pytest.fixture
def face(start_face: Callable[..., Face]) -> Face:
    return start_face()


def _ask(name: str = "read", **extra: Any) -> dict[str, Any]:
    """An evaluation of action ``name``; ``extra`` adds or replaces members."""
    return {
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": name},
        "resource": {"type": "document", "id": "doc-1"},
        **extra,
    }


def _with_tokens(evaluation: dict[str, Any]) -> dict[str, Any]:
    """``evaluation`` as a real PEP sends it: with the principal token, risk assertion and lineage
    attestations it obtained for what it asks (the dev issuers the PDP trusts standing in for the
    identity provider, the risk engine and the source system), where the default mapping reads them."""
    request = authzen.Mapping.default().to_request(evaluation)
    devissuer.forward_tokens(request, dev_issuers())
    tokens = request.context
    sent = copy.deepcopy(evaluation)
    sent["subject"].setdefault("properties", {})["token"] = tokens.principal_token
    if tokens.risk_assertion:
        sent.setdefault("context", {})["risk_assertion"] = tokens.risk_assertion
    if tokens.lineage_attestations:
        sent.setdefault("context", {})["lineage_attestations"] = list(tokens.lineage_attestations)
    return sent


def _echo(result: dict[str, Any]) -> dict[str, Any]:
    echoed: dict[str, Any] = json.loads(result["context"]["reasons"][0]["message"])
    return echoed


def test_every_mapped_field_reaches_the_policy_input(face: Face) -> None:
    ask = {
        "subject": {
            "type": "user",
            "id": "alice@example.com",
            "properties": {"agent_id": "support-bot", "agent_version": "1.4.1", "roles": ["teller"], "tenant": "eu"},
        },
        "action": {
            "name": "crm.update",
            "properties": {
                "operation": "write",
                "arguments": {"customer_id": "C-1", "fields": {"email": "a@b.example"}},
                "destination": {"kind": "external", "address": "mail.example"},
            },
        },
        "resource": {
            "type": "customer_record",
            "id": "C-1",
            "properties": {
                "owner": "crm-team",
                "classification": "confidential",
                "data_categories": ["pii"],
                "compartments": ["eu"],
                "ownerID": "someone",
            },
        },
        "context": {
            "environment": {"name": "production", "change_ref": "CHG-1", "region": "eu-west", "session_id": "s-1"},
            "risk": {"score": 42, "indicators": ["new_device"]},
            "purpose_of_use": "support",
            "ip": "10.0.0.1",
        },
    }
    result = face.evaluate(ask)
    echoed = _echo(result)
    assert result["decision"] is False
    # The question: what is asked (covered by the action digest).
    assert echoed["agent"] == {"id": "support-bot"}
    assert echoed["action"] == {
        "tool": "crm.update",
        "operation": "write",
        "arguments": {"customer_id": "C-1", "fields": {"email": "a@b.example"}},
        "destination": {"address": "mail.example"},
    }
    assert echoed["resource"] == {"type": "customer_record", "id": "C-1"}
    # Without tokens, all the subject and context say is the PEP's word: asserted, nothing verified.
    assert echoed["verified"] == {"lineage": []}
    asserted = echoed["asserted"]
    assert asserted["agent"] == {"version": "1.4.1", "owner": "", "model": ""}
    assert asserted["principal"] == {"id": "alice@example.com", "type": "user", "roles": ["teller"], "tenant": "eu"}
    assert asserted["destination"] == {"kind": "external"}
    assert asserted["resource"]["classification"] == "confidential"
    assert {k: asserted["resource"][k] for k in ("owner", "data_categories", "compartments")} == {
        "owner": "crm-team",
        "data_categories": ["pii"],
        "compartments": ["eu"],
    }
    assert asserted["environment"] == {
        "name": "production",
        "change_ref": "CHG-1",
        "region": "eu-west",
        "session_id": "s-1",
    }
    assert asserted["risk"] == {"score": 42, "indicators": ["new_device"]}
    assert asserted["purpose_of_use"] == "support"
    # What no rule placed elsewhere is kept for the policy, each member in one place.
    assert asserted["attributes"]["authzen"] == {
        "resource": {"properties": {"ownerID": "someone"}},
        "context": {"ip": "10.0.0.1"},
    }
    # The caller is the transport's, never the body's; with no mapping for it, the agent is "authzen".
    assert echoed["caller"]["peer"].startswith("ipv4:127.0.0.1:")
    assert echoed["caller"]["authenticated"] is False
    assert _echo(face.evaluate(_ask()))["agent"]["id"] == "authzen"


def test_tokens_the_pep_forwards_are_verified_and_stay_out_of_the_attributes(face: Face) -> None:
    ask = _with_tokens(
        _ask(
            subject={"type": "user", "id": "alice@example.com", "properties": {"roles": ["teller"], "tenant": "eu"}},
            context={
                "risk": {"score": 12, "indicators": ["known_device"]},
                "lineage": [{"source": "crm", "kind": "record", "quality": 0.9, "verified": True}],
            },
        )
    )
    assert ask["subject"]["properties"]["token"] and ask["context"]["risk_assertion"]
    result = face.evaluate(ask)
    echoed = _echo(result)
    principal = echoed["verified"]["principal"]
    assert (principal["id"], principal["issuer"], principal["roles"], principal["tenant"]) == (
        "alice@example.com",
        devissuer.ISSUERS["principal"],
        ["teller"],
        "eu",
    )
    risk, lineage = echoed["verified"]["risk"], echoed["verified"]["lineage"]
    assert (risk["score"], risk["issuer"]) == (12, devissuer.ISSUERS["risk"])
    assert [(e["source"], e["issuer"]) for e in lineage] == [("crm", devissuer.ISSUERS["lineage"])]
    # The tokens are mapped, not kept as attributes (nothing reaches the policy twice).
    assert "authzen" not in echoed["asserted"]["attributes"]
    trust = unverified_claims(result["context"]["record"].encode())["pdp"]["trust"]
    assert trust["principal"] == {"issuer": devissuer.ISSUERS["principal"], "id": "alice@example.com"}
    assert trust["rejected"] == []


def test_a_token_that_does_not_verify_leaves_the_subject_asserted(face: Face) -> None:
    forged = _with_tokens(_ask())
    header, body, _ = forged["subject"]["properties"]["token"].split(".")
    forged["subject"]["properties"]["token"] = f"{header}.{body}.{'A' * 86}"  # not the issuer's signature
    result = face.evaluate(forged)
    echoed = _echo(result)
    assert "principal" not in echoed["verified"]
    assert echoed["asserted"]["principal"]["id"] == "alice@example.com"
    trust = unverified_claims(result["context"]["record"].encode())["pdp"]["trust"]
    assert trust["principal"] is None
    assert [r["field"] for r in trust["rejected"]] == ["principal_token"]


def test_an_allow_is_true_with_a_record_a_pep_can_verify(face: Face) -> None:
    ask = _with_tokens(
        _ask(subject={"type": "user", "id": "alice@example.com", "properties": {"agent_id": "support-bot"}})
    )
    r = face.post("/access/v1/evaluation", ask, headers={"X-Request-ID": "rq-77"})
    assert r.status_code == 200
    assert r.headers["X-Request-ID"] == "rq-77"
    result = r.json()
    ctx = result["context"]
    assert result["decision"] is True
    assert ctx["outcome"] == "allow"
    assert ctx["reason_admin"].keys() == {"echo.allow"}
    assert "reason_user" not in ctx
    assert ctx["obligations"] == [{"type": "audit", "params": {"level": "standard"}}]
    assert ctx["policy"]["bundles"] == {"authzen-echo": "authzen-echo-1"} or ctx["policy"]["bundles"]
    # A PEP maps the request the same way and verifies the record before it acts.
    jwks = face.session.get(f"{face.url}/.well-known/jwks.json").json()
    action = authzen.Mapping.default().to_request(ask).context
    verified = verify(ctx["record"], jwks, action=action, replay=MemoryReplayCache())
    assert verified.claims["decision_id"] == ctx["decision_id"]
    assert verified.claims["pdp"]["outcome"] == "allow"


def test_require_approval_is_false_with_the_escalation(face: Face) -> None:
    result = face.evaluate(_ask("escalate"))
    ctx = result["context"]
    assert result["decision"] is False
    assert ctx["outcome"] == "require_approval"
    assert ctx["escalation"]["required"] == "approval"
    assert ctx["escalation"]["action_digest"].startswith("sha256:")
    assert ctx["escalation"]["reasons"] == ["echo.require_approval"]
    assert ctx["reason_user"]["403"].startswith("This needs an approval")


def test_a_deny_says_why_for_admins_and_users(face: Face) -> None:
    ctx = face.evaluate(_ask("delete"))["context"]
    assert ctx["outcome"] == "deny"
    assert "echo.deny" in ctx["reason_admin"]
    assert ctx["reason_user"] == {"403": "Denied by policy (echo.deny)"}


@pytest.mark.parametrize(
    ("semantic", "actions", "expected"),
    [
        (None, ["read", "delete", "read"], [True, False, True]),
        ("execute_all", ["delete", "read", "escalate"], [False, True, False]),
        ("deny_on_first_deny", ["read", "escalate", "read"], [True, False]),
        ("deny_on_first_deny", ["read", "read"], [True, True]),
        ("permit_on_first_permit", ["delete", "read", "delete"], [False, True]),
        ("permit_on_first_permit", ["delete", "escalate"], [False, False]),
    ],
)
def test_evaluations_semantics_and_short_circuits(
    face: Face, semantic: str | None, actions: list[str], expected: list[bool]
) -> None:
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "resource": {"type": "document", "id": "default"},
        "evaluations": [{"action": {"name": a}} for a in actions],
    }
    if semantic:
        body["options"] = {"evaluations_semantic": semantic}
    r = face.post("/access/v1/evaluations", body)
    assert r.status_code == 200, r.text
    results = r.json()["evaluations"]
    assert [e["decision"] for e in results] == expected
    cut = len(results) < len(actions)
    assert [e["context"].get("short_circuit") for e in results] == [None] * (len(results) - cut) + [semantic] * cut
    assert len({e["context"]["decision_id"] for e in results}) == len(results)
    assert all(e["context"]["record"] for e in results)
    # The records sit side by side in the log (execute_all: one policy evaluation, one group commit);
    # after a short-circuit's cut nothing was decided, so nothing was logged.
    indexes = [int(e["context"]["log_index"]) for e in results]
    assert indexes == list(range(indexes[0], indexes[0] + len(results)))
    done = face.audit()
    assert done.returncode == 0 and f"({len(results)} decisions, " in done.stdout, done.stdout


def test_evaluations_entries_override_the_defaults(face: Face) -> None:
    body = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": "read"},
        "resource": {"type": "document", "id": "default"},
        "context": {"purpose_of_use": "audit"},
        "evaluations": [
            {},
            {"resource": {"type": "folder", "id": "f-1"}},
            {"subject": {"type": "user", "id": "bob@example.com"}, "context": {}},
        ],
    }
    echoed = [_echo(e) for e in face.post("/access/v1/evaluations", body).json()["evaluations"]]
    said = [(e["asserted"]["principal"]["id"], e["resource"]["id"], e["asserted"]["purpose_of_use"]) for e in echoed]
    assert said == [
        ("alice@example.com", "default", "audit"),
        ("alice@example.com", "f-1", "audit"),
        ("bob@example.com", "default", ""),
    ]


def test_evaluations_without_entries_answer_as_one_evaluation(face: Face) -> None:
    r = face.post("/access/v1/evaluations", _ask())
    assert r.status_code == 200
    assert r.json()["decision"] is True
    assert "evaluations" not in r.json()


def test_every_authzen_decision_has_a_signed_record_the_audit_accepts(face: Face) -> None:
    face.evaluate(_ask())
    face.evaluate(_ask("escalate"))
    face.post("/access/v1/evaluations", {**_ask(), "evaluations": [{}, {"action": {"name": "x"}}, {}]})
    done = face.audit()
    assert done.returncode == 0, done.stderr
    assert "(5 decisions, 0 outcome reports)" in done.stdout


def test_metadata_and_jwks(face: Face) -> None:
    meta = face.session.get(f"{face.url}/.well-known/authzen-configuration").json()
    assert meta == {
        "policy_decision_point": face.url,
        "access_evaluation_endpoint": f"{face.url}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{face.url}/access/v1/evaluations",
        "access_request_endpoint": f"{face.url}/access/v1/access_requests",
        "jwks_uri": f"{face.url}/.well-known/jwks.json",
    }
    jwks = face.session.get(meta["jwks_uri"]).json()
    assert jwks == json.loads((face.home / "keys" / "jwks.json").read_text())


def test_metadata_names_the_configured_identifier(start_face: Callable[..., Face]) -> None:
    face = start_face(http_base_url="https://pdp.bank.example")
    meta = face.session.get(f"{face.url}/.well-known/authzen-configuration").json()
    assert meta["policy_decision_point"] == "https://pdp.bank.example"
    assert meta["access_evaluation_endpoint"] == "https://pdp.bank.example/access/v1/evaluation"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        (
            "/access/v1/evaluation",
            {"action": {"name": "read"}, "resource": {"type": "d", "id": "1"}},
            "subject: is required",
        ),
        ("/access/v1/evaluation", _ask(subject={"type": "user"}), "subject.id: is required"),
        ("/access/v1/evaluation", _ask(subject={"type": "user", "id": 7}), "subject.id: is required"),
        ("/access/v1/evaluation", _ask(resource={"type": "d"}), "resource.id: is required"),
        ("/access/v1/evaluation", _ask(action={"properties": {}}), "action.name: is required"),
        ("/access/v1/evaluation", _ask(context=[]), "context: must be an object"),
        (
            "/access/v1/evaluation",
            _ask(subject={"type": "user", "id": "a", "properties": {"roles": "admin"}}),
            "subject.properties.roles: must be a list of strings",
        ),
        (
            "/access/v1/evaluation",
            _ask(resource={"type": "d", "id": "1", "properties": {"classification": "ultra"}}),
            "resource.properties.classification: must be one of",
        ),
        ("/access/v1/evaluation", _ask(action={"name": "no spaces allowed"}), "action.name: must be 1-128 letters"),
        ("/access/v1/evaluation", _ask(context={"risk": {"score": 500}}), "context.risk.score: must be a number"),
        (
            "/access/v1/evaluation",
            _ask(subject={"type": "user", "id": "a", "properties": {"token": 7}}),
            "subject.properties.token: must be a string",
        ),
        (
            "/access/v1/evaluation",
            _ask(context={"lineage_attestations": "x.y.z"}),
            "context.lineage_attestations: must be a list of strings",
        ),
        ("/access/v1/evaluation", [], "request: must be a JSON object"),
        ("/access/v1/evaluations", {**_ask(), "evaluations": [{}, {"action": {}}]}, "evaluations[1].action.name"),
        (
            "/access/v1/evaluations",
            {**_ask(), "evaluations": [{}, {"action": {"name": "a b"}}]},
            "evaluations[1].action.name",
        ),
        ("/access/v1/evaluations", {**_ask(), "evaluations": {}}, "evaluations: must be an array"),
        (
            "/access/v1/evaluations",
            {**_ask(), "evaluations": [{}], "options": {"evaluations_semantic": "first"}},
            "options.evaluations_semantic: must be one of execute_all",
        ),
        ("/access/v1/evaluations", {**_ask(), "evaluations": [{}] * 65}, "evaluations: has 65 requests; PDP_MAX_BATCH"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(face: Face, path: str, body: Any, message: str) -> None:
    r = face.post(path, body, headers={"X-Request-ID": "bad-1"})
    assert r.status_code == 400
    assert r.text.startswith(message), r.text
    assert r.headers["X-Request-ID"] == "bad-1"


def test_size_depth_and_content_type_limits(start_face: Callable[..., Face]) -> None:
    face = start_face(max_request_bytes=4096, max_depth=4)
    big = _ask(context={"blob": "x" * 5000})
    r = face.post("/access/v1/evaluation", big)
    assert r.status_code == 413
    assert "PDP_MAX_REQUEST_BYTES" in r.text
    deep = _ask(action={"name": "read", "properties": {"arguments": {"a": {"b": {"c": {"d": {"e": 1}}}}}}})
    r = face.post("/access/v1/evaluation", deep)
    assert r.status_code == 400
    assert "nests deeper than" in r.text
    r = face.session.post(
        f"{face.url}/access/v1/evaluation", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.text.startswith("request: is not JSON")
    r = face.session.post(
        f"{face.url}/access/v1/evaluation", data=json.dumps(_ask()), headers={"Content-Type": "text/plain"}
    )
    assert r.status_code == 415
    wrong = face.session.get(f"{face.url}/access/v1/evaluation", headers={"X-Request-ID": "get-1"})
    assert wrong.status_code == 405
    assert wrong.headers["X-Request-ID"] == "get-1"
    nowhere = face.post("/access/v2/evaluation", _ask(), headers={"X-Request-ID": "v2"})
    assert nowhere.status_code == 404
    assert nowhere.headers["X-Request-ID"] == "v2"


def test_fail_closed_when_opa_is_down(start_opa: Callable[..., OpaSidecar], start_face: Callable[..., Face]) -> None:
    opa = start_opa(bundle=ECHO)
    face = start_face(opa=opa)
    assert face.evaluate(_ask())["decision"] is True
    opa.stop()
    result = face.evaluate(_ask())
    assert result["decision"] is False
    assert result["context"]["error"]["code"] == "pdp.opa_unavailable"
    assert result["context"]["reason_user"]["503"].startswith("No policy decision could be reached")
    batch = face.post("/access/v1/evaluations", {**_ask(), "evaluations": [{}, {}, {}]}).json()["evaluations"]
    assert [e["decision"] for e in batch] == [False, False, False]
    assert {e["context"]["error"]["code"] for e in batch} == {"pdp.opa_unavailable"}
    permit_first = {**_ask(), "evaluations": [{}, {}], "options": {"evaluations_semantic": "permit_on_first_permit"}}
    assert [e["decision"] for e in face.post("/access/v1/evaluations", permit_first).json()["evaluations"]] == [
        False,
        False,
    ]


def test_x_request_id_as_idempotency_key_when_mapped(start_face: Callable[..., Face], tmp_path: Path) -> None:
    mapping = {**authzen.DEFAULT_MAPPING, "request_id": "x-request-id"}
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    face = start_face(authzen_mapping=tmp_path / "mapping.json")
    first = face.evaluate(_ask(), headers={"X-Request-ID": "retry-1"})
    again = face.evaluate(_ask(), headers={"X-Request-ID": "retry-1"})
    assert again["context"]["decision_id"] == first["context"]["decision_id"]
    assert again["context"]["record"] == first["context"]["record"]
    other = face.post("/access/v1/evaluation", _ask("delete"), headers={"X-Request-ID": "retry-1"})
    assert other.status_code == 200  # anonymous: another request is another decision (no squatting)
    assert other.json()["context"]["decision_id"] != first["context"]["decision_id"]


def test_a_deployment_maps_its_own_fields(start_face: Callable[..., Face], tmp_path: Path) -> None:
    mapping = {
        "fields": {
            "context.agent.id": {"from": "/subject/id"},
            "context.action.tool": {"from": "/action/name"},
            "context.principal.id": {"from": "/context/on_behalf_of"},
            "context.environment.name": {"value": "staging"},
        },
        "keep_request": "",
    }
    (tmp_path / "mapping.json").write_text(json.dumps(mapping))
    face = start_face(authzen_mapping=tmp_path / "mapping.json")
    ask = _ask(subject={"type": "agent", "id": "support-bot"}, context={"on_behalf_of": "carol@example.com"})
    echoed = _echo(face.evaluate(ask))
    assert echoed["agent"]["id"] == "support-bot"
    assert echoed["asserted"]["principal"]["id"] == "carol@example.com"
    assert echoed["asserted"]["environment"]["name"] == "staging"
    assert echoed["asserted"]["attributes"] == {}
    assert echoed["resource"]["id"] == ""


def test_bare_decisions_when_the_deployment_asks_for_them(start_face: Callable[..., Face], tmp_path: Path) -> None:
    (tmp_path / "mapping.json").write_text(json.dumps({**authzen.DEFAULT_MAPPING, "response_context": False}))
    face = start_face(bundle=TODO, authzen_mapping=tmp_path / "mapping.json")
    # As the AuthZEN interop harness compares them: the JSON of the evaluations array, exactly.
    case = next(c for c in INTEROP if c["endpoint"] == "evaluations" and c["expect"] == [False, True])
    r = face.post("/access/v1/evaluations", case["request"])
    assert json.dumps(r.json()["evaluations"]) == json.dumps([{"decision": False}, {"decision": True}])
    assert face.evaluate(_ask())["decision"] is False
    assert face.audit().returncode == 0


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, 'must be an object with a "fields" object'),
        ({"fields": {"context.agent.nickname": {"from": "/subject/id"}}}, "context.agent.nickname is not a"),
        ({"fields": {"context.agent": {"from": "/subject"}}}, "map each field of context.agent separately"),
        ({"fields": {"context.agent.id": {"from": "subject/id"}}}, "from must be a JSON pointer"),
        ({"fields": {"context.risk.score": {"value": "high"}}}, "the default or value must be a number"),
        ({"fields": {}, "request_id": "header"}, "request_id must be one of none, x-request-id"),
        ({"fields": {}, "response_context": "no"}, "response_context must be true or false"),
    ],
)
def test_a_wrong_mapping_file_stops_the_start_naming_the_key(tmp_path: Path, doc: Any, message: str) -> None:
    (tmp_path / "m.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="PDP_AUTHZEN_MAPPING") as e:
        authzen.Mapping.load(tmp_path / "m.json")
    assert message in str(e.value)


def test_settings_of_the_http_face(tmp_path: Path) -> None:
    assert Settings.from_env({}).http_listen == ""
    assert Settings.from_env({"PDP_HTTP_LISTEN": "127.0.0.1:8080"}).http_listen == "127.0.0.1:8080"
    with pytest.raises(ConfigError, match="PDP_HTTP_LISTEN"):
        Settings.from_env({"PDP_HTTP_LISTEN": "8080"})
    with pytest.raises(ConfigError, match="PDP_HTTP_BASE_URL"):
        Settings.from_env({"PDP_HTTP_BASE_URL": "https://pdp.example/?tenant=1"})
    with pytest.raises(ConfigError, match="PDP_AUTHZEN_MAPPING"):
        Settings.from_env({"PDP_AUTHZEN_MAPPING": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match="PDP_HTTP_CALLERS needs PDP_TLS_CLIENT_CA_FILE"):
        Settings.from_env({"PDP_HTTP_CALLERS": "pep-gateway"})


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = _issue("test-ca", [], None)
    files: dict[str, bytes] = {"ca": ca[0].public_bytes(serialization.Encoding.PEM)}
    for name, sans in (
        ("server", [DNSName("localhost")]),
        ("pep-gateway", [UniformResourceIdentifier("spiffe://bank.example/pep-gateway")]),
        ("intruder", [UniformResourceIdentifier("spiffe://bank.example/intruder")]),
    ):
        cert, key = _issue(name, sans, ca)
        files[f"{name}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}.key"] = _pem_key(key)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    assert isinstance(x509.load_pem_x509_certificate(files["ca"]), x509.Certificate)
    return {name: tmp_path / name for name in files}


def test_mtls_binds_the_certificate_and_refuses_others(start_face: Callable[..., Face], pki: dict[str, Path]) -> None:
    face = start_face(
        ca=pki["ca"],
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca"],
        http_callers=("spiffe://bank.example/pep-gateway",),
    )
    # No client certificate: 401, nothing decided; the well-known documents stay public.
    r = face.post("/access/v1/evaluation", _ask(), headers={"X-Request-ID": "no-cert"})
    assert r.status_code == 401
    assert r.text == "a client certificate is required (mTLS)"
    assert r.headers["X-Request-ID"] == "no-cert"
    assert face.session.get(f"{face.url}/.well-known/authzen-configuration").status_code == 200
    # A certificate of the CA but not on PDP_HTTP_CALLERS: 403.
    intruder = (str(pki["intruder.crt"]), str(pki["intruder.key"]))
    assert face.post("/access/v1/evaluation", _ask(), cert=intruder).status_code == 403
    # The allowed PEP: its certificate's names are the caller, whatever the body claims.
    gateway = (str(pki["pep-gateway.crt"]), str(pki["pep-gateway.key"]))
    claims = _ask(context={"caller": {"subject": "someone-else"}})
    result = face.evaluate(claims, cert=gateway)
    caller = _echo(result)["caller"]
    assert caller["authenticated"] is True
    assert caller["subject"] == "pep-gateway"
    assert caller["sans"] == ["spiffe://bank.example/pep-gateway"]
    assert result["decision"] is True
    done = face.audit()
    assert done.returncode == 0, done.stderr
    assert "(1 decisions" in done.stdout


def test_routes_need_their_role(start_face: Callable[..., Face], pki: dict[str, Path], tmp_path: Path) -> None:
    roles = {"spiffe://bank.example/pep-gateway": ["auditor"], "spiffe://bank.example/intruder": ["pep"]}
    (tmp_path / "roles.json").write_text(json.dumps({"roles": roles}))
    face = start_face(
        ca=pki["ca"],
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca"],
        roles_file=tmp_path / "roles.json",
    )
    auditor = (str(pki["pep-gateway.crt"]), str(pki["pep-gateway.key"]))
    r = face.post("/access/v1/evaluation", _ask(), cert=auditor, headers={"X-Request-ID": "denied"})
    assert r.status_code == 403 and "needs the role pep" in r.text and r.headers["X-Request-ID"] == "denied"
    assert face.session.get(f"{face.url}/.well-known/jwks.json", cert=auditor).status_code == 200  # public
    pep = (str(pki["intruder.crt"]), str(pki["intruder.key"]))
    assert face.evaluate(_ask(), cert=pep)["decision"] is True
    assert "(1 decisions" in face.audit().stdout  # the refused call decided nothing
    # A parameterised route is checked as its template: the auditor is refused before the handler
    # runs (its 404 would say whether the id exists); the PEP goes on to the handler's ownership check.
    polled = f"{face.url}{authzen.ACCESS_REQUESTS}/no-such-id"
    r = face.session.get(polled, cert=auditor)
    assert r.status_code == 403 and f"GET {authzen.ACCESS_REQUESTS}/{{id}}" in r.text and "needs the role pep" in r.text
    assert face.session.head(polled, cert=auditor).status_code == 403  # HEAD is GET
    assert face.session.get(polled, cert=pep).status_code == 404
    assert face.post(f"{authzen.ACCESS_REQUESTS}/no-such-id", {}, cert=pep).status_code == 405  # no such route
    assert face.session.get(f"{face.url}/no/such/route", cert=auditor).status_code == 404
    # Every route the face serves is declared in the table, and the table declares nothing else.
    app = AuthzenApp(
        decider=None,  # type: ignore[arg-type]  # only the routes are read
        recorder=face.pdp.server.recorder,
        telemetry=face.pdp.server.telemetry,
        mapping=authzen.Mapping.default(),
        max_request_bytes=1,
        max_depth=1,
        peers={},
    )
    served = {f"{m} {r.path_format}" for r in app.routes() for m in r.methods or () if m != "HEAD"}
    assert served == set(ROUTE_ROLES)


def test_a_route_the_table_does_not_declare_is_refused(
    start_face: Callable[..., Face], pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    face = start_face(
        ca=pki["ca"],
        tls_cert_file=pki["server.crt"],
        tls_key_file=pki["server.key"],
        tls_client_ca_file=pki["ca"],
    )
    pep = (str(pki["pep-gateway.crt"]), str(pki["pep-gateway.key"]))
    polled = f"{face.url}{authzen.ACCESS_REQUESTS}/no-such-id"
    assert face.session.get(polled, cert=pep).status_code == 404  # declared: on to the handler
    monkeypatch.delitem(ROUTE_ROLES, f"GET {authzen.ACCESS_REQUESTS}/{{id}}")
    r = face.session.get(polled, cert=pep)
    assert r.status_code == 403 and "declares no role" in r.text


@pytest.mark.parametrize("case", INTEROP, ids=[c["name"] for c in INTEROP])
def test_authzen_interop_todo_scenario(todo_face: Face, case: dict[str, Any]) -> None:
    got, doc = interop_answer(todo_face.session, todo_face.url, case)
    assert got == case["expect"], json.dumps(doc, indent=1)[:2000]


@pytest.fixture(scope="module")
def todo_face(opa_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`pdp dev --bundle examples/authzen-todo`, as the fixture: OPA with that bundle, the PDP with HTTP on."""
    home = tmp_path_factory.mktemp("todo")
    opa = OpaSidecar(
        opa_bin=opa_bin, bundle=TODO, addr=f"127.0.0.1:{free_port()}", log_file=(home / "opa.log").open("wb")
    )
    opa.start()
    keys.ensure(home / "keys")
    settings = Settings(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", opa_url=opa.url, key_dir=home / "keys", log_dir=home / "log"
    )
    server, grpc_port = create_server(settings)
    server.start()
    assert server.http is not None
    try:
        # Healthy: the bundle answers the health check's empty input with a (deny) decision.
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            wait_for(
                lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING,
                what="the PDP serving examples/authzen-todo to report SERVING",
            )
        yield Face(None, f"http://127.0.0.1:{server.http.port}", home, requests.Session())  # type: ignore[arg-type]
    finally:
        server.stop(1)
        opa.stop()
