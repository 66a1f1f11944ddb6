"""AuthZEN Authorization API 1.0 ↔ the PDP's own request and decision; no HTTP here.

An AuthZEN evaluation (``subject``, ``action``, ``resource``, ``context``) becomes a
:class:`~pdp.v1.decision_pb2.DecideRequest` by a :class:`Mapping`: a list of rules "this
DecideRequest field takes the value at this JSON pointer of the evaluation (or this constant)",
plus the rest of the evaluation (every member no rule placed elsewhere) kept under
``context.attributes.<keep_request>``, so a policy can read any AuthZEN field, each in one place.
By default the subject's ``token`` property is the principal token and the context's
``risk_assertion`` / ``lineage_attestations`` are the other tokens: the PDP verifies them
(``input.verified``); all else the evaluation says is the PEP's word (``input.asserted``).
The default mapping is :data:`DEFAULT_MAPPING`; a deployment replaces it with a JSON file
(``PDP_AUTHZEN_MAPPING``, format in ``docs/authzen.md``). The DecideRequest then goes through
the same :class:`~pdp.decide.Decider` as gRPC ``Decide``: validation, caller binding, OPA,
verdict, signed record, durable log.

A :class:`~pdp.decide.Decision` becomes ``{"decision": bool, "context": {...}}``: ``true`` only
for an ALLOW with its signed record; DENY, REQUIRE_APPROVAL and every fail-closed answer are
``false``, and the context says why (decision id, reason codes in ``reason_admin`` /
``reason_user`` style, obligations, escalation, the signed record).

The OpenID AuthZEN Access Request and Approval Profile (draft; what is covered: docs/authzen.md)
has its message shapes here too: the requestable denial (:func:`access_request`, with the binding
token's claims from :func:`binding_of`), the submission (:func:`submission_of`), the task and its
``reevaluate`` result (:func:`task`), the approval reference a re-evaluation presents
(:func:`approval_of`, :class:`Presented`), the re-evaluation's ``reason`` / ``next_action``, and
the RFC 9457 problem documents (:func:`problem`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import http
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import descriptor, json_format

from pdp.approvals.binding import REUSED
from pdp.decide import Decision
from pdp.errors import ConfigError, InvalidArgument
from pdp.records import unverified_claims as claims_of
from pdp.state import Escalation, Vote
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Outcome

EXECUTE_ALL = "execute_all"
DENY_ON_FIRST_DENY = "deny_on_first_deny"
PERMIT_ON_FIRST_PERMIT = "permit_on_first_permit"
SEMANTICS = (EXECUTE_ALL, DENY_ON_FIRST_DENY, PERMIT_ON_FIRST_PERMIT)

# Where each DecideRequest field comes from, by default. Targets are DecideRequest fields by
# their proto names (as the PDP's INVALID_ARGUMENT messages name them); "from" is a JSON pointer
# into the (merged) AuthZEN evaluation; "default" is used when the pointer finds nothing; "value"
# is a constant. The AuthZEN subject is the principal the request is for; the agent is named by
# the subject's ``agent_id`` property, else it is the constant ``authzen`` (grant tools to an agent
# of that name, or map the agent from your own field). The subject's ``token`` property is the
# principal token (the PDP verifies it: ``input.verified.principal``); the context's
# ``risk_assertion`` and ``lineage_attestations`` are the other tokens. Everything else the subject
# and context say is the PEP's word (``input.asserted``): it can only make a decision stricter.
DEFAULT_MAPPING: dict[str, Any] = {
    "keep_request": "authzen",
    "request_id": "none",
    "response_context": True,
    "fields": {
        "context.agent.id": {"from": "/subject/properties/agent_id", "default": "authzen"},
        "context.agent.version": {"from": "/subject/properties/agent_version"},
        "context.agent.owner": {"from": "/subject/properties/agent_owner"},
        "context.agent.model": {"from": "/subject/properties/agent_model"},
        "context.principal_token": {"from": "/subject/properties/token"},
        "context.risk_assertion": {"from": "/context/risk_assertion"},
        "context.lineage_attestations": {"from": "/context/lineage_attestations"},
        "context.principal.id": {"from": "/subject/id"},
        "context.principal.type": {"from": "/subject/type"},
        "context.principal.roles": {"from": "/subject/properties/roles"},
        "context.principal.tenant": {"from": "/subject/properties/tenant"},
        "context.action.tool": {"from": "/action/name"},
        "context.action.operation": {"from": "/action/properties/operation"},
        "context.action.arguments": {"from": "/action/properties/arguments"},
        "context.action.destination.kind": {"from": "/action/properties/destination/kind"},
        "context.action.destination.address": {"from": "/action/properties/destination/address"},
        "context.resource.type": {"from": "/resource/type"},
        "context.resource.id": {"from": "/resource/id"},
        "context.resource.owner": {"from": "/resource/properties/owner"},
        "context.resource.classification": {"from": "/resource/properties/classification"},
        "context.resource.data_categories": {"from": "/resource/properties/data_categories"},
        "context.resource.compartments": {"from": "/resource/properties/compartments"},
        "context.environment.name": {"from": "/context/environment/name"},
        "context.environment.change_ref": {"from": "/context/environment/change_ref"},
        "context.environment.region": {"from": "/context/environment/region"},
        "context.environment.session_id": {"from": "/context/environment/session_id"},
        "context.risk.score": {"from": "/context/risk/score"},
        "context.risk.indicators": {"from": "/context/risk/indicators"},
        "context.purpose_of_use": {"from": "/context/purpose_of_use"},
        "context.lineage": {"from": "/context/lineage"},
        # context.approval (Access Request and Approval Profile) is not mapped: the HTTP face takes
        # it out of the evaluation, looks the approval up itself and passes the approval tokens it
        # finds (approval_of, docs/authzen.md).
    },
}

ACCESS_REQUESTS = "/access/v1/access_requests"
"""Where a PEP submits a requestable denial and polls its task (Access Request and Approval Profile)."""

# The draft's problem types (RFC 9457): kind → (HTTP status, title).
PROBLEM_URN = "urn:openid:authzen:access-request:error:"
PROBLEMS = {
    "not_requestable": (400, "Access is not requestable"),
    "expired_denial": (410, "The requestable denial has expired"),
    "invalid_denial_binding": (400, "The access request cannot be bound to the denied decision"),
    "duplicate_request": (409, "Idempotency-Key reused with another request"),
    "unknown_task": (404, "Unknown task"),
    "task_expired": (410, "The task has expired"),
    "invalid_task_state": (409, "Not possible in the task's state"),
}

APPROVAL_REQUIRED = "approval_required"
"""``context.reason`` of a requestable denial."""
# The draft's re-evaluation denial reasons (context.reason when a request that presented
# context.approval is not permitted); next_action is said separately.
APPROVAL_EXPIRED = "approval_expired"
OUT_OF_SCOPE = "out_of_scope"
POLICY_DENIED = "policy_denied"
APPROVAL_UNVERIFIABLE = "approval_unverifiable"
_REJECTED_CHECK_REASON = {  # pdp.approvals.rejected[].check → reason
    "expired": APPROVAL_EXPIRED,
    "action_digest": OUT_OF_SCOPE,
    "agent_id": OUT_OF_SCOPE,
    "principal_id": OUT_OF_SCOPE,
}

_STRUCT = "google.protobuf.Struct"
_NUMBER_TYPES = (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT)
_REQUEST_ID_MODES = ("none", "x-request-id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Rule:
    target: str  # "context.agent.id"
    path: tuple[descriptor.FieldDescriptor, ...]
    source: tuple[str, ...] | None  # JSON pointer tokens; None for a constant
    default: Any = None
    kind: str = ""  # how the value is set: messages, struct, strings, enum, number, bool, string

    @property
    def field(self) -> descriptor.FieldDescriptor:
        return self.path[-1]

    @property
    def source_name(self) -> str:
        """The AuthZEN field this rule reads, as error messages name it (``subject.properties.roles``)."""
        return ".".join(self.source) if self.source is not None else f"{self.target} (constant)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mapping:
    """How AuthZEN evaluations become DecideRequests in this deployment.

    Attributes:
        rules: one per mapped DecideRequest field.
        keep_request: the members of the evaluation that no rule maps go under
            ``context.attributes.<keep_request>``; empty to leave them out.
        request_id: ``none`` (every evaluation is a new decision) or ``x-request-id`` (the
            ``X-Request-ID`` header is the idempotency key: a retry returns the first record).
        response_context: answer each decision with its ``context`` (decision id, reasons,
            obligations, record...); false: the bare ``{"decision": bool}`` some PEPs and the
            interop harness compare byte for byte.
    """

    rules: tuple[_Rule, ...]
    keep_request: str = "authzen"
    request_id: str = "none"
    response_context: bool = True

    @functools.cached_property
    def _mapped(self) -> dict[str, Any]:
        return _pointer_tree(self.rules)

    @classmethod
    def default(cls) -> Mapping:
        return cls.from_dict(DEFAULT_MAPPING, where="the default mapping")

    @classmethod
    def load(cls, path: Path) -> Mapping:
        """Reads a mapping file.

        Raises:
            ConfigError: the file is unreadable or wrong; the message names the setting and the key.
        """
        where = f"PDP_AUTHZEN_MAPPING ({path})"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{where}: cannot read a JSON mapping: {e}") from None
        return cls.from_dict(doc, where=where)

    @classmethod
    def from_dict(cls, doc: Any, *, where: str) -> Mapping:
        """Builds a mapping from its JSON form (see :data:`DEFAULT_MAPPING`).

        Raises:
            ConfigError: a key is wrong; the message names it.
        """
        if not isinstance(doc, dict) or not isinstance(doc.get("fields"), dict):
            raise ConfigError(f'{where}: must be an object with a "fields" object')
        keep = doc.get("keep_request", "authzen")
        if not isinstance(keep, str) or (keep and not keep.isidentifier()):
            raise ConfigError(f"{where}: keep_request must be a name like authzen, or empty")
        mode = doc.get("request_id", "none")
        if mode not in _REQUEST_ID_MODES:
            raise ConfigError(f"{where}: request_id must be one of {', '.join(_REQUEST_ID_MODES)}")
        context = doc.get("response_context", True)
        if not isinstance(context, bool):
            raise ConfigError(f"{where}: response_context must be true or false")
        rules = tuple(_rule(target, spec, f"{where}: fields.{target}") for target, spec in doc["fields"].items())
        if keep and any(r.target.startswith("context.attributes") for r in rules):
            raise ConfigError(f"{where}: context.attributes is where keep_request puts the evaluation; map elsewhere")
        return cls(rules=rules, keep_request=keep, request_id=mode, response_context=context)

    def to_request(self, evaluation: dict[str, Any], *, request_id: str = "") -> pb.DecideRequest:
        """Maps one (merged) AuthZEN evaluation onto a DecideRequest.

        Raises:
            InvalidArgument: a value has the wrong type for its field; the AuthZEN field is named.
        """
        request = pb.DecideRequest(request_id=request_id)
        for rule in self.rules:
            value = _lookup(evaluation, rule.source) if rule.source is not None else rule.default
            if value is None:
                value = rule.default
            if value is not None:
                _assign(request, rule, value)
        if self.keep_request and (rest := _unmapped(evaluation, self._mapped)):
            request.context.attributes.update({self.keep_request: rest})
        return request

    def source_of(self, field: str) -> str:
        """The AuthZEN field that feeds a DecideRequest field named in an error (longest match)."""
        if self.keep_request and field.startswith("context.attributes"):
            return "request"
        best = max((r for r in self.rules if field.startswith(r.target)), key=lambda r: len(r.target), default=None)
        return best.source_name if best is not None else field


def _rule(target: str, spec: Any, where: str) -> _Rule:
    if not isinstance(spec, dict) or ("from" in spec) == ("value" in spec):
        raise ConfigError(f'{where}: must be an object with either "from" (a JSON pointer) or "value"')
    path: list[descriptor.FieldDescriptor] = []
    message: descriptor.Descriptor | None = pb.DecideRequest.DESCRIPTOR
    for name in target.split("."):
        fd = message.fields_by_name.get(name) if message is not None else None
        if fd is None:
            raise ConfigError(f"{where}: {target} is not a DecideRequest field")
        path.append(fd)
        message = fd.message_type if fd.message_type is not None and fd.message_type.full_name != _STRUCT else None
    last = path[-1]
    if last.message_type is not None and last.message_type.full_name != _STRUCT and not last.is_repeated:
        raise ConfigError(f"{where}: map each field of {target} separately (a string, number, list or object)")
    source = None
    if "from" in spec:
        pointer = spec["from"]
        if not isinstance(pointer, str) or not pointer.startswith("/"):
            raise ConfigError(f"{where}: from must be a JSON pointer like /subject/id")
        source = tuple(t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/"))
    rule = _Rule(
        target=target,
        path=tuple(path),
        source=source,
        default=spec.get("value", spec.get("default")),
        kind=_kind(last),
    )
    if rule.default is not None:
        try:
            _assign(pb.DecideRequest(), rule, rule.default)
        except InvalidArgument as e:
            raise ConfigError(f"{where}: the default or value {e.problem}") from None
    return rule


def _unmapped(doc: dict[str, Any], mapped: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without the members the rules placed elsewhere (so nothing is in the input twice),
    empty objects left out. ``mapped`` is the tree of the rules' pointers (None at a leaf)."""
    rest: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in mapped:
            rest[key] = value
        elif (sub := mapped[key]) is not None:
            if not isinstance(value, dict):
                rest[key] = value
            elif kept := _unmapped(value, sub):
                rest[key] = kept
    return rest


