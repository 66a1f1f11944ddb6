"""Watching OPA's bundles: a refused reload is reported, never silent.

OPA keeps serving the last good bundle when a new one fails to download, verify or compile, and
its ``/health?bundles`` stays 200 then. Only ``/v1/status`` says so (the bundle's ``code`` and
``message`` beside the unchanged ``active_revision``). :class:`BundleWatch` reads it on the
health monitor's schedule and reports each refused load three ways: the ``pdp.policy`` health
service goes NOT_SERVING (the decision service keeps serving the old policy), the
``pdp.bundle.load_failures`` counter (by bundle and error code) and one WARNING log line per
distinct failure; a newly activated revision is logged at INFO.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import metrics

from pdp.policy.bundles import BundleState, read_signing_keys, read_status

log = logging.getLogger(__name__)

HEALTH_SERVICE = "pdp.policy"
"""grpc.health.v1 service name: NOT_SERVING while the latest bundle load was refused."""


class BundleWatch:
    """Reads OPA's bundle status and reports refused loads and revision changes.

    Args:
        opa_url: OPA's REST API (``http://host:port`` or ``unix:///path``).
        timeout_s: longest wait for ``/v1/status``.
        meter_provider: where the ``pdp.bundle.load_failures`` counter goes.
    """

    def __init__(self, *, opa_url: str, timeout_s: float, meter_provider: metrics.MeterProvider | None = None) -> None:
        self._url = opa_url
        self._timeout = timeout_s
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("pdp")
        self._failures = meter.create_counter(
            "pdp.bundle.load_failures",
            unit="{load}",
            description="Bundle loads OPA refused (download, signature, compile), by bundle and error code",
        )
        self._lock = threading.Lock()
        self._seen: dict[str, BundleState] = {}
        self._counted: set[tuple[str, str]] = set()
        self.detail = ""
        """Empty while every bundle's latest load succeeded; else what was refused and what is served."""
        self.signing_keys: dict[str, str] = {}
        """Each bundle's verification key id (OPA's ``bundles.<name>.signing.keyid``), for the records."""

    def check(self) -> str:
        """Reads ``/v1/status`` once; returns :attr:`detail` ("" when nothing was refused, or
        when OPA runs without the status plugin: a bundle given on its command line)."""
        states = read_status(self._url, timeout_s=self._timeout)
        if states is None:
            return self.detail
        with self._lock:
            problems = []
            changed = {
                n
                for n, st in states.items()
                if n not in self._seen or self._seen[n].active_revision != st.active_revision
            }
            if changed or not self.signing_keys:
                self.signing_keys = read_signing_keys(self._url, timeout_s=self._timeout)
            for name, state in sorted(states.items()):
                before = self._seen.get(name)
                if name in changed and state.active_revision:
                    log.info(
                        "bundle %s: revision %r active (was %r)",
                        name,
                        state.active_revision,
                        before.active_revision if before else "",
                    )
                if state.error:
                    problems.append(_problem(state))
                    self._report(state, before)
                self._seen[name] = state
            self.detail = "; ".join(problems)
        return self.detail

    def _report(self, state: BundleState, before: BundleState | None) -> None:
        if (state.name, state.last_request) not in self._counted:
            self._counted.add((state.name, state.last_request))
            self._failures.add(1, {"bundle": state.name, "code": state.error.split(":", 1)[0]})
        if before is None or before.error != state.error:
            log.warning("%s", _problem(state))


def _problem(state: BundleState) -> str:
    if state.active_revision:
        return (
            f"bundle {state.name}: the latest load was refused ({state.error}); "
            f"still serving revision {state.active_revision!r} activated {state.last_activation}"
        )
    return f"bundle {state.name}: no revision loaded; the load was refused ({state.error})"
