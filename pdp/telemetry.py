"""OpenTelemetry for the PDP: providers from the standard ``OTEL_*`` variables, and every span,
attribute and metric name in one place.

Nothing is exported, and the SDK is not even set up, unless an exporter is asked for: an OTLP
endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT`` or its ``_TRACES_`` / ``_METRICS_`` form) or
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` set to ``otlp`` or ``console``.
``OTEL_SDK_DISABLED=true`` turns everything off. Service name, resource attributes, sampler
(``OTEL_TRACES_SAMPLER``), OTLP protocol (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``grpc`` or
``http/protobuf``) and headers are read by the SDK itself. Without an exporter the API's no-op
tracer and meter make every call below cost next to nothing.

Telemetry wraps the decision line; it never decides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from opentelemetry import metrics, propagate, trace
from opentelemetry.instrumentation.grpc import filters, server_interceptor
from opentelemetry.trace import SpanKind, Status, StatusCode

from pdp.decision import Decision

log = logging.getLogger(__name__)

SCOPE = "pdp"
SPAN_CONTEXT = "pdp.context"  # validating the request and building the policy input
SPAN_RECORD = "pdp.record"  # signing the decision record and appending it durably to the log
SPAN_COALESCED = "pdp.opa.coalesced"  # one caller's wait for a batched OPA query (linked to that query's span)
SPAN_STATE = "pdp.state"  # reading the suspension list and binding budget usage into the input
SPAN_EXPLAIN = "pdp.explain"  # tracing the decision for the caller's explanation (pdp.explain)
SPAN_RESERVE = "pdp.budget.reserve"  # reserving an ALLOW's budget claims in the shared store
ATTR_PREFIX = "pdp."

_EXPORTERS = ("otlp", "console")


def _wanted(signal: str, env: Mapping[str, str]) -> str | None:
    """The exporter asked for a signal (``traces`` / ``metrics``), or None."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower()
    if chosen:
        return chosen if chosen in _EXPORTERS else None
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return None


def _http_protocol(env: Mapping[str, str]) -> bool:
    return env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip().lower().startswith("http")


