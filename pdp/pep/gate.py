"""The enforcement itself, apart from any transport: decide, verify, refuse or permit, report.

Every ``tools/call`` becomes one Decide. The call is forwarded only on a verified ALLOW whose
obligations this proxy understands; the caller gets a JSON-RPC error otherwise, with the codes
of the AuthZEN MCP binding draft: :data:`DENIED` (-32001) when policy said no (deny, approval
required, an obligation the proxy cannot carry out, a tool the mapping does not know), and
:data:`PDP_UNAVAILABLE` (-32603) when no trustworthy decision could be had (the PDP unreachable,
its record not verifying). After a forwarded call the proxy reports its outcome; an ALLOW it
refuses to forward (an obligation it cannot carry out) is reported ``blocked``. A DENY or
REQUIRE_APPROVAL is never reported: the PDP accepts outcome reports on ALLOWs only, and the signed
decision record already says what was held back.

REQUIRE_APPROVAL opens an escalation on the PDP (docs/approvals.md). The gate remembers it for
that exact call (its action digest, recomputed here as the PDP does): when the client retries the
same call, the gate fetches the approval tokens the PDP signed for it and decides again with them,
so an approved call is forwarded on a verified ALLOW, and one still waiting is refused again
without opening another escalation. With ``approval_wait_s`` the gate also waits that long for the
approvers itself before it answers (the tools/call stays pending meanwhile).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import rfc8785

from pdp.client import (
    Client,
    MemoryReplayCache,
    ReplayCache,
    VerificationError,
    VerifiedDecision,
    digest_of,
    sha256_digest,
    verify,
)
from pdp.errors import PdpError
from pdp.pep import obligations
from pdp.pep.mapping import Mapping, MappingError
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb

log = logging.getLogger("pdp.pep")

DENIED = -32001
PDP_UNAVAILABLE = -32603
META_KEY = "io.github.pdp/decision"
MAX_HELD = 4096  # calls whose escalation the proxy remembers at once
Waiting = Callable[[str], None]  # told the escalation id when a call starts waiting for its approvers


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refusal(PdpError):
    """A call that is not forwarded: the JSON-RPC error the client gets."""

    code: int
    message: str
    data: dict[str, Any]

    def error(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member."""
        return {"code": self.code, "message": self.message, "data": self.data}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Permit:
    """A verified ALLOW for one call, and what its obligations require."""

    tool: str
    decision: VerifiedDecision
    plan: obligations.Plan
    context: pb.ActionContext


@dataclasses.dataclass(frozen=True, kw_only=True)
class Held:
    """A call waiting for approval: the escalation the PDP opened for it, and the approval tokens
    already obtained for it (from earlier escalations of the same call, when it needs several)."""

    escalation_id: str
    tokens: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """What the proxy puts into every question, and how it talks to the PDP.

    The principal token (an OIDC/JWT token of the user the agent acts for) is forwarded with every
    question; the PDP verifies it, and only a verified principal can grant or relax anything.
    """

    agent: pb.Agent
    principal: pb.Principal | None = None
    principal_token: str = ""
    principal_token_file: Path | None = None
    timeout_s: float = 2.0
    list_ttl_s: float = 30.0
    approval_wait_s: float = 0.0
    console_url: str = ""

    def token(self) -> str:
        """The principal token to forward: the file's content, read for every question (so that
        whatever refreshes the token can rewrite it), else ``principal_token`` ("" for none).

        Raises:
            OSError: the file cannot be read.
        """
        if self.principal_token_file is not None:
            return self.principal_token_file.read_text().strip()
        return self.principal_token


