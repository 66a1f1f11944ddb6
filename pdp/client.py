"""The PEP's side: ask for a decision, and verify its signed record before acting on it.

A PEP must not act on an answer alone. :func:`verify` checks the record that came with it:
signature by a key of the PDP's JWKS, record type, expiry, that the record is bound to the very
action about to run (its action digest, recomputed here from the action) or, better, to the
whole request the PEP sent (its request digest: the action plus everything else it said,
tokens included), that it was made for this PEP (its audience), and that the record was not
seen before (replay). Only then is its outcome the PEP's to enforce::

    resp = client.decide(request)
    decision = verify(resp.record, jwks, request=request, audience="spiffe://example.org/pep", replay=cache)
    if decision.outcome == "allow": ...

An action that needs a human's approval (REQUIRE_APPROVAL) opens an escalation on the PDP;
:meth:`Client.decide_with_approval` waits for approvers to decide it, fetches the PDP-signed
approval tokens and retries the same action with them, then verifies the final record::

    resp, decision = client.decide_with_approval(request, wait=600, jwks=jwks, replay=cache)

The replay cache is a :class:`ReplayCache`: :class:`MemoryReplayCache` for one PEP process, or a
shared backend (one implementation of the same protocol) so a PEP's replicas refuse a record any
of them has used.

:func:`sha256_digest` writes a digest as records do (``sha256:<hex>``), e.g. of the result an
outcome report describes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import threading
import time
from typing import Any, Protocol

import grpc

from pdp.context import Caller, build_input
from pdp.digest import request_digest
from pdp.encoding import sha256_digest
from pdp.errors import RecordError, VerificationError
from pdp.keys import public_keys
from pdp.records import verify as verify_jws
from pdp.schema import TYP_DECISION, DecisionRecord
from pdp.v1 import approvals_pb2 as apb
from pdp.v1 import approvals_pb2_grpc as apb_grpc
from pdp.v1 import decision_pb2 as pb
from pdp.v1 import decision_pb2_grpc as pb_grpc

__all__ = [
    "Client",
    "MemoryReplayCache",
    "ReplayCache",
    "VerificationError",
    "VerifiedDecision",
    "digest_of",
    "is_loopback",
    "sha256_digest",
    "verify",
]


_POLL_S = 2.0  # how often decide_with_approval polls when the PDP cannot stream to it


class ReplayCache(Protocol):
    """Where a PEP remembers the records it has acted on, until they expire.

    Implementations may be shared by several PEP replicas; ``first_use`` must then be atomic
    across all of them (one winner per key).
    """

    def first_use(self, key: str, expires_at: int, /) -> bool:
        """Records ``key`` (a record's ``jti``) until ``expires_at`` (Unix seconds); False if it
        was recorded before and has not expired. Positional: implementations name them freely."""


class MemoryReplayCache:
    """Token ids seen until they expire, in this process (one PEP instance)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def first_use(self, key: str, expires_at: int) -> bool:
        now = int(time.time())
        with self._lock:
            self._seen = {k: exp for k, exp in self._seen.items() if exp >= now}
            if key in self._seen:
                return False
            self._seen[key] = expires_at
            return True


@dataclasses.dataclass(frozen=True)
class VerifiedDecision:
    decision_id: str
    outcome: str
    reasons: list[str]
    obligations: list[dict[str, Any]]
    log_index: int
    claims: dict[str, Any]


def digest_of(context: pb.ActionContext) -> str:
    """The action digest of an action context, computed exactly as the PDP does."""
    request = pb.DecideRequest(context=context)
    doc = build_input(request, caller=Caller(authenticated=False, peer=""), request_time="", max_depth=64)
    return str(doc["bound"]["action_digest"])


def verify(
    record: str,
    jwks: dict[str, Any],
    *,
    action: pb.ActionContext | None = None,
    request: pb.DecideRequest | None = None,
    audience: str | None = None,
    replay: ReplayCache,
    now: float | None = None,
    leeway_s: int = 5,
) -> VerifiedDecision:
    """Checks a decision record against the action about to run.

    Args:
        record: the compact JWS from the answer.
        jwks: the PDP's public keys (``Client.jwks``).
        action: the action about to run: the record must carry its action digest.
        request: the whole DecideRequest sent: the record must carry its request digest (and
            its action's digest). Give this or ``action`` (or both).
        audience: the name this PEP is known by to the PDP (its certificate's SPIFFE ID or
            subject): the record must have been made for it. None skips the check.
        replay: remembers used records.
        now: the time to check expiry against (default: now).
        leeway_s: clock skew tolerated.

    Raises:
        VerificationError: signature, key, type, expiry, request/action binding, audience or
            replay failed.
    """
    if action is None and request is None:
        raise VerificationError("give the action or the request the record must answer")
    if not record:
        raise VerificationError("no record: the decision was not recorded, so it must not be acted on")
    try:
        claims = verify_jws(record, public_keys(jwks), typ=TYP_DECISION)
        decision = DecisionRecord.from_dict(claims)
    except RecordError as e:
        raise VerificationError(str(e)) from None
    pdp = decision.pdp
    t = int(time.time() if now is None else now)
    if t > pdp.exp + leeway_s:
        raise VerificationError("the record has expired")
    if request is not None:
        if pdp.request_digest != request_digest(request):
            raise VerificationError("the record is for a different request")
        if pdp.action_digest != digest_of(request.context):
            raise VerificationError("the record is for a different action")
    if action is not None and pdp.action_digest != digest_of(action):
        raise VerificationError("the record is for a different action")
    if audience is not None and pdp.aud != audience:
        raise VerificationError(f"the record was made for {pdp.aud!r}, not for {audience!r}")
    if not replay.first_use(pdp.jti, pdp.exp + leeway_s):
        raise VerificationError("the record was already used (replay)")
    return VerifiedDecision(
        decision_id=decision.decision_id,
        outcome=pdp.outcome,
        reasons=list(pdp.reasons),
        obligations=list(pdp.obligations),
        log_index=int(pdp.log_index),
        claims=claims,
    )


class Client:
    """A thin PDP client for PEPs: Decide, DecideBatch, the JWKS, outcome reports."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = pb_grpc.DecisionServiceStub(channel)
        self._approvals = apb_grpc.ApprovalServiceStub(channel)

    def decide(self, request: pb.DecideRequest, *, timeout_s: float = 2.0) -> pb.DecideResponse:
        response: pb.DecideResponse = self._stub.Decide(request, timeout=timeout_s)
        return response

    def decide_batch(self, requests: list[pb.DecideRequest], *, timeout_s: float = 2.0) -> list[pb.DecideResponse]:
        """One answer per request, in order (verify each record before acting on it)."""
        response = self._stub.DecideBatch(pb.DecideBatchRequest(requests=requests), timeout=timeout_s)
        return list(response.responses)

    def jwks(self, *, timeout_s: float = 2.0) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self._stub.GetJwks(pb.GetJwksRequest(), timeout=timeout_s).jwks)
        return loaded

    def report(
        self,
        decision_id: str,
        status: pb.ActionStatus.ValueType,
        *,
        result: dict[str, Any] | None = None,
        impact: dict[str, Any] | None = None,
        timeout_s: float = 2.0,
    ) -> pb.ReportOutcomeResponse:
        """Reports what the PEP did with one of its own ALLOWs, once (EXECUTED, FAILED, or BLOCKED
        when it did not act on it). A DENY or REQUIRE_APPROVAL takes no report: the PDP refuses it
        with FAILED_PRECONDITION (its signed record already says nothing may run)."""
        req = pb.ReportOutcomeRequest(decision_id=decision_id, status=status)
        req.result.update(result or {})
        req.impact.update(impact or {})
        response: pb.ReportOutcomeResponse = self._stub.ReportOutcome(req, timeout=timeout_s)
        return response

    def decide_with_approval(
        self,
        request: pb.DecideRequest,
        *,
        wait: float,
        jwks: dict[str, Any] | None = None,
        replay: ReplayCache | None = None,
        audience: str | None = None,
        timeout_s: float = 2.0,
        max_rounds: int = 4,
    ) -> tuple[pb.DecideResponse, VerifiedDecision]:
        """Decides ``request``; on REQUIRE_APPROVAL waits up to ``wait`` seconds in all for approvers
        to decide each escalation the PDP opens, and retries with every approval token obtained
        (a new request id each time), until the answer is not REQUIRE_APPROVAL or the time is up.

        The channel must carry the same client identity as the first call: only the caller whose
        decision opened an escalation may wait for it and fetch its tokens. The last record is
        verified against the whole request that got it (the action, the approval tokens, the
        request id) and, given ``audience`` (this PEP's name), against the caller it was made for.

        Returns:
            The last answer and its verified record (act only when ``outcome == "allow"``).

        Raises:
            VerificationError: the last answer's record does not verify for this request.
            grpc.RpcError: a call failed.
        """
        deadline = time.monotonic() + wait
        tokens: list[str] = list(request.approval_tokens)
        current = request
        response = self.decide(current, timeout_s=timeout_s)
        for round_ in range(1, max_rounds + 1):
            left = deadline - time.monotonic()
            if response.outcome != pb.OUTCOME_REQUIRE_APPROVAL or not response.escalation_id or left <= 0:
                break
            status = self._await(response.escalation_id, left)
            if status not in ("approved", "consumed"):
                break  # rejected, expired, or still open when the time was up
            got = self._approvals.GetApprovalTokens(
                apb.GetApprovalTokensRequest(escalation_id=response.escalation_id), timeout=timeout_s
            )
            tokens += [t for t in got.approval_tokens if t not in tokens]
            current = pb.DecideRequest()
            current.CopyFrom(request)
            if request.request_id:  # the retry is another request: the PDP keeps the first answer per id
                current.request_id = f"{request.request_id[:110]}.approved-{round_}"
            del current.approval_tokens[:]
            current.approval_tokens.extend(tokens)
            response = self.decide(current, timeout_s=timeout_s)
        decision = verify(
            response.record,
            self.jwks(timeout_s=timeout_s) if jwks is None else jwks,
            request=current,
            audience=audience,
            replay=replay or MemoryReplayCache(),
        )
        return response, decision

    def _await(self, escalation_id: str, left_s: float) -> str:
        """The escalation's status once it leaves ``open``, or ``open`` when ``left_s`` have passed.
        Streams WaitEscalation; when that fails (the PDP has too many waiters), polls the status instead."""
        deadline = time.monotonic() + left_s
        status = "open"
        stream = self._approvals.WaitEscalation(
            apb.WaitEscalationRequest(escalation_id=escalation_id, timeout_seconds=max(1, min(3600, int(left_s)))),
            timeout=left_s + 5,
        )
        try:
            for e in stream:
                status = e.status
                if status != "open":
                    stream.cancel()  # type: ignore[no-untyped-call]  # stubs lag grpcio
                    break
        except grpc.RpcError:
            # The PDP has too many waiters (or the stream broke): poll instead; a call the PDP refuses
            # (not authenticated, not this caller's escalation) raises from GetApprovalTokens.
            request = apb.GetApprovalTokensRequest(escalation_id=escalation_id)
            while status == "open" and time.monotonic() < deadline:
                status = self._approvals.GetApprovalTokens(request, timeout=5).status
                if status == "open":
                    time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
        return status


def is_loopback(address: str) -> bool:
    """Whether an address stays on this machine: ``host:port`` with ``localhost`` or a loopback IP,
    or a gRPC target naming a unix socket (``unix:``) or such a host (``dns:///``, ``ipv4:``, ``ipv6:``).
    Any other name may resolve anywhere."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:").rsplit(":", 1)[0].strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
