"""The decision pipeline: context → OPA → verdict → signed record → durable log, in one straight line.

Nothing here knows about gRPC; the servicer converts at the edges.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from pdp.approvals.binding import ApprovalsStep, Bound, bind_nothing
from pdp.authz import identity_of
from pdp.budgets import Budgets, Counter
from pdp.config import Settings
from pdp.context import Caller, build
from pdp.decision import Decision
from pdp.digest import request_digest
from pdp.errors import InvalidArgument, LedgerUnavailable, NoVerdict, PolicyMalformed
from pdp.explain import Explainer
from pdp.limits import RateLimiter
from pdp.opa import OpaAnswer, OpaClient
from pdp.policy.masking import Pointers
from pdp.policy.pipeline import Lifecycle
from pdp.policy.shadow import Live
from pdp.recorder import Recorder, Signed
from pdp.records import digest, unverified_claims
from pdp.schema import DecisionClaims, DecisionRecord
from pdp.state import StateStore, StateUnavailable
from pdp.suspensions import SuspensionList, suspended_verdict
from pdp.telemetry import SPAN_CONTEXT, SPAN_EXPLAIN, SPAN_RECORD, SPAN_RESERVE, SPAN_STATE, Telemetry
from pdp.trust import TrustVerifier, Verified
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import Outcome, Verdict, fail_closed, interpret, made_by_pdp

__all__ = ["Decider", "Decision"]

log = logging.getLogger(__name__)

# Time kept back from the caller's deadline to record (sign, append, fsync) and send the
# fail-closed answer in; fsync p99 is a few milliseconds on ordinary disks, a busy host adds scheduling.
_ANSWER_MARGIN_S = 0.05


class Decider:
    """Runs the pipeline with injected collaborators.

    Args:
        opa: the OPA client.
        recorder: signs each decision and appends it to the durable log.
        decision_path: the rule path queried, for provenance.
        opa_timeout_s: longest wait for OPA when the caller's deadline is further away.
        explainer: traces a decision when the caller asks for an explanation (None: never traced;
            such answers say the explanation was omitted).
        max_depth: deepest nesting accepted in Struct fields.
        telemetry: where the pipeline's spans go.
        max_batch: most requests one DecideBatch call may carry.
        store: the shared state store (escalations, consumed approvals, budgets, suspensions).
        approvals: the approvals step (verify tokens, consume them, open escalations); None: the
            request's approval tokens are all ignored and nothing is escalated.
        suspensions: the kill switch's list (default: read from ``store``); shared with the admin
            service so that a suspension made here is in force here at once.
        rate_limiter: decisions per caller per second (PDP_DECIDE_RATE); None: no limit.
        lifecycle: bundle key ids, policy-driven masks and the shadow candidate (:mod:`pdp.policy.pipeline`).
        trust: verifies the tokens requests carry (default: no trusted issuer, nothing verified).
    """

    def __init__(
        self,
        *,
        opa: OpaClient,
        recorder: Recorder,
        decision_path: str,
        opa_timeout_s: float,
        max_depth: int,
        explainer: Explainer | None = None,
        telemetry: Telemetry,
        max_batch: int = Settings.max_batch,
        store: StateStore | None = None,
        approvals: ApprovalsStep | None = None,
        suspensions: SuspensionList | None = None,
        rate_limiter: RateLimiter | None = None,
        lifecycle: Lifecycle | None = None,
        trust: TrustVerifier | None = None,
    ) -> None:
        self._trust = trust or TrustVerifier()
        self._lifecycle = lifecycle or Lifecycle()
        self._opa = opa
        self._recorder = recorder
        self._tracer = telemetry.tracer
        self._path = decision_path
        self._timeout = opa_timeout_s
        self._explainer = explainer
        self._max_depth = max_depth
        self._max_batch = max_batch
        self._store = store
        self._approvals = approvals
        self._telemetry = telemetry
        self._budgets = Budgets(store, telemetry) if store is not None else None
        self._suspensions = suspensions or (SuspensionList(store) if store is not None else None)
        self._rate = rate_limiter or RateLimiter(rate=0, burst=0)

    def decide(self, request: pb.DecideRequest, *, caller: Caller, time_remaining_s: float | None) -> Decision:
        """Decides one request. Never raises for a missing verdict or record: that is a DENY.

        A retry (same request id, same caller, same request) returns the logged record of the
        first answer instead of deciding again.

        Raises:
            InvalidArgument: the request is malformed, or its request id was used for another request.
            RateLimited: the caller is over ``PDP_DECIDE_RATE``.
        """
        return self._decide([request], caller=caller, time_remaining_s=time_remaining_s, batch=False)[0]

    def decide_batch(
        self, requests: Sequence[pb.DecideRequest], *, caller: Caller, time_remaining_s: float | None
    ) -> list[Decision]:
        """Decides several requests in one policy evaluation; each answer is what :meth:`decide`
        would give for that request alone, in request order.

        Raises:
            InvalidArgument: a request is malformed, asks for an explanation, or repeats another's
                request id (the field is named ``requests[i].…``); nothing is decided then.
        """
        if not requests:
            raise InvalidArgument("requests", "is empty")
        if len(requests) > self._max_batch:
            raise InvalidArgument("requests", f"has {len(requests)} requests; PDP_MAX_BATCH allows {self._max_batch}")
        seen: dict[str, int] = {}
        for i, r in enumerate(requests):
            if r.explain:
                raise InvalidArgument(f"requests[{i}].explain", "explanations are per Decide call, not in DecideBatch")
            if r.request_id in seen:
                raise InvalidArgument(f"requests[{i}].request_id", f"repeats requests[{seen[r.request_id]}].request_id")
            if r.request_id:
                seen[r.request_id] = i
        return self._decide(requests, caller=caller, time_remaining_s=time_remaining_s, batch=True)

    def _decide(
        self, requests: Sequence[pb.DecideRequest], *, caller: Caller, time_remaining_s: float | None, batch: bool
    ) -> list[Decision]:
        start = time.perf_counter_ns()
        caller_doc = caller.to_dict()
        identity = identity_of(caller_doc)
        self._rate.take(identity or caller.peer.rsplit(":", 1)[0], len(requests))
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        now_s = int(time.time())
        with self._tracer.start_as_current_span(SPAN_CONTEXT):
            inputs: list[dict[str, Any]] = []
            checked: list[Verified] = []
            for i, r in enumerate(requests):
                with _naming(i if batch else None):
                    doc, verified = build(
                        r, caller=caller, request_time=now, max_depth=self._max_depth, trust=self._trust
                    )
                inputs.append(doc)
                checked.append(verified)
            bounds = [
                self._bind_approvals(doc, r.approval_tokens, now_s) for doc, r in zip(inputs, requests, strict=True)
            ]
        request_digests = [request_digest(r) for r in requests]  # the whole request, tokens included
        decision_ids = [
            self._recorder.decision_id(request_id=r.request_id, caller=identity, request_digest=d)
            for r, d in zip(requests, request_digests, strict=True)
        ]
        decisions: list[Decision | None] = [None] * len(requests)
        retriable = [d for d, r in zip(decision_ids, requests, strict=True) if r.request_id]
        with self._recorder.exclusive(retriable):
            for i, r in enumerate(requests):
                with _naming(i if batch else None):
                    earlier = self._recorder.existing(decision_ids[i], request_digests[i]) if r.request_id else None
                if earlier is not None:
                    again = _replayed(earlier, path=self._path)
                    decisions[i] = self._approvals.replayed(again, now=now_s) if self._approvals else again
            todo = [i for i, d in enumerate(decisions) if d is None]
            verdicts, hide = self._governed([inputs[i] for i in todo], time_remaining_s, batch)
            made = [
                dataclasses.replace(
                    self._decision(decision_ids[i], requests[i], inputs[i], answer, verdict),
                    principal_id=(checked[i].principal or {}).get("id", ""),
                    trust=checked[i].summary(),
                    audience=caller.audience,
                )
                for i, (answer, verdict) in zip(todo, verdicts, strict=True)
            ]
            if requests[0].explain and made:  # one Decide call: DecideBatch refuses explanations
                elapsed_s = (time.perf_counter_ns() - start) / 1e9
                left = None if time_remaining_s is None else time_remaining_s - elapsed_s
                made = [self._explained(made[0], inputs[0], verdicts[0][0], left)]
            made = _afresh_when_failed(self._consumed(self._reserved(made), [bounds[i] for i in todo], now_s))
            recorded = self._record(made, [inputs[i] for i in todo], [request_digests[i] for i in todo], hide)
            for i, d in zip(todo, recorded, strict=True):
                decisions[i] = self._approvals.logged(d, inputs[i], now=now_s) if self._approvals else d
        self._lifecycle.after(
            [
                _live(d, inputs[i])
                for i, d in zip(todo, recorded, strict=True)
                if not d.verdict.indeterminate and not made_by_pdp(r.rule for r in d.verdict.reasons)
            ]
        )
        total = time.perf_counter_ns() - start
        return [dataclasses.replace(d, total_ns=total) for d in decisions if d is not None]

    def _governed(
        self, inputs: list[dict[str, Any]], time_remaining_s: float | None, batch: bool
    ) -> tuple[list[tuple[OpaAnswer | None, Verdict]], list[Pointers]]:
        """Suspensions and budget usage (issue 20) bound before the policy runs, then the policy.

        A suspended agent, principal or tool is a DENY without asking OPA; a store that cannot be
        read is a DENY (``pdp.state_unavailable``) for every decision it would have to answer; their
        records hide what a record must hide when the policy cannot say.
        """
        if self._budgets is None or self._suspensions is None:
            return self._evaluate(inputs, time_remaining_s, batch)
        stopped: list[Verdict | None] = []
        bound: list[frozenset[Counter]] = []
        with self._tracer.start_as_current_span(SPAN_STATE):
            for doc in inputs:
                try:
                    suspension = self._suspensions.match(doc)
                    bound.append(self._budgets.bind_usage(doc))
                except StateUnavailable as e:
                    stopped.append(fail_closed(e))
                    bound.append(frozenset())
                    continue
                if suspension is not None:
                    self._telemetry.suspension_denials.add(1, {"kind": suspension.kind})
                stopped.append(suspended_verdict(suspension) if suspension else None)
        asked = [doc for doc, v in zip(inputs, stopped, strict=True) if v is None]
        evaluated, hidden = self._evaluate(asked, time_remaining_s, batch)
        answers, masks = iter(evaluated), iter(hidden)
        out: list[tuple[OpaAnswer | None, Verdict]] = []
        hide: list[Pointers] = []
        for doc, stop, counters in zip(inputs, stopped, bound, strict=True):
            if stop is not None:
                out.append((None, stop))
                hide.append(self._lifecycle.unknown([doc])[0])
                continue
            (answer, verdict), mask = next(answers), next(masks)
            missing = self._budgets.unbound(doc, verdict, counters)
            if missing:  # the policy claimed a counter whose usage it did not see: ask again with it bound
                try:
                    self._budgets.bind_usage(doc, counters | missing)
                    again, masked = self._evaluate([doc], time_remaining_s, False)
                    (answer, verdict), mask = again[0], masked[0]
                except StateUnavailable as e:
                    verdict = fail_closed(e)
            out.append((answer, verdict))
            hide.append(mask)
        return out, hide

    def _reserved(self, made: list[Decision]) -> list[Decision]:
        """Budgets (issue 20): each ALLOW's claims reserved atomically before it is recorded; DENY
        ``budget.exceeded`` when they do not fit, fail closed when the store cannot be used."""
        out = []
        for d in made:
            v = d.verdict
            if v.outcome is Outcome.ALLOW and v.budgets:
                with self._tracer.start_as_current_span(SPAN_RESERVE) as span:
                    try:
                        if self._budgets is None:
                            raise StateUnavailable("no state store: budget claims cannot be reserved")
                        v = self._budgets.reserve(d.decision_id, v)
                    except StateUnavailable as e:
                        v = fail_closed(e)
                    except ValueError as e:
                        v = fail_closed(PolicyMalformed(f"budgets: {e}"))
                    span.set_attribute("pdp.budget.names", [c.budget for c in d.verdict.budgets])
                    span.set_attribute("pdp.budget.reserved", v.outcome is Outcome.ALLOW)
            out.append(dataclasses.replace(d, verdict=v))
        return out

    def settle(self, decision_id: str, *, status: str) -> None:
        """Settles the decision's budget reservation on its outcome report (``executed`` keeps it,
        ``failed``/``blocked`` release it). A store that cannot be written leaves it counted."""
        if self._budgets is None:
            return
        try:
            self._budgets.settle(decision_id, status=status)
        except StateUnavailable as e:
            log.warning("decision %s: reservation not settled (%s); it stays counted", decision_id, e)

    def _evaluate(
        self, inputs: list[dict[str, Any]], time_remaining_s: float | None, batch: bool
    ) -> tuple[list[tuple[OpaAnswer | None, Verdict]], list[Pointers]]:
        """One policy evaluation for all of ``inputs``: a verdict for each, or fail-closed for each,
        and what each one's record must hide (all but who asked, when nobody can say)."""
        if not inputs:
            return [], []
        timeout = self._timeout
        if time_remaining_s is not None:
            timeout = min(timeout, time_remaining_s - _ANSWER_MARGIN_S)
        try:
            if batch:
                answers = self._opa.query_batch(inputs, timeout_s=timeout)
            else:
                answers = [self._opa.query(inputs[0], timeout_s=timeout)]
            answers, hide = self._lifecycle.split(answers, inputs, timeout_s=timeout)
        except NoVerdict as e:
            log.warning("%d decision(s) failed closed: %s (%s)", len(inputs), e.error_code, e)
            return [(None, fail_closed(e))] * len(inputs), self._lifecycle.unknown(inputs)
        verdicts: list[tuple[OpaAnswer | None, Verdict]] = []
        for answer in answers:
            try:
                verdicts.append((answer, interpret(answer.result, defined=answer.defined)))
            except NoVerdict as e:
                log.warning("a decision failed closed: %s (%s)", e.error_code, e)
                verdicts.append((answer, fail_closed(e)))
        return verdicts, hide

    def _decision(
        self,
        decision_id: str,
        request: pb.DecideRequest,
        input_doc: dict[str, Any],
        answer: OpaAnswer | None,
        verdict: Verdict,
    ) -> Decision:
        return Decision(
            decision_id=decision_id,
            request_id=request.request_id,
            verdict=verdict,
            agent_id=input_doc["agent"]["id"],
            tool=input_doc["action"]["tool"],
            decision_path=self._path,
            opa_version=answer.opa_version if answer else "",
            bundle_revisions=answer.bundle_revisions if answer else {},
            bundle_signing_keys=self._lifecycle.signing_keys(answer.bundle_revisions) if answer else {},
            explain=request.explain,
            opa_ns=answer.roundtrip_ns if answer else 0,
            opa_eval_ns=answer.eval_ns if answer else 0,
        )

    def _explained(
        self, d: Decision, input_doc: dict[str, Any], answer: OpaAnswer | None, time_left_s: float | None
    ) -> Decision:
        """``d`` with its explanation (see :mod:`pdp.explain`), or with why there is none."""
        if answer is None:
            because = d.verdict.error_code or ", ".join(r.code for r in d.verdict.reasons)
            why = f"omitted: the policy was not asked ({because})"
            return dataclasses.replace(d, explanation_omitted=why)
        if self._explainer is None:
            return dataclasses.replace(d, explanation_omitted="omitted: this PDP traces no decisions")
        with self._tracer.start_as_current_span(SPAN_EXPLAIN):
            got = self._explainer.explain(input_doc, d.explain, revisions=d.bundle_revisions, time_left_s=time_left_s)
        return dataclasses.replace(d, explanation=got.events, explanation_omitted=got.omitted)

    def _consumed(self, made: list[Decision], bounds: list[Bound], now_s: int) -> list[Decision]:
        """Approvals (issue 14): an ALLOW resting on approval tokens consumes them once its budget is
        reserved and before it is recorded, so a budget refusal never burns an approval; an ALLOW whose
        tokens cannot be consumed becomes a DENY and gives its reservation back."""
        if self._approvals is None:
            return made
        out = []
        for d, bound in zip(made, bounds, strict=True):
            verdict, claims = self._approvals.consume(d.verdict, bound, now=now_s)
            if d.verdict.outcome is Outcome.ALLOW and verdict.outcome is not Outcome.ALLOW and d.verdict.budgets:
                self.settle(d.decision_id, status="failed")
            out.append(dataclasses.replace(d, verdict=verdict, approvals=claims))
        return out

    def _bind_approvals(self, input_doc: dict[str, Any], tokens: Sequence[str], now_s: int) -> Bound:
        """The approvals step before the policy: only tokens the PDP verifies reach the input."""
        if self._approvals is None:
            return bind_nothing(input_doc, tokens)
        return self._approvals.bind(input_doc, tokens, now=now_s)

    def _record(
        self, made: list[Decision], inputs: list[dict[str, Any]], request_digests: list[str], hide: list[Pointers]
    ) -> list[Decision]:
        """Signs and durably logs the decisions; if that fails, every one of them is a DENY."""
        if not made:
            return []
        entries = [
            (_record_of(d, doc, digest_), doc) for d, doc, digest_ in zip(made, inputs, request_digests, strict=True)
        ]
        try:
            with self._tracer.start_as_current_span(SPAN_RECORD):
                signed = self._recorder.record_decisions(entries, hide=hide)
        except LedgerUnavailable as e:
            # Not durable, so not a decision anyone may act on: DENY, whatever the policy said.
            log.error("%d decision(s) could not be recorded: %s", len(made), e)
            for d in made:  # budgets: nobody may act on them, so nothing they reserved is used
                if d.verdict.budgets and d.verdict.outcome is Outcome.ALLOW:
                    self.settle(d.decision_id, status="failed")
            return [dataclasses.replace(d, verdict=fail_closed(e)) for d in made]
        return [
            dataclasses.replace(d, record=s.record, log_index=s.log_index) for d, s in zip(made, signed, strict=True)
        ]


