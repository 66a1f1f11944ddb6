"""grpc.health.v1: SERVING only while OPA evaluates the decision document under a bundle and holds
nothing outside it, the log is writable and the state store answers."""

from __future__ import annotations

import logging
import threading

from grpc_health.v1 import health, health_pb2

from pdp.errors import NoVerdict
from pdp.opa import OpaClient
from pdp.policy.watch import HEALTH_SERVICE as BUNDLE_HEALTH
from pdp.policy.watch import BundleWatch
from pdp.recorder import Recorder
from pdp.state import StateStore
from pdp.v1 import decision_pb2 as pb
from pdp.verdict import interpret

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name


class OpaHealthMonitor:
    """Polls OPA and reports SERVING only while the decision document evaluates under a bundle.

    Args:
        opa: a client of its own (its connection lives on the monitor's thread).
        recorder: the decision log; a log that cannot be written means not serving.
        store: the shared state store; one that does not answer means not serving.
        health_servicer: the grpc.health.v1 servicer to update.
        interval_s: time between checks.
        timeout_s: longest wait for one check.
        allow_api_data: policy or data in OPA outside the bundle is expected (PDP_ALLOW_OPA_API_DATA);
            otherwise it means someone wrote into OPA's API, and the PDP stops serving.
        bundles: reports refused bundle loads (health service ``pdp.policy``, metric, log line).
    """

    def __init__(
        self,
        *,
        opa: OpaClient,
        recorder: Recorder,
        store: StateStore,
        health_servicer: health.HealthServicer,
        interval_s: float,
        timeout_s: float,
        allow_api_data: bool = False,
        bundles: BundleWatch | None = None,
    ) -> None:
        self._opa, self._recorder, self._store, self._health = opa, recorder, store, health_servicer
        self._bundles = bundles
        self._interval, self._timeout = interval_s, timeout_s
        self._allow_api_data = allow_api_data
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="opa-health", daemon=True)
        self._serving: bool | None = None

    def start(self) -> None:
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._interval + self._timeout + 1)
        self._opa.close()

    def check(self) -> bool:
        """Checks OPA once, updates the health status, and returns whether it is serving."""
        try:
            answer = self._opa.query({}, timeout_s=self._timeout)
            interpret(answer.result, defined=answer.defined)
            problem = "" if answer.bundle_revisions else "OPA has no bundle loaded"
            if (
                not problem
                and not self._allow_api_data
                and (planted := self._opa.outside_bundle(timeout_s=self._timeout))
            ):
                problem = (
                    "pdp.opa_tampered: OPA holds what its bundle does not (written through its REST API?): "
                    + "; ".join(planted[:5])
                    + " (PDP_ALLOW_OPA_API_DATA=1 if that is on purpose)"
                )
        except NoVerdict as e:
            problem = f"{e.error_code}: {e}"
        if not problem and not self._recorder.healthy:
            problem = "the decision log cannot be written"
        if not problem and not self._store.healthy():
            problem = "pdp.state_unavailable: the state store does not answer"
        serving = not problem
        if serving != self._serving:
            if serving:
                log.info("OPA healthy; serving")
            else:
                log.warning("not serving: %s", problem)
            self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)
        if self._bundles is not None:
            # A refused reload leaves OPA serving the last good policy: the PDP serves too, and says so.
            refused = bool(self._bundles.check()) or not serving
            self._health.set(BUNDLE_HEALTH, health_pb2.HealthCheckResponse.NOT_SERVING if refused else status)
        return serving

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()
