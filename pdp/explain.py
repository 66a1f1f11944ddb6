"""Explanations (Decide's ``explain``): OPA's trace of a decision, asked for after its verdict and apart from it.

Tracing an evaluation costs many times the evaluation itself (the bundle's full trace of one
healthcare request: megabytes of events, and far more for a request with long argument lists),
and the caller chooses both the level and the input. So an explanation never decides anything
and never holds a decision up past its caller's deadline:

- the verdict comes from the ordinary query (coalesced with other callers'); the explanation from
  a second, traced query of the decision rule with the same input;
- at most ``lanes`` traced queries are at OPA at once (``PDP_EXPLAIN_CONCURRENCY``), so callers
  asking for explanations cannot take OPA's CPU from everybody else's decisions;
- each waits for a lane and for OPA no longer than ``PDP_OPA_EXPLAIN_TIMEOUT_MS`` and the caller's
  deadline allow; an answer larger than ``PDP_MAX_EXPLANATION_BYTES`` is left unread.

When one of these stops it, or OPA traced another bundle revision than the verdict's, the answer
carries no events and says why (``Explanation.omitted``); the decision stands as it was made.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from pdp.errors import NoVerdict, OpaTimeout
from pdp.opa import OpaClient

_MARGIN_S = 0.05  # left to answer the caller once the explanation is in


@dataclasses.dataclass(frozen=True)
class Explanation:
    """OPA's trace events, or none and why."""

    events: list[dict[str, Any]]
    omitted: str = ""


class Explainer:
    """Traces decisions within bounds (see the module docs); thread-safe.

    Args:
        opa: a client of the plain decision rule, with its answers capped in size.
        timeout_s: the longest an explanation may take (waiting for a lane included).
        lanes: traced queries at OPA at once.
    """

    def __init__(self, opa: OpaClient, *, timeout_s: float, lanes: int = 1) -> None:
        self._opa = opa
        self._timeout = timeout_s
        self._lanes = threading.BoundedSemaphore(lanes)
        self._lane_count = lanes

    def explain(
        self, input_doc: dict[str, Any], level: int, *, revisions: dict[str, str], time_left_s: float | None
    ) -> Explanation:
        """The trace of ``input_doc``'s decision at ``level``, if it can be had in time.

        Args:
            revisions: the bundle revisions the verdict was made with; a trace of others is omitted.
            time_left_s: until the caller's deadline (None: no deadline).
        """
        budget = self._timeout if time_left_s is None else min(self._timeout, time_left_s - _MARGIN_S)
        if budget <= 0:
            return Explanation([], "omitted: no time was left before the caller's deadline")
        start = time.monotonic()
        if not self._lanes.acquire(timeout=budget):
            return Explanation(
                [], f"omitted: OPA was tracing {self._lane_count} other explanation(s) for {budget:.2f} s"
            )
        try:
            answer = self._opa.query(input_doc, timeout_s=budget - (time.monotonic() - start), explain=level)
        except OpaTimeout:
            return Explanation([], f"omitted: OPA did not finish the trace within {budget:.2f} s")
        except NoVerdict as e:
            return Explanation([], f"omitted: {e}")
        finally:
            self._lanes.release()
        if answer.bundle_revisions != revisions:
            return Explanation([], "omitted: the policy changed between the verdict and its trace")
        return Explanation(answer.explanation)