def _pointer_tree(rules: tuple[_Rule, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for rule in rules:
        if rule.source is None:
            continue
        node = tree
        for t in rule.source[:-1]:
            child = node.setdefault(t, {})
            if child is None:  # a parent of this pointer is itself mapped: all of it is placed already
                break
            node = child
        else:
            node[rule.source[-1]] = None
    return tree


def _lookup(doc: Any, tokens: tuple[str, ...]) -> Any:
    for t in tokens:
        if not isinstance(doc, dict) or t not in doc:
            return None
        doc = doc[t]
    return doc


def _kind(fd: descriptor.FieldDescriptor) -> str:
    if fd.message_type is not None:
        return "messages" if fd.is_repeated else "struct"
    if fd.is_repeated:
        return "strings" if fd.type == descriptor.FieldDescriptor.TYPE_STRING else ""
    if fd.enum_type is not None:
        return "enum"
    if fd.type in _NUMBER_TYPES:
        return "number"
    return {descriptor.FieldDescriptor.TYPE_BOOL: "bool", descriptor.FieldDescriptor.TYPE_STRING: "string"}.get(
        fd.type, ""
    )


def _assign(request: pb.DecideRequest, rule: _Rule, value: Any) -> None:  # noqa: PLR0912
    m: Any = request
    for fd in rule.path[:-1]:
        m = getattr(m, fd.name)
    name, kind, bad = rule.field.name, rule.kind, InvalidArgument
    if kind == "string":
        if not isinstance(value, str):
            raise bad(rule.source_name, "must be a string")
        setattr(m, name, value)
    elif kind == "strings":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(rule.source_name, "must be a list of strings")
        getattr(m, name).extend(value)
    elif kind == "struct":
        if not isinstance(value, dict):
            raise bad(rule.source_name, "must be an object")
        getattr(m, name).update(value)
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad(rule.source_name, "must be a number")
        setattr(m, name, value)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad(rule.source_name, "must be true or false")
        setattr(m, name, value)
    elif kind == "enum":
        setattr(m, name, _enum(rule, value))
    elif kind == "messages":  # e.g. lineage: objects in the proto3 JSON form
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad(rule.source_name, "must be a list of objects")
        try:
            parsed = json_format.ParseDict({name: value}, type(m)())
        except json_format.ParseError as e:
            raise bad(rule.source_name, str(e).replace(f"{name}[", "[")[:300]) from None
        getattr(m, name).extend(getattr(parsed, name))
    else:
        raise bad(rule.source_name, f"cannot be mapped onto {rule.target}")


def _enum(rule: _Rule, value: Any) -> int:
    """An enum value by its name, with or without the prefix, in any case (``confidential``)."""
    enum = rule.field.enum_type
    assert enum is not None  # kind "enum" is given to enum fields only
    values = enum.values
    prefix = values[0].name.rsplit("_", 1)[0] + "_"  # CLASSIFICATION_UNSPECIFIED → CLASSIFICATION_
    name = value.upper() if isinstance(value, str) else ""
    found = enum.values_by_name.get(name if name.startswith(prefix) else prefix + name)
    if found is None:
        names = ", ".join(v.name.removeprefix(prefix).lower() for v in values[1:])
        raise InvalidArgument(rule.source_name, f"must be one of {names}")
    return int(found.number)


# ---- requests -------------------------------------------------------------------------------


def evaluation_of(body: Any, where: str = "") -> dict[str, Any]:
    """Checks one Access Evaluation request's shape (spec §6.1) and returns its four parts.

    Raises:
        InvalidArgument: a required member is missing or has the wrong type; it is named.
    """
    if not isinstance(body, dict):
        raise InvalidArgument(where.rstrip(".") or "request", "must be a JSON object")
    for key, required in (("subject", ("type", "id")), ("action", ("name",)), ("resource", ("type", "id"))):
        part = body.get(key)
        if not isinstance(part, dict):
            raise InvalidArgument(f"{where}{key}", "is required (an object)")
        for name in required:
            if not isinstance(part.get(name), str) or not part[name]:
                raise InvalidArgument(f"{where}{key}.{name}", "is required (a non-empty string)")
        if "properties" in part and not isinstance(part["properties"], dict):
            raise InvalidArgument(f"{where}{key}.properties", "must be an object")
    if "context" in body and not isinstance(body["context"], dict):
        raise InvalidArgument(f"{where}context", "must be an object")
    return {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}


def evaluations_of(body: Any) -> tuple[list[dict[str, Any]], str, bool]:
    """Splits an Access Evaluations request (spec §7.1) into merged evaluations.

    The top-level ``subject``, ``action``, ``resource`` and ``context`` are defaults; a key set on
    an entry replaces its default. Without entries, the request is a single evaluation.

    Returns:
        The evaluations, the ``options.evaluations_semantic``, and whether there was no
        ``evaluations`` array (answer as the single Evaluation API does).

    Raises:
        InvalidArgument: a member is missing or malformed; it is named (``evaluations[2].subject.id``).
    """
    if not isinstance(body, dict):
        raise InvalidArgument("request", "must be a JSON object")
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise InvalidArgument("options", "must be an object")
    semantic = options.get("evaluations_semantic", EXECUTE_ALL)
    if semantic not in SEMANTICS:
        raise InvalidArgument("options.evaluations_semantic", f"must be one of {', '.join(SEMANTICS)}")
    entries = body.get("evaluations")
    if entries is not None and not isinstance(entries, list):
        raise InvalidArgument("evaluations", "must be an array")
    if not entries:
        return [evaluation_of(body)], semantic, True
    defaults = {k: body[k] for k in ("subject", "action", "resource", "context") if k in body}
    merged = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidArgument(f"evaluations[{i}]", "must be an object")
        merged.append(evaluation_of({**defaults, **entry}, f"evaluations[{i}]."))
    return merged, semantic, False


def approval_of(evaluation: dict[str, Any], where: str = "") -> tuple[dict[str, Any], str | None]:
    """Takes the approval reference of a re-evaluation (``context.approval``, Access Request and
    Approval Profile) out of ``evaluation``: it is not authorization input, and the PDP looks the
    approval up itself (only ``id`` is read; ``state``, ``approved_until`` and the rest are never
    trusted).

    Returns:
        The evaluation without ``context.approval`` (a copy when it had one) and the approval id, or None.

    Raises:
        InvalidArgument: ``context.approval`` is not an object with a non-empty string ``id``.
    """
    context = evaluation.get("context")
    if not isinstance(context, dict) or "approval" not in context:
        return evaluation, None
    approval = context["approval"]
    if not isinstance(approval, dict):
        raise InvalidArgument(f"{where}context.approval", "must be an object (the result.approval of the task)")
    approval_id = approval.get("id")
    if not isinstance(approval_id, str) or not approval_id:
        raise InvalidArgument(f"{where}context.approval.id", "is required (a non-empty string)")
    rest = {k: v for k, v in context.items() if k != "approval"}
    return {**evaluation, "context": rest}, approval_id


def submission_of(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Checks an Access Request submission's shape: ``subject``, ``resource``, ``action`` (one
    request; no ``items``), an optional ``context``, and the ``denial`` with its ``binding_token``
    and ``expires_at``. ``requested_access``, ``callback``, ``client`` and the denial's other
    members are accepted and not used.

    Returns:
        The submitted evaluation (``subject``, ``action``, ``resource``, ``context``) and the denial.

    Raises:
        InvalidArgument: a member is missing or malformed; it is named.
    """
    if not isinstance(body, dict):
        raise InvalidArgument("request", "must be a JSON object")
    if "items" in body:
        raise InvalidArgument("items", "bundled requests are not supported: submit each requestable denial alone")
    evaluation = evaluation_of(body)
    denial = body.get("denial")
    if not isinstance(denial, dict):
        raise InvalidArgument("denial", "is required (an object binding the request to the denial)")
    for name in ("binding_token", "expires_at"):
        if not isinstance(denial.get(name), str) or not denial[name]:
            raise InvalidArgument(
                f"denial.{name}", f"is required (context.access_request.{name} of the denial, unchanged)"
            )
    if "evaluation_id" in denial and not isinstance(denial["evaluation_id"], str):
        raise InvalidArgument("denial.evaluation_id", "must be a string")
    return evaluation, denial


def timestamp(value: str) -> int:
    """Unix seconds of an RFC 3339 timestamp (``2026-06-11T17:34:52Z``).

    Raises:
        ValueError: not an RFC 3339 date-time with a time zone.
    """
    parsed = datetime.datetime.fromisoformat(value)
    if parsed.tzinfo is None or "T" not in value.upper():
        raise ValueError(f"{value!r} is not an RFC 3339 date-time with an offset")
    return math.floor(parsed.timestamp())


T = TypeVar("T")


def decide_in_order(decide: Callable[[T], Decision], requests: Sequence[T], semantic: str) -> list[Decision]:
    """Decides ``requests`` one by one, in order, up to and including the first deny
    (``deny_on_first_deny``) or the first permit (``permit_on_first_permit``): the entries after it
    are never decided, so they neither enter the log nor open escalations, use approval tokens or
    reserve budgets the caller would never see. ``execute_all`` is not for this (decide it as one batch).
    """
    stop = {DENY_ON_FIRST_DENY: False, PERMIT_ON_FIRST_PERMIT: True}[semantic]
    decisions: list[Decision] = []
    for r in requests:
        decisions.append(decide(r))
        if permitted(decisions[-1]) is stop:
            break
    return decisions


# ---- answers --------------------------------------------------------------------------------


def permitted(d: Decision) -> bool:
    """``decision: true`` only for a policy ALLOW that was durably recorded."""
    return d.verdict.outcome is Outcome.ALLOW and not d.verdict.indeterminate and bool(d.record)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Presented:
    """The approval a re-evaluation presented (``context.approval.id``) and what the PDP found for it.

    Attributes:
        id: the approval id as presented.
        tokens: the approval tokens the PDP looked up for it (given to the pipeline, which verifies
            them against this request and consumes them on an ALLOW); none when it found no approval.
        approved_until: unix seconds; the approval is not used after it.
        problem: why no tokens (a re-evaluation denial reason); "" when there are tokens.
    """

    id: str
    tokens: tuple[str, ...] = ()
    approved_until: int = 0
    problem: str = ""


def to_result(
    d: Decision,
    *,
    with_context: bool = True,
    access_request: dict[str, Any] | None = None,
    presented: Presented | None = None,
) -> dict[str, Any]:
    """One AuthZEN Decision: ``{"decision": bool, "context": {...}}`` (no context if not ``with_context``).

    Args:
        d: the decision.
        with_context: answer with the context.
        access_request: for a REQUIRE_APPROVAL that opened an escalation, the requestable denial
            (:func:`access_request`): the context then carries it with ``evaluation_id``,
            ``evaluated_at`` and ``reason``.
        presented: the approval the request presented (``context.approval``): a ``true`` that used
            it echoes ``context.approval``; a ``false`` says ``reason`` and ``next_action``.
    """
    v = d.verdict
    allowed = permitted(d)
    if not with_context:
        return {"decision": allowed}
    admin: dict[str, str] = {}
    for r in v.reasons:
        text = r.message or r.rule or r.code
        admin[r.code] = f"{admin[r.code]}; {text}" if r.code in admin else text
    context: dict[str, Any] = {
        "decision_id": d.decision_id,
        "outcome": v.outcome.value,
        "reason_admin": admin,
        "reasons": [r.to_dict() for r in v.reasons],
        "obligations": [o.to_dict() for o in v.obligations],
        "record": d.record,
        "log_index": str(d.log_index),
        "policy": {"decision_path": d.decision_path, "opa_version": d.opa_version, "bundles": d.bundle_revisions},
    }
    if d.request_id:
        context["request_id"] = d.request_id
    codes = ", ".join(r.code for r in v.reasons)
    if v.indeterminate:
        context["error"] = {"status": 503, "code": v.error_code, "message": v.reasons[0].message}
        context["reason_user"] = {"503": f"No policy decision could be reached ({v.error_code}); try again later"}
    elif v.outcome is Outcome.REQUIRE_APPROVAL:
        context["escalation"] = _escalation(d)
        if d.escalation_id and access_request is not None:
            context["evaluation_id"] = d.decision_id
            context["evaluated_at"] = (claims_of(d.record.encode()) if d.record else {}).get("timestamp", "")
            context["reason"] = APPROVAL_REQUIRED
            context["access_request"] = access_request
        context["reason_user"] = {"403": f"This needs an approval before it may go ahead ({codes})"}
    elif not allowed:
        context["reason_user"] = {"403": f"Denied by policy ({codes})"}
    if presented is not None:
        _reevaluated(context, d, presented, allowed=allowed)
    return {"decision": allowed, "context": context}


def _reevaluated(context: dict[str, Any], d: Decision, presented: Presented, *, allowed: bool) -> None:
    """What the answer to a re-evaluation says about the approval it presented (the profile's
    Completion Semantics): a ``true`` that consumed it echoes ``approval`` (id, approved_until); a
    ``false`` says why (``reason``, one of the draft's re-evaluation denial reasons) and what the
    PEP should do (``next_action``: ``request`` only with a fresh ``access_request``, ``retry``
    when no decision could be reached, else ``none``)."""
    if allowed:
        if d.approvals.get("consumed") and presented.approved_until:
            context["approval"] = {"id": presented.id, "approved_until": rfc3339(presented.approved_until)}
        return
    if d.verdict.indeterminate:
        context["next_action"] = "retry"
        return
    checks = [r.get("check") for r in d.approvals.get("rejected", ()) if isinstance(r, dict)]
    if presented.problem:
        reason = presented.problem
    elif any(r.code == REUSED for r in d.verdict.reasons):
        reason = APPROVAL_EXPIRED  # single use: this approval was used by an earlier ALLOW
    elif checks:
        reason = _REJECTED_CHECK_REASON.get(str(checks[0]), APPROVAL_UNVERIFIABLE)
    else:
        reason = POLICY_DENIED
    context["reason"] = reason
    context["next_action"] = "request" if "access_request" in context else "none"


def access_request(d: Decision, *, binding_token: str, endpoint: str) -> dict[str, Any]:
    """The requestable denial (``context.access_request``): where to submit, until when, and the
    PDP-signed binding token (:func:`pdp.approvals.tokens.issue_binding` over :func:`binding_of`)."""
    return {"endpoint": endpoint, "expires_at": rfc3339(d.escalation_expires_at), "binding_token": binding_token}


def binding_of(d: Decision) -> dict[str, Any]:
    """What a REQUIRE_APPROVAL's binding token says: its escalation, the decision (the evaluation)
    and the action digest the record carries, issued when the record was, valid while the
    escalation is open. Empty when the decision opened no escalation or has no record."""
    if not d.escalation_id or not d.record:
        return {}
    pdp = claims_of(d.record.encode()).get("pdp", {})
    return {
        "escalation_id": d.escalation_id,
        "evaluation_id": d.decision_id,
        "action_digest": str(pdp.get("action_digest", "")),
        "iat": int(pdp.get("iat", 0)),
        "exp": d.escalation_expires_at,
    }


def _escalation(d: Decision) -> dict[str, Any]:
    """What an approver needs to act on: the action the approval must be bound to, and why."""
    claims = claims_of(d.record.encode()) if d.record else {}
    return {
        "required": "approval",
        "action_digest": claims.get("pdp", {}).get("action_digest", ""),
        "reasons": [r.code for r in d.verdict.reasons],
        "obligations": [o.to_dict() for o in d.verdict.obligations],
        "decision_id": d.decision_id,
        "escalation_id": d.escalation_id,  # approvers act on it (pdp.v1.ApprovalService, docs/approvals.md)
        "escalation_expires_at": d.escalation_expires_at,
    }


def task_status(e: Escalation) -> str:
    """The draft's task status of an escalation: ``open`` → ``pending``; ``approved`` and
    ``consumed`` → ``approved`` (a terminal status does not change; single use is the PDP's to
    enforce at re-evaluation); ``rejected`` by an approver's vote → ``denied``, closed without one
    (the kill switch suspended the agent) → ``cancelled``; ``expired`` → ``expired``."""
    if e.status == "open":
        return "pending"
    if e.status in ("approved", "consumed"):
        return "approved"
    if e.status == "rejected":
        return "denied" if any(not v.approve for v in e.votes) else "cancelled"
    return "expired" if e.status == "expired" else "failed"


def approvals_of(e: Escalation) -> list[Vote]:
    """The votes that count towards the escalation's approval (approve, by a holder of its role)."""
    return [v for v in e.votes if v.approve and e.role in v.roles]


def approved_until(e: Escalation, approval_ttl_s: int) -> int:
    """When the first of the approval's tokens expires (each is valid ``approval_ttl_s`` after its vote)."""
    votes = approvals_of(e)
    return min(v.at for v in votes) + approval_ttl_s if votes else 0


def task_expires_at(e: Escalation, approval_ttl_s: int) -> int:
    """When the task handle is no longer valid: the last moment an approval it produced could be
    used (the escalation's expiry, plus an approval token's lifetime)."""
    return e.expires_at + approval_ttl_s


def task(e: Escalation, *, status_endpoint: str, approval_ttl_s: int) -> dict[str, Any]:
    """The access request's task (``{"task": {...}}``) and, once approved, its ``result``: the
    ``reevaluate`` completion and the ``approval`` the PEP puts unchanged at ``context.approval``
    when it evaluates again. The approval id is the task id: the PDP looks it up, for the requester
    only, and verifies its tokens against the re-evaluated action (no ``state`` is issued)."""
    status = task_status(e)
    handle: dict[str, Any] = {
        "id": e.id,
        "status": status,
        "status_endpoint": status_endpoint,
        "expires_at": rfc3339(task_expires_at(e, approval_ttl_s)),
    }
    if status == "pending":
        handle["progress"] = {
            "current_step": min(len(approvals_of(e)) + 1, e.count),
            "total_steps": e.count,
            "step_name": e.role,
        }
    doc: dict[str, Any] = {"task": handle}
    if status == "approved" and (votes := approvals_of(e)):
        doc["result"] = {
            "mode": "reevaluate",
            "approval": {
                "id": e.id,
                "approved_at": rfc3339(max(v.at for v in votes)),
                "approved_until": rfc3339(approved_until(e, approval_ttl_s)),
            },
        }
    return doc


def problem(kind: str, detail: str, *, status: int = 0) -> tuple[int, dict[str, Any]]:
    """An RFC 9457 problem document: one of the draft's problem types (:data:`PROBLEMS`), or
    ``about:blank`` with ``status`` for any other error of the access request endpoints."""
    if kind:
        status, title = PROBLEMS[kind]
        return status, {"type": PROBLEM_URN + kind, "title": title, "status": status, "detail": detail}
    return status, {"type": "about:blank", "title": http.HTTPStatus(status).phrase, "status": status, "detail": detail}


def rfc3339(ts: int) -> str:
    """Unix seconds as an RFC 3339 UTC timestamp (``2026-06-11T17:34:52Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def metadata(base_url: str) -> dict[str, Any]:
    """The PDP metadata document (spec §9) for a PDP identified by ``base_url``."""
    base = base_url.rstrip("/")
    return {
        "policy_decision_point": base,
        "access_evaluation_endpoint": f"{base}/access/v1/evaluation",
        "access_evaluations_endpoint": f"{base}/access/v1/evaluations",
        "access_request_endpoint": f"{base}{ACCESS_REQUESTS}",
        "jwks_uri": f"{base}/.well-known/jwks.json",
    }


def name_field(e: InvalidArgument, mapping: Mapping, *, batch: bool) -> str:
    """The AuthZEN field behind a DecideRequest field an InvalidArgument names.

    ``requests[2].context.agent.id`` (from a batch) becomes ``evaluations[2].subject.properties.agent_id``.
    """
    field, prefix = e.field, ""
    if batch and field.startswith("requests["):
        index, _, field = field.partition("].")
        prefix = f"evaluations[{index.removeprefix('requests[')}]."
    if field == "request_id":
        return "X-Request-ID"
    if field == "requests":
        return "evaluations"
    if field.startswith(("context", "explain")):
        return prefix + mapping.source_of(field)
    return prefix + field