def _record_of(d: Decision, input_doc: dict[str, Any], request_digest: str) -> DecisionRecord:
    """The record of a decision, as far as the pipeline knows it (the recorder adds the rest)."""
    v = d.verdict
    keys = d.bundle_signing_keys
    return DecisionRecord(
        decision_id=d.decision_id,
        path=d.decision_path,
        result=v.to_dict(),
        # revisions, and the key each bundle was verified with
        bundles={
            name: {"revision": rev, "signing_key": keys[name]} if name in keys else {"revision": rev}
            for name, rev in d.bundle_revisions.items()
        },
        timestamp=input_doc["bound"]["time"],
        metrics={"timer_rego_query_eval_ns": d.opa_eval_ns, "timer_pdp_opa_roundtrip_ns": d.opa_ns},
        pdp=DecisionClaims(
            request_id=d.request_id,
            request_digest=request_digest,
            caller=input_doc["bound"]["caller"],
            aud=d.audience,
            agent={"id": input_doc["agent"]["id"], **input_doc["asserted"]["agent"]},
            tool=input_doc["action"]["tool"],
            # The verified principal; the caller's word for it stays in the input (asserted).
            principal=d.principal_id,
            action_digest=input_doc["bound"]["action_digest"],
            trust=d.trust,
            facts=v.facts,
            outcome=v.outcome.value,
            reasons=tuple(r.code for r in v.reasons),
            obligations=tuple(o.to_dict() for o in v.obligations),
            indeterminate=v.indeterminate,
            error_code=v.error_code,
            explanation_digest=digest(d.explanation) if d.explain else "",
            opa_version=d.opa_version,
            approvals=d.approvals,
        ),
    )