class Gate:
    """Decides, verifies and reports for one proxied MCP server.

    Args:
        client: the PDP client.
        mapping: the server's mapping file.
        settings: agent, principal, timeouts.
        jwks: the PDP's public keys; None fetches them from the PDP (and again on an unknown key).
        replay: where used record ids are remembered (one per proxy by default).
        approvals: the PDP's ApprovalService over the same channel (the same identity that asked);
            None: a call that needs approval is refused each time, never retried with approvals.
    """

    def __init__(
        self,
        *,
        client: Client,
        mapping: Mapping,
        settings: Settings,
        jwks: dict[str, Any] | None = None,
        replay: ReplayCache | None = None,
        approvals: apb_grpc.ApprovalServiceStub | None = None,
    ) -> None:
        self._client = client
        self._approvals = approvals
        self._mapping = mapping
        self._settings = settings
        self._pinned = jwks is not None
        self._jwks = jwks
        self._replay = replay or MemoryReplayCache()
        self._lock = threading.Lock()
        self._listed: dict[tuple[str, ...], tuple[float, frozenset[str]]] = {}
        self._held: dict[str, Held] = {}  # action digest -> the escalation of that call

    # ---- tools/call -------------------------------------------------------------------------

    def authorize(self, tool: str, arguments: dict[str, Any], *, waiting: Waiting | None = None) -> Permit:
        """Decides a call; returns the permit to forward it.

        Args:
            tool: the MCP tool name.
            arguments: the call's arguments, exactly as they would be forwarded.
            waiting: called with the escalation id when the gate starts waiting for approvers
                (``approval_wait_s``), before it waits (e.g. to tell the client, which it may do
                synchronously: the wait starts when it returns).

        Raises:
            Refusal: the call must not be forwarded.
        """
        try:
            ctx = self._context(tool, arguments)
        except MappingError as e:
            raise Refusal(
                code=DENIED, message=f"Refused: {e}; the proxy forwards mapped tools only.", data={}
            ) from None
        digest = digest_of(ctx)
        with self._lock:
            held = self._held.pop(digest, None)
        tokens = () if held is None else self._approved(held, digest, waiting)
        response, decision = self._decide(ctx, tokens)
        if decision.outcome == "require_approval" and response.escalation_id and self._approvals is not None:
            held = Held(escalation_id=response.escalation_id, tokens=tokens)
            if self._settings.approval_wait_s > 0:
                status, tokens = self._poll(held, waiting)
                if status == "approved":
                    response, decision = self._decide(ctx, tokens)
                    held = Held(escalation_id=response.escalation_id, tokens=tokens)
            if decision.outcome == "require_approval" and response.escalation_id:
                self._hold(digest, held)
        data = _decision_data(decision)
        if decision.outcome == "deny":
            raise Refusal(code=DENIED, message=f"Denied by policy: {_why(decision)}.", data=data)
        if decision.outcome == "require_approval":
            wanted = [o.get("params", {}) for o in decision.obligations if o.get("type") == "approval.required"]
            data["approval"] = self._where(response.escalation_id) | {"required": wanted}
            roles = ", ".join(sorted({str(w.get("role", "")) for w in wanted})) or "an approver"
            raise Refusal(
                code=DENIED,
                message=f"Needs approval (by {roles}) before it can run: {_why(decision)}. "
                f"The call was not forwarded. {self._how(response.escalation_id)}",
                data=data,
            )
        if decision.outcome != "allow":
            raise Refusal(code=DENIED, message=f"Refused: unknown outcome {decision.outcome!r}.", data=data)
        try:
            plan = obligations.plan(decision.obligations)
        except obligations.UnsupportedObligation as e:
            self._report(  # an ALLOW not acted on: its budget reservation is released
                decision,
                pb.ACTION_STATUS_BLOCKED,
                {"server": self._mapping.server, "blocked": f"obligation not understood: {e}"},
            )
            raise Refusal(
                code=DENIED,
                message=f"Refused: the policy allows this call only with an {e} that this proxy cannot carry out.",
                data=data,
            ) from None
        return Permit(tool=tool, decision=decision, plan=plan, context=ctx)

    def finish(self, permit: Permit, result: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
        """Carries out the obligations on the server's answer and reports the outcome.

        Returns:
            The result as it goes to the client (unchanged when the server answered an error).
        """
        d = permit.decision
        report: dict[str, Any] = {"server": self._mapping.server, "tool": permit.tool}
        if permit.plan.notes:
            report["notes"] = list(permit.plan.notes)
        if permit.plan.audit_level:
            report["audit_level"] = permit.plan.audit_level
        if error is not None or result is None:
            report["error"] = error or {"message": "no result"}
            self._report(d, pb.ACTION_STATUS_FAILED, report)
            return {}
        applied = obligations.apply(permit.plan, result)
        delivered = rfc8785.dumps(applied.result)
        report |= {
            "digest": sha256_digest(delivered),
            "redacted": applied.redacted,
            "truncated_bytes": applied.truncated_bytes,
        }
        status = pb.ACTION_STATUS_FAILED if applied.result.get("isError") else pb.ACTION_STATUS_EXECUTED
        outcome_index = self._report(d, status, report, _impact(permit.context, applied, len(delivered)))
        meta = dict(applied.result.get("_meta") or {})
        meta[META_KEY] = {**_decision_data(d), "outcome_log_index": outcome_index}
        return {**applied.result, "_meta": meta}

    # ---- approvals --------------------------------------------------------------------------

    def _decide(self, ctx: pb.ActionContext, tokens: tuple[str, ...]) -> tuple[pb.DecideResponse, VerifiedDecision]:
        """One Decide of this call (with these approval tokens), its record verified."""
        request = pb.DecideRequest(request_id=f"mcp-{uuid.uuid4().hex}", context=ctx, approval_tokens=tokens)
        response = self._pdp("Decide", lambda: self._client.decide(request, timeout_s=self._settings.timeout_s))
        return response, self._verify(response.record, request)

    def _approved(self, held: Held, digest: str, waiting: Waiting | None) -> tuple[str, ...]:
        """The tokens to retry a held call with. Its escalation expired or used: none (the call is
        decided afresh, which opens a new escalation).

        Raises:
            Refusal: the escalation is still open (the call stays held) or was rejected.
        """
        status, tokens = self._poll(held, waiting)
        if status == "approved":
            return tokens
        where = self._where(held.escalation_id) | {"status": status}
        if status == "open":
            self._hold(digest, held)
            raise Refusal(
                code=DENIED,
                message=f"Still waiting for approval; the call was not forwarded. {self._how(held.escalation_id)}",
                data={"outcome": "require_approval", "approval": where},
            )
        if status == "rejected":
            raise Refusal(
                code=DENIED,
                message=f"An approver rejected this call (escalation {held.escalation_id}); it was not forwarded.",
                data={"outcome": "deny", "approval": where},
            )
        log.info("escalation %s is %s: deciding the call afresh", held.escalation_id, status)
        return ()

    def _hold(self, digest: str, held: Held) -> None:
        """Remembers the call's escalation (the oldest are forgotten beyond :data:`MAX_HELD`)."""
        with self._lock:
            self._held.setdefault(digest, held)
            while len(self._held) > MAX_HELD:
                self._held.pop(next(iter(self._held)))

    def _poll(self, held: Held, waiting: Waiting | None = None) -> tuple[str, tuple[str, ...]]:
        """The escalation's status (after waiting up to ``approval_wait_s`` for it to leave ``open``),
        and every token held for the call with those the PDP has signed for this escalation."""
        assert self._approvals is not None
        approvals, eid, wait = self._approvals, held.escalation_id, self._settings.approval_wait_s

        def until_decided() -> None:
            request = apb.WaitEscalationRequest(escalation_id=eid, timeout_seconds=max(1, min(3600, int(wait))))
            stream = approvals.WaitEscalation(request, timeout=wait + self._settings.timeout_s)
            for e in stream:
                if e.status != "open":
                    stream.cancel()  # type: ignore[no-untyped-call]  # stubs lag grpcio
                    return

        if wait > 0:
            if waiting is not None:
                waiting(eid)
            try:
                until_decided()
            except grpc.RpcError as e:  # e.g. too many waiters: the status below is all there is
                log.warning("waiting for escalation %s failed (%s): not waiting", eid, e.code().name)
        got = self._pdp(
            "GetApprovalTokens",
            lambda: approvals.GetApprovalTokens(
                apb.GetApprovalTokensRequest(escalation_id=eid), timeout=self._settings.timeout_s
            ),
        )
        return str(got.status), held.tokens + tuple(t for t in got.approval_tokens if t not in held.tokens)

    def _where(self, escalation_id: str) -> dict[str, Any]:
        """Where the escalation is approved, for the error's ``data.approval``."""
        return {
            "escalation_id": escalation_id or None,
            "approve_at": self._settings.console_url or None,
            "approve_with": f"pdp approvals approve {escalation_id}" if escalation_id else None,
        }

    def _how(self, escalation_id: str) -> str:
        """What the person behind the client does next, for the error's message."""
        if not escalation_id:
            return "Retry it once approved."
        console = f" ({self._settings.console_url})" if self._settings.console_url else ""
        retry = "retry the same call" if self._approvals is not None else "ask again"
        return (
            f"Escalation {escalation_id} is open: an approver approves it in the approver console{console} "
            f"or with `pdp approvals approve {escalation_id}`; then {retry}."
        )

    # ---- tools/list -------------------------------------------------------------------------

    def visible(self, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The tools the agent may use at all: one DecideBatch with operation ``list``, cached.

        A tool is hidden when it is unmapped, denied, or its record does not verify.

        Raises:
            Refusal: the PDP is unreachable (no list at all rather than an unchecked one).
        """
        names = tuple(sorted(str(t.get("name", "")) for t in tools))
        now = time.monotonic()
        with self._lock:
            cached = self._listed.get(names)
        if cached is None or cached[0] < now:
            allowed = self._decide_list(names)
            with self._lock:
                self._listed[names] = (now + self._settings.list_ttl_s, allowed)
        else:
            allowed = cached[1]
        return [t for t in tools if t.get("name") in allowed]

    def _decide_list(self, names: tuple[str, ...]) -> frozenset[str]:
        contexts = {}
        for name in names:
            try:
                contexts[name] = self._context(name, {}, operation="list")
            except MappingError:
                log.info("tools/list: %s is not mapped: hidden", name)
        requests = [pb.DecideRequest(request_id=f"mcp-list-{uuid.uuid4().hex}", context=c) for c in contexts.values()]
        if not requests:
            return frozenset()
        responses = self._pdp(
            "DecideBatch", lambda: self._client.decide_batch(requests, timeout_s=self._settings.timeout_s)
        )
        allowed = set()
        for name, request, response in zip(contexts, requests, responses, strict=True):
            try:
                if self._verify(response.record, request).outcome == "allow":
                    allowed.add(name)
            except Refusal as e:
                log.warning("tools/list: %s hidden: %s", name, e.message)
        return frozenset(allowed)

    # ---- helpers ----------------------------------------------------------------------------

    def _context(self, tool: str, arguments: dict[str, Any], operation: str | None = None) -> pb.ActionContext:
        ctx = self._mapping.context(
            agent=self._settings.agent,
            principal=self._settings.principal,
            tool=tool,
            arguments=arguments,
            operation=operation,
        )
        try:
            ctx.principal_token = self._settings.token()
        except OSError as e:
            raise Refusal(
                code=DENIED,
                message=f"Refused: the principal token file {self._settings.principal_token_file} "
                f"cannot be read ({e.strerror or e}); nothing was forwarded.",
                data={"principal_token_file": str(self._settings.principal_token_file)},
            ) from None
        return ctx

    def _pdp(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            raise Refusal(
                code=PDP_UNAVAILABLE,
                message=f"The policy decision point could not be asked ({what}: {code}); "
                "nothing was forwarded. Try again when it is back.",
                data={"pdp_status": code},
            ) from None

    def _keys(self, *, refresh: bool = False) -> dict[str, Any]:
        if self._jwks is None or (refresh and not self._pinned):
            self._jwks = self._pdp("GetJwks", lambda: self._client.jwks(timeout_s=self._settings.timeout_s))
        assert self._jwks is not None
        return self._jwks

    def _verify(self, record: str, request: pb.DecideRequest) -> VerifiedDecision:
        """The record, verified against the whole request sent (its request digest and its action's)."""
        try:
            try:
                return verify(record, self._keys(), request=request, replay=self._replay)
            except VerificationError as e:
                if self._pinned or "unknown kid" not in str(e):
                    raise
                return verify(record, self._keys(refresh=True), request=request, replay=self._replay)
        except VerificationError as e:
            raise Refusal(
                code=PDP_UNAVAILABLE,
                message=f"The decision record does not verify ({e}); nothing was forwarded.",
                data={"problem": str(e)},
            ) from None

    def _report(
        self,
        d: VerifiedDecision,
        status: pb.ActionStatus.ValueType,
        result: dict[str, Any],
        impact: dict[str, Any] | None = None,
    ) -> int | None:
        try:
            response = self._client.report(
                d.decision_id, status, result=result, impact=impact, timeout_s=self._settings.timeout_s
            )
        except grpc.RpcError as e:
            log.error("outcome report for decision %s failed: %s", d.decision_id, e)
            return None
        return int(response.log_index)


def _impact(ctx: pb.ActionContext, applied: obligations.Applied, delivered_bytes: int) -> dict[str, Any]:
    """The trace's last layer: what the forwarded call touched and what reached the client."""
    return {
        "operation": ctx.action.operation,
        "resource": {"type": ctx.resource.type, "id": ctx.resource.id},
        "delivered_bytes": delivered_bytes,
        "redacted_fields": len(applied.redacted),
        "truncated_bytes": applied.truncated_bytes,
    }


def _decision_data(d: VerifiedDecision) -> dict[str, Any]:
    return {
        "decision_id": d.decision_id,
        "outcome": d.outcome,
        "log_index": d.log_index,
        "reasons": _reasons(d),
    }


def _reasons(d: VerifiedDecision) -> list[dict[str, str]]:
    # The signed record's verdict carries each reason's message; its pdp claims only the codes.
    full = d.claims.get("result", {}).get("reasons")
    if isinstance(full, list) and all(isinstance(r, dict) for r in full):
        return [{"code": str(r.get("code", "")), "message": str(r.get("message", ""))} for r in full]
    return [{"code": c, "message": ""} for c in d.reasons]


def _why(d: VerifiedDecision) -> str:
    return "; ".join(f"{r['message'] or r['code']} ({r['code']})" for r in _reasons(d)) or "no reason given"
