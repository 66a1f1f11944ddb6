"""Every figure of the governance report, computed from verified records alone (pure: no I/O).

Definitions (docs/report.md repeats them for readers of the report):

* The **period** is ``[since, until)`` on a decision's request time. Outcome reports and escalation
  steps count for the decisions (escalations) of the period whenever they were logged.
* **fail-closed**: a decision with no policy verdict (``indeterminate``), always a deny; its
  ``pdp.*`` code is not a policy rule, so it is counted under audit, not under rules. **denied**
  means denied by the policy (outcome deny, not fail-closed).
* **autonomy rate**: allows that carry no ``approval.accepted`` reason (no human took part), over
  all decisions. **escalation rate**: require_approval decisions over all decisions.
* **approval rate**: escalations opened in the period that were approved (or approved and
  consumed), over those that were closed (approved, rejected, expired, or closed by the kill
  switch); time to approval is from the opened step to the approved step. Both come from
  escalation records, and from the suspension records that name the open escalations the kill
  switch closed (it logs no escalation step for them).
* **audit completeness**: allows with at least one outcome report, over allows. An allow without
  one is *overdue* once its record's ``exp`` is before ``as_of`` (the newest record time in the
  verified log, so the figure is reproducible), else *pending*.
* **lineage completeness**: decisions with the PDP's provenance summary (``pdp.trust``) on
  classified data (a looked-up classification, ``pdp.facts.resource.classification``, other than
  ``public``) for which the PDP verified at least one lineage attestation (``pdp.trust.lineage``),
  over those decisions.
* **PDP codes**: reason codes the PDP itself gives, not the policy (:data:`PDP_CODES`: the kill
  switch's ``*.suspended``, a refused budget reservation, a reused or incomplete approval, and the
  ``pdp.*`` fail-closed codes): listed as the PDP's own, never as missing from the catalog.
* **kill switch**: suspension records made in the period (by their own time), and the decisions of
  the period denied by each ``*.suspended`` code (also those a suspension on another replica made).
* **shadow**: shadow records about the decisions of the period, whenever they were logged (a
  shadow record exists only for a divergence, so there is no agreement count to divide by).
* **percentiles**: nearest rank over the record's ``metrics`` timers (nanoseconds).
* Rates are ``null`` when their denominator is 0.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pdp.report.entries import (
    APPROVAL_ACCEPTED,
    DECISION,
    ESCALATION,
    KNOWN,
    OUTCOME,
    SHADOW,
    SUSPENSION,
    Entry,
)
from pdp.state import SUSPENSION_KINDS

SCHEMA = "pdp-report/1"
OUTCOMES = ("allow", "require_approval", "deny", "fail_closed")  # the four mutually exclusive kinds
PERCENTILES = (50, 90, 99)
TOP = 10
OVERDUE_LISTED = 20
_BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 48
KILLED = "closed_by_kill_switch"  # an escalation the kill switch closed (rejected) with its agent
ESCALATION_STATES = ("open", "approved", "consumed", "rejected", "expired", KILLED)
SUSPENDED_CODES = tuple(f"{kind}.suspended" for kind in SUSPENSION_KINDS)  # pdp.suspensions
PDP_CODES = frozenset(
    {
        *SUSPENDED_CODES,
        "budget.exceeded",  # pdp.budgets: a reservation that did not fit (the policy may give it too)
        "budget.review_threshold",  # pdp.budgets: a reservation past the ceiling usage moved above meanwhile
        "approval.reused",  # pdp.approvals.binding.REUSED
        "approval.incomplete",  # pdp.approvals.binding.INCOMPLETE
    }
)
"""Reason codes the PDP gives itself, not the policy; with every ``pdp.*`` code (fail-closed)."""
_APPROVED = ("approved", "consumed")
_DECIDED = ("approved", "consumed", "rejected", "expired", KILLED)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Period:
    """``[since, until)`` in unix seconds; None is open."""

    since: float | None = None
    until: float | None = None

    def __contains__(self, t: float) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


@dataclasses.dataclass
class _Allow:
    exp: int | None
    agent: str
    tool: str
    reported: bool = False


@dataclasses.dataclass
class _Escalation:
    opened: float | None = None
    approved: float | None = None
    final: str = ""


class Tally:
    """Accumulates entries in log order; :meth:`figures` gives the report's figures."""

    def __init__(self, *, period: Period) -> None:
        self.period = period
        self.as_of = 0.0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.kind_of: collections.Counter[str] = collections.Counter()
        self.minutes: collections.Counter[tuple[int, str]] = collections.Counter()
        self.first: float | None = None
        self.last: float | None = None
        self.with_approval = 0
        self.reasons: dict[str, dict[str, collections.Counter[str]]] = {}
        self.fail_closed: collections.Counter[str] = collections.Counter()
        self.allows: dict[str, _Allow] = {}
        self.timers: dict[str, list[int]] = collections.defaultdict(list)
        self.agents: dict[str, dict[str, Any]] = {}
        self.denied_agents: collections.Counter[str] = collections.Counter()
        self.denied_tools: collections.Counter[str] = collections.Counter()
        self.bundles: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.opa_versions: collections.Counter[str] = collections.Counter()
        self.masked: collections.Counter[str] = collections.Counter()
        self.erased: collections.Counter[str] = collections.Counter()
        self.decisions_masked = self.decisions_erased = 0
        self.with_trust = self.classified = self.lineage_verified = 0
        self.escalations: dict[str, _Escalation] = {}
        self.escalation_records = 0
        self.period_decisions: set[str] = set()  # the decisions of the period (shadow records count for them)
        self.divergences: collections.Counter[str] = collections.Counter()
        self.candidates: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.switches: list[dict[str, Any]] = []
        self.unreadable: collections.Counter[str] = collections.Counter()

    def add(self, e: Entry) -> None:
        """Counts one entry (entries come in log order)."""
        self.kinds[e.kind] += 1
        self.as_of = max(self.as_of, e.time)
        if e.kind == DECISION:
            if e.time in self.period:
                self._decision(e)
        elif e.kind == OUTCOME:
            allow = self.allows.get(e.decision_id)
            if allow is not None:
                allow.reported = True
        elif e.kind == ESCALATION:
            self._escalation(e)
        elif e.kind == SHADOW:
            self._shadow(e)
        elif e.kind == SUSPENSION:
            self._suspension(e)

    def _decision(self, e: Entry) -> None:
        kind = "fail_closed" if e.indeterminate else e.outcome if e.outcome in OUTCOMES else "deny"
        self.kind_of[kind] += 1
        self.minutes[(int(e.time // 60), kind)] += 1
        self.first = e.time if self.first is None else min(self.first, e.time)
        self.last = e.time if self.last is None else max(self.last, e.time)
        self.period_decisions.add(e.decision_id)
        agent = self.agents.get(e.agent)
        if agent is None:  # not setdefault: that would build the default for every decision
            agent = self.agents[e.agent] = {
                "decisions": 0,
                **dict.fromkeys(OUTCOMES, 0),
                "tools": set(),
                "first": e.time,
                "last": e.time,
            }
        agent["decisions"] += 1
        agent[kind] += 1
        agent["tools"].add(e.tool)
        agent["first"], agent["last"] = min(agent["first"], e.time), max(agent["last"], e.time)
        if kind == "allow":
            self.allows[e.decision_id] = _Allow(e.exp, e.agent, e.tool)
            self.with_approval += APPROVAL_ACCEPTED in e.reasons
        elif kind == "deny":
            self.denied_agents[e.agent] += 1
            self.denied_tools[e.tool] += 1
        if kind == "fail_closed":
            self.fail_closed[e.error_code or "pdp.no_verdict"] += 1
        else:
            for code in dict.fromkeys(e.reasons):
                fired = self.reasons.get(code)
                if fired is None:
                    fired = self.reasons[code] = {"by_agent": collections.Counter(), "by_tool": collections.Counter()}
                fired["by_agent"][e.agent] += 1
                fired["by_tool"][e.tool] += 1
        for name, ns in e.timers_ns:
            self.timers[name].append(ns)
        for name, revision in e.bundles:
            self.bundles[name][revision] += 1
        if e.opa_version:
            self.opa_versions[e.opa_version] += 1
        self.masked.update(e.masked)
        self.erased.update(e.erased)
        self.decisions_masked += bool(e.masked)
        self.decisions_erased += bool(e.erased)
        if e.has_trust:
            self.with_trust += 1
            if e.classification and e.classification != "public":
                self.classified += 1
                self.lineage_verified += e.lineage_verified

    def _escalation(self, e: Entry) -> None:
        self.escalation_records += 1
        esc = self.escalations.setdefault(e.escalation_id or e.decision_id, _Escalation())
        if e.step == "opened":
            esc.opened = e.time
        elif e.step in _APPROVED and esc.approved is None:
            esc.approved = e.time
        if e.step in _DECIDED and (not esc.final or e.step == "consumed"):  # the first verdict; then its use
            esc.final = e.step

    def _shadow(self, e: Entry) -> None:
        s = e.shadow
        if s is None:
            self.unreadable[e.kind] += 1
            return
        if s.decision_id not in self.period_decisions:  # a decision outside the period
            return
        self.divergences[s.divergence] += 1
        for name, bundle in s.bundles.items():
            revision = bundle.get("revision", "") if isinstance(bundle, dict) else ""
            self.candidates[str(name)][str(revision)] += 1

    def _suspension(self, e: Entry) -> None:
        s = e.suspension
        if s is None:
            self.unreadable[e.kind] += 1
            return
        # The kill switch rejects the agent's open escalations and names them here, not in escalation
        # steps: each is closed whenever the suspension was made (a rejected step cannot come after).
        for eid in s.closed_escalations:
            esc = self.escalations.setdefault(str(eid), _Escalation())
            if esc.final in ("", "rejected"):
                esc.final = KILLED
        if e.time not in self.period:
            return
        self.switches.append(
            {
                "action": s.action,
                "kind": s.kind,
                "value": s.value,
                "by": s.requested_by,
                "operator": s.operator,
                "reason": s.reason,
                "at": s.timestamp,
                "until": s.until or None,
                "closed_escalations": [str(eid) for eid in s.closed_escalations],
                "was_active": s.was_active,
            }
        )

    def figures(self, *, catalog: Mapping[str, str] | None, provenance: Mapping[str, Any]) -> dict[str, Any]:
        """The report's figures as one JSON-ready document.

        Args:
            catalog: reason code → catalog anchor for every rule of the bundle; None: no bundle given.
            provenance: the verified log's checkpoint and counts, copied into ``provenance``.
        """
        n = sum(self.kind_of.values())
        allow = self.kind_of["allow"]
        return {
            "schema": SCHEMA,
            "period": {
                "since": _iso(self.period.since),
                "until": _iso(self.period.until),
                "first_decision": _iso(self.first),
                "last_decision": _iso(self.last),
                "as_of": _iso(self.as_of or None),
            },
            "decisions": {
                "total": n,
                "by_outcome": {k: self.kind_of[k] for k in OUTCOMES},
                "over_time": self._over_time(),
            },
            "autonomy": {
                "allowed_without_human": allow - self.with_approval,
                "allowed_after_approval": self.with_approval,
                "autonomy_rate": _rate(allow - self.with_approval, n),
                "escalated": self.kind_of["require_approval"],
                "escalation_rate": _rate(self.kind_of["require_approval"], n),
            },
            "escalations": self._escalation_figures(),
            "rules": self._rules(n, catalog),
            "audit": self._audit(),
            "kill_switch": self._kill_switch(),
            "shadow": self._shadow_figures(),
            "lineage": {
                "source": "provenance summary" if self.with_trust else "none",
                "decisions_with_summary": self.with_trust,
                "on_classified_data": self.classified,
                "with_verified_lineage": self.lineage_verified,
                "completeness": _rate(self.lineage_verified, self.classified),
                "note": ""
                if self.with_trust
                else "no decision in the period carries a provenance summary (pdp.trust): "
                "the log predates it, so lineage completeness cannot be computed from it",
            },
            "latency": {
                "method": "nearest rank",
                "timers": {name: _percentiles(values) for name, values in sorted(self.timers.items())},
            },
            "denials": {
                "top_agents": _top(self.denied_agents),
                "top_tools": _top(self.denied_tools),
            },
            "agents": {
                name: {**a, "tools": sorted(a["tools"]), "first": _iso(a["first"]), "last": _iso(a["last"])}
                for name, a in sorted(self.agents.items())
            },
            "privacy": {
                "decisions_masked": self.decisions_masked,
                "decisions_erased": self.decisions_erased,
                "masked": dict(sorted(self.masked.items())),
                "erased": dict(sorted(self.erased.items())),
            },
            "provenance": {
                **provenance,
                "records": dict(sorted(self.kinds.items())),
                "unknown_record_types": {k: v for k, v in sorted(self.kinds.items()) if k not in KNOWN},
                "unreadable_records": dict(sorted(self.unreadable.items())),
                "bundles": {name: dict(sorted(revs.items())) for name, revs in sorted(self.bundles.items())},
                "opa_versions": dict(sorted(self.opa_versions.items())),
            },
        }

    def _over_time(self) -> dict[str, Any]:
        if not self.minutes:
            return {"bucket_s": 60, "buckets": []}
        lo = min(m for m, _ in self.minutes) * 60
        hi = max(m for m, _ in self.minutes) * 60
        size = next((b for b in _BUCKETS if (hi // b - lo // b) < _MAX_BUCKETS), _BUCKETS[-1])
        counts: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for (minute, kind), c in self.minutes.items():
            counts[minute * 60 // size * size][kind] += c
        buckets = []
        for start in range(lo // size * size, hi + 1, size):
            buckets.append({"start": _iso(start), **{k: counts[start][k] for k in OUTCOMES}})
        return {"bucket_s": size, "buckets": buckets}

    def _escalation_figures(self) -> dict[str, Any]:
        opened = {k: e for k, e in self.escalations.items() if e.opened is not None and e.opened in self.period}
        decided = [e for e in opened.values() if e.final in _DECIDED]
        approved = [e for e in opened.values() if e.final in _APPROVED]
        waits = sorted(int(e.approved - e.opened) for e in approved if e.approved is not None and e.opened is not None)
        by_final = collections.Counter(e.final or "open" for e in opened.values())
        return {
            "source": "escalation records" if self.escalation_records else "none",
            "opened": len(opened),
            "by_state": {k: by_final[k] for k in ESCALATION_STATES},
            "approval_rate": _rate(len(approved), len(decided)) if self.escalation_records else None,
            "time_to_approval_s": _percentiles(waits) if self.escalation_records else None,
            "note": ""
            if self.escalation_records
            else "the log holds no escalation records (it predates them, or none was opened): approval rate "
            "and time to approval are not computed; escalation rate counts require_approval decisions",
        }

    def _rules(self, n: int, catalog: Mapping[str, str] | None) -> dict[str, Any]:
        fired = {
            code: {
                "count": sum(c["by_agent"].values()),
                "fire_rate": _rate(sum(c["by_agent"].values()), n),
                "catalog": catalog.get(code) if catalog is not None else None,
                "by_agent": dict(sorted(c["by_agent"].items())),
                "by_tool": dict(sorted(c["by_tool"].items())),
            }
            for code, c in sorted(self.reasons.items())
        }
        pdp_codes = sorted(code for code in fired if is_pdp_code(code))
        return {
            "fired": fired,
            "catalog": catalog is not None,
            "never_fired": sorted(set(catalog) - set(fired)) if catalog is not None else None,
            "not_in_catalog": sorted(set(fired) - set(catalog) - set(pdp_codes)) if catalog is not None else None,
            "pdp_codes": pdp_codes,
        }

    def _kill_switch(self) -> dict[str, Any]:
        actions = collections.Counter(s["action"] for s in self.switches)
        return {
            "source": "suspension records" if self.switches else "none",
            "suspended": actions["suspend"],
            "resumed": actions["resume"],
            "changes": self.switches,
            "escalations_closed": sum(len(s["closed_escalations"]) for s in self.switches),
            "denied_by_code": {
                code: sum(self.reasons[code]["by_agent"].values()) if code in self.reasons else 0
                for code in SUSPENDED_CODES
            },
            "note": ""
            if self.switches
            else "the log holds no suspension record in the period: the kill switch was not thrown here "
            "(a suspension made on another replica is in that replica's log; its denials are counted)",
        }

    def _shadow_figures(self) -> dict[str, Any]:
        return {
            "source": "shadow records" if self.divergences else "none",
            "divergences": sum(self.divergences.values()),
            "by_kind": dict(sorted(self.divergences.items())),
            "candidates": {name: dict(sorted(revs.items())) for name, revs in sorted(self.candidates.items())},
            "note": ""
            if self.divergences
            else "the log holds no shadow record about a decision of the period: no candidate policy ran "
            "in shadow, or it never diverged from the live one",
        }

    def _audit(self) -> dict[str, Any]:
        reported = sum(a.reported for a in self.allows.values())
        overdue = [
            (did, a)
            for did, a in self.allows.items()
            if not a.reported and a.exp is not None and a.exp < self.as_of  # exp < as_of: expired, unreported
        ]
        return {
            "allows": len(self.allows),
            "allows_with_outcome": reported,
            "outcome_coverage": _rate(reported, len(self.allows)),
            "allows_overdue": len(overdue),
            "allows_pending": len(self.allows) - reported - len(overdue),
            "overdue": [{"decision_id": did, "agent": a.agent, "tool": a.tool} for did, a in overdue[:OVERDUE_LISTED]],
            "fail_closed": {"total": sum(self.fail_closed.values()), "by_code": dict(sorted(self.fail_closed.items()))},
        }


def compute(
    entries: Iterable[Entry],
    *,
    period: Period | None = None,
    catalog: Mapping[str, str] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's figures for these entries (in log order)."""
    tally = Tally(period=period or Period())
    for e in entries:
        tally.add(e)
    return tally.figures(catalog=catalog, provenance=provenance or {})


def is_pdp_code(code: str) -> bool:
    """Whether the PDP itself gives this reason code (:data:`PDP_CODES`, or a ``pdp.*`` code)."""
    return code in PDP_CODES or code.startswith("pdp.")


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percentile(sorted_values: Sequence[int], p: int) -> int:
    """Nearest-rank percentile of sorted, non-empty values."""
    return sorted_values[max(math.ceil(p / 100 * len(sorted_values)), 1) - 1]


def _percentiles(values: list[int]) -> dict[str, int] | None:
    if not values:
        return None
    values.sort()
    return {"count": len(values), **{f"p{p}": percentile(values, p) for p in PERCENTILES}, "max": values[-1]}


def _top(counter: collections.Counter[str]) -> list[list[Any]]:
    return [[name, c] for name, c in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