@contextlib.contextmanager
def _naming(i: int | None) -> Iterator[None]:
    """Names the batch element in an InvalidArgument raised inside (``requests[i].field``)."""
    try:
        yield
    except InvalidArgument as e:
        if i is None:
            raise
        raise InvalidArgument(f"requests[{i}].{e.field}", e.problem) from None


def _afresh_when_failed(made: list[Decision]) -> list[Decision]:
    """A decision that failed closed (no verdict: OPA, the state store) is logged under an id of its
    own, so that a retry of the request after the outage is decided afresh rather than replayed."""
    return [dataclasses.replace(d, decision_id=str(uuid.uuid4())) if d.verdict.indeterminate else d for d in made]


def _live(d: Decision, input_doc: dict[str, Any]) -> Live:
    """A recorded live decision, for the shadow candidate (which sees the unmasked input)."""
    v = d.verdict
    return Live(
        decision_id=d.decision_id,
        log_index=d.log_index,
        record=d.record,
        outcome=v.outcome.value,
        reasons=tuple(r.code for r in v.reasons),
        input=input_doc,
    )


def _replayed(earlier: Signed, *, path: str) -> Decision:
    """The answer to a retry: the first answer's verdict, with its record (no explanation)."""
    record = DecisionRecord.from_dict(unverified_claims(earlier.record))
    return Decision(
        decision_id=record.decision_id,
        request_id=record.pdp.request_id,
        verdict=interpret(record.result),
        agent_id=record.pdp.agent["id"],
        tool=record.pdp.tool,
        decision_path=path,
        opa_version=record.pdp.opa_version,
        bundle_revisions={name: b["revision"] for name, b in record.bundles.items()},
        bundle_signing_keys={name: b["signing_key"] for name, b in record.bundles.items() if "signing_key" in b},
        record=earlier.record,
        log_index=earlier.log_index,
    )