class Telemetry:
    """The PDP's tracer, meter and instruments.

    Args:
        env: the environment to read ``OTEL_*`` from (``os.environ`` by default).
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._shutdown: list[Any] = []
        self.tracer_provider = self._tracer_provider(env)
        self.meter_provider = self._meter_provider(env)
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        meter = self.meter_provider.get_meter(SCOPE)
        self.decisions = meter.create_counter(
            "pdp.decisions", unit="{decision}", description="Decisions by outcome and first reason code"
        )
        self.fail_closed = meter.create_counter(
            "pdp.fail_closed", unit="{decision}", description="Decisions made without a policy verdict, by error code"
        )
        self.decide_duration = meter.create_histogram(
            "pdp.decide.duration", unit="s", description="Time to decide one request, inside the PDP"
        )
        self.opa_duration = meter.create_histogram(
            "pdp.opa.duration", unit="s", description="Round trip of one OPA query"
        )
        self.ledger_sync_duration = meter.create_histogram(
            "pdp.ledger.sync.duration", unit="s", description="One group commit: fdatasync of the decision log"
        )
        self.budget_reserved = meter.create_counter(
            "pdp.budget.reserved", unit="{unit}", description="Amounts reserved for ALLOWs, by budget"
        )
        self.budget_usage = meter.create_histogram(
            "pdp.budget.usage", unit="1", description="Share of the limit in use after a reservation, by budget"
        )
        self.budget_refused = meter.create_counter(
            "pdp.budget.refused", unit="{reservation}", description="Reservations refused (budget.exceeded), by budget"
        )
        self.suspension_denials = meter.create_counter(
            "pdp.suspension.denials", unit="{decision}", description="Decisions denied by the kill switch, by kind"
        )
        self.suspension_changes = meter.create_counter(
            "pdp.suspension.changes", unit="{change}", description="Suspensions made and lifted, by kind and action"
        )

    @property
    def exporting(self) -> bool:
        """Whether any exporter was set up."""
        return bool(self._shutdown)

    def _tracer_provider(self, env: Mapping[str, str]) -> trace.TracerProvider:
        kind = _wanted("traces", env)
        if kind is None:
            return trace.NoOpTracerProvider()
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        exporter: SpanExporter
        if kind == "console":
            exporter = ConsoleSpanExporter()
        elif _http_protocol(env):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

            exporter = HttpSpans()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

            exporter = GrpcSpans()
        provider = TracerProvider(resource=Resource.create({"service.name": _service_name(env)}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._shutdown.append(provider)
        log.info("tracing: exporting spans (%s)", kind)
        return provider

    def _meter_provider(self, env: Mapping[str, str]) -> metrics.MeterProvider:
        kind = _wanted("metrics", env)
        if kind is None:
            return metrics.NoOpMeterProvider()
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricExporter,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource

        exporter: MetricExporter
        if kind == "console":
            exporter = ConsoleMetricExporter()
        elif _http_protocol(env):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

            exporter = HttpMetrics()
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

            exporter = GrpcMetrics()
        provider = MeterProvider(
            resource=Resource.create({"service.name": _service_name(env)}),
            metric_readers=[PeriodicExportingMetricReader(exporter)],
        )
        self._shutdown.append(provider)
        log.info("metrics: exporting (%s)", kind)
        return provider

    def server_interceptor(self) -> grpc.ServerInterceptor[Any, Any]:
        """The gRPC server span, continuing the caller's ``traceparent``; health checks untraced."""
        interceptor: grpc.ServerInterceptor[Any, Any] = server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self.tracer_provider, filter_=filters.negate(filters.health_check())
        )
        return interceptor

    @contextlib.contextmanager
    def opa_call(self, *, url: str, path: str) -> Iterator[dict[str, str]]:
        """The OPA query as an HTTP client span; yields headers carrying its ``traceparent``."""
        target = urllib.parse.urlsplit(url)
        route = path.split("?", 1)[0]
        with self.tracer.start_as_current_span(f"POST {route}", kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            if span.is_recording():
                span.set_attribute("http.request.method", "POST")
                span.set_attribute("url.path", route)
                span.set_attribute("server.address", target.hostname or target.path or url)
                if target.port:
                    span.set_attribute("server.port", target.port)
                propagate.inject(headers)
            yield headers

    def record(self, decisions: Sequence[Decision], *, batch: bool = False) -> None:
        """Puts one call's decisions into the metrics and on the current (server) span: as span
        attributes for one decision, as one ``pdp.decision`` span event each for a batch."""
        span = trace.get_current_span()
        recording = span.is_recording()
        attributes = []
        for decision in decisions:
            v = decision.verdict
            codes = [r.code for r in v.reasons]
            self.decisions.add(1, {"outcome": v.outcome.value, "reason": codes[0] if codes else ""})
            self.decide_duration.record(decision.total_ns / 1e9, {"outcome": v.outcome.value})
            if v.indeterminate:
                self.fail_closed.add(1, {"error_code": v.error_code})
            if recording:
                attributes.append(
                    {
                        "pdp.decision_id": decision.decision_id,
                        "pdp.request_id": decision.request_id,
                        "pdp.outcome": v.outcome.value,
                        "pdp.reason_codes": codes,
                        "pdp.indeterminate": v.indeterminate,
                        "pdp.error_code": v.error_code,
                        "pdp.policy.revision": ",".join(sorted(decision.bundle_revisions.values())),
                        "pdp.agent.id": decision.agent_id,
                        "pdp.action.tool": decision.tool,
                        "pdp.explain": decision.explain,
                    }
                )
        if opa_ns := max((d.opa_ns for d in decisions), default=0):
            self.opa_duration.record(opa_ns / 1e9)  # one OPA query per call
        if not recording:
            return
        if not batch:
            span.set_attributes(attributes[0])
        else:
            span.set_attribute("pdp.batch_size", len(attributes))
            for a in attributes:
                span.add_event("pdp.decision", a)
        failed = [d.verdict.error_code for d in decisions if d.verdict.indeterminate]
        if failed:
            span.set_status(Status(StatusCode.ERROR, f"failed closed: {failed[0]}"))

    def shutdown(self) -> None:
        """Flushes and stops the exporters."""
        for provider in self._shutdown:
            provider.shutdown()


def _service_name(env: Mapping[str, str]) -> str:
    return env.get("OTEL_SERVICE_NAME") or "pdp"


def opa_tracing_config(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """OPA's ``distributed_tracing`` configuration that sends its spans where the PDP's go.

    OPA exports OTLP over gRPC; with another protocol (or no endpoint) it gets none.
    """
    env = os.environ if env is None else env
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if _wanted("traces", env) != "otlp" or not endpoint or _http_protocol(env):
        return None
    address = urllib.parse.urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").netloc
    return {
        "distributed_tracing": {
            "type": "grpc",
            "address": address,
            "service_name": "opa",
            "sample_percentage": 100,
        }
    }
