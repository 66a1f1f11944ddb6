"""Roles from the certificate identity (SPIFFE ids against URI SANs only), the one table of what
each method needs, limits inside Struct values, the rate limit, and the non-loopback refusal."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from starlette.responses import Response
from starlette.routing import Route

from pdp.approvals.desk import facts_of
from pdp.authz import METHOD_ROLES, ROUTE_ROLES, Grant, Role, RoleMap, authorize, identity_of
from pdp.config import Settings
from pdp.errors import ConfigError, InvalidArgument, PermissionDenied, RateLimited
from pdp.http.app import route_of
from pdp.limits import Limits, RateLimiter, struct_to_dict
from tests.helpers import PDP_COMMAND, ROOT


def caller(subject: str = "", sans: tuple[str, ...] = (), uri_sans: tuple[str, ...] = ()) -> dict[str, object]:
    return {"authenticated": True, "peer": "ipv4:10.0.0.9:1", "subject": subject, "sans": sans, "uri_sans": uri_sans}


@pytest.fixture
def roles(tmp_path: Path) -> RoleMap:
    (tmp_path / "roles.json").write_text(
        json.dumps({"roles": {"spiffe://bank.example/pep-a": ["pep"], "audit-desk": ["auditor", "pep"]}})
    )
    return RoleMap.load(tmp_path / "roles.json")


def test_spiffe_ids_match_uri_sans_only(roles: RoleMap) -> None:
    spiffe = "spiffe://bank.example/pep-a"
    assert roles.grant(caller("pep-a", (spiffe,), (spiffe,))).roles == {Role.PEP}
    # The same name as the CN, or as a SAN of another type (gRPC lists every SAN), is nobody.
    assert roles.grant(caller(spiffe)).roles == frozenset()
    assert roles.grant(caller("x", (spiffe,))).roles == frozenset()
    # A plain name matches the subject CN only, never a URI SAN.
    assert roles.grant(caller("audit-desk")).roles == {Role.AUDITOR, Role.PEP}
    assert roles.grant(caller("x", ("audit-desk",), ("audit-desk",))).roles == frozenset()
    assert roles.grant(caller("pep-a", (spiffe,), (spiffe,))).identity == spiffe  # owns under its SPIFFE id


def test_without_a_roles_file_every_caller_is_a_pep_and_without_mtls_everything_is_open() -> None:
    assert RoleMap.default(mtls=True).grant(caller("anyone")).roles == {Role.PEP, Role.APPROVER}
    anonymous = {"authenticated": False, "peer": "ipv4:127.0.0.1:1"}
    assert RoleMap.default(mtls=False).grant(anonymous).roles == set(Role)


def test_undeclared_methods_are_refused() -> None:
    everything = Grant(identity="root", roles=frozenset(Role))
    with pytest.raises(PermissionDenied, match="declares no role"):
        authorize(METHOD_ROLES, "/pdp.v1.NewService/Anything", everything)
    with pytest.raises(PermissionDenied, match="needs the role pep"):
        authorize(METHOD_ROLES, "/pdp.v1.DecisionService/Decide", Grant(identity="a", roles=frozenset({Role.AUDITOR})))
    authorize(METHOD_ROLES, "/pdp.v1.DecisionService/GetJwks", Grant(identity="", roles=frozenset()))
    authorize(ROUTE_ROLES, "GET /.well-known/jwks.json", Grant(identity="", roles=frozenset()))


def test_the_requester_of_an_escalation_is_the_identity_decisions_are_owned_under() -> None:
    spiffe = "spiffe://bank.example/pep-a"
    for who, identity in (
        (caller("", (spiffe,), (spiffe,)), spiffe),  # SPIFFE only, no CN
        (caller("pep-gateway", (spiffe,), (spiffe,)), spiffe),  # the SPIFFE id, not the CN it shares
        (caller("pep-gateway"), "pep-gateway"),
        ({"authenticated": False, "peer": "ipv4:127.0.0.1:1", "subject": "", "sans": [], "uri_sans": []}, ""),
    ):
        assert identity_of(who) == identity
        doc = {
            "bound": {"caller": who, "action_digest": "sha256:" + "a" * 64, "approvals": []},
            "agent": {"id": "payments-agent"},
            "action": {"tool": "payments.transfer"},
            "resource": {"type": "account", "id": "A-1"},
            "asserted": {"agent": {}, "principal": {"id": "bob"}, "resource": {}},
        }
        facts = facts_of(doc)
        assert facts["caller"] == facts["context"]["caller"] == identity


async def _nothing(request: object) -> Response:
    return Response()


def test_a_request_is_checked_as_the_route_that_runs() -> None:
    routes = [
        Route("/access/v1/access_requests", _nothing, methods=["POST"]),
        Route("/access/v1/access_requests/{id}", _nothing, methods=["GET"]),
    ]

    def scope(method: str, path: str) -> dict[str, object]:
        return {"type": "http", "method": method, "path": path, "root_path": "", "query_string": b"", "headers": []}

    assert route_of(routes, scope("GET", "/access/v1/access_requests/e-1")) == "GET /access/v1/access_requests/{id}"
    assert route_of(routes, scope("HEAD", "/access/v1/access_requests/e-1")) == "GET /access/v1/access_requests/{id}"
    assert route_of(routes, scope("POST", "/access/v1/access_requests")) == "POST /access/v1/access_requests"
    # No route runs (the router's 405 / 404): nothing to check.
    assert route_of(routes, scope("POST", "/access/v1/access_requests/e-1")) is None
    assert route_of(routes, scope("GET", "/access/v1/access_requests/e-1/more")) is None
    assert route_of(routes, {"type": "lifespan"}) is None
    assert "GET /access/v1/access_requests/{id}" in ROUTE_ROLES


def test_a_malformed_roles_file_names_the_entry(tmp_path: Path) -> None:
    (tmp_path / "roles.json").write_text(json.dumps({"roles": {"pep-a": ["superuser"]}}))
    with pytest.raises(ConfigError, match=r"roles\['pep-a'\].*'superuser' is not a role"):
        RoleMap.load(tmp_path / "roles.json")


def struct(doc: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(doc)
    return s


@pytest.mark.parametrize(
    ("doc", "path", "problem"),
    [
        ({"payees": [{"names": ["x"] * 1001}]}, "args.payees[0].names", "1001 entries"),
        ({"memo": {"text": "y" * 20_000}}, "args.memo.text", "20000 characters"),
        ({"k" * 20_000: 1}, "args", "characters"),  # keys too
        ({f"f{i}": "z" * 16_000 for i in range(20)}, "args", "bytes in all"),
        ({"amount": {"value": math.nan}}, "args.amount.value", "finite"),
        ({"list": [1.0, math.inf]}, "args.list[1]", "finite"),
        ({"odd key": -math.inf}, "args['odd key']", "finite"),
    ],
)
def test_limits_hold_all_the_way_down(doc: dict[str, object], path: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        struct_to_dict(struct(doc), "args", Limits())
    assert e.value.field.startswith(path) and problem in e.value.problem


def test_values_convert_as_json_format_does() -> None:
    doc = {"a": [1, "two", None, True, {"b": 2.5}], "c": {}}
    assert struct_to_dict(struct(doc), "args", Limits()) == {"a": [1.0, "two", None, True, {"b": 2.5}], "c": {}}


def test_the_rate_limit_is_per_caller() -> None:
    limiter = RateLimiter(rate=0.001, burst=2)
    limiter.take("pep-a", 2)
    with pytest.raises(RateLimited, match="pep-a"):
        limiter.take("pep-a")
    limiter.take("pep-b")  # another caller has its own bucket
    RateLimiter(rate=0, burst=1).take("anyone", 10_000)  # 0: no limit


def test_serve_refuses_insecure_non_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PDP_ALLOW_INSECURE_NON_LOOPBACK"):
        Settings(listen="0.0.0.0:50051").check_exposure()
    assert Settings(listen="127.0.0.1:50051", http_listen="[::1]:8080").check_exposure() == ""
    allowed = Settings(listen="0.0.0.0:50051", allow_insecure_non_loopback=True).check_exposure()
    assert allowed.startswith("INSECURE")
    env = {"PDP_LISTEN": "0.0.0.0:50051", "PDP_KEY_DIR": str(tmp_path / "k"), "PDP_LOG_DIR": str(tmp_path / "l")}
    done = subprocess.run([*PDP_COMMAND, "serve"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "PDP_ALLOW_INSECURE_NON_LOOPBACK=1" in done.stderr
    assert not (tmp_path / "l").exists()  # refused before anything started
