"""Spans for the proxy: its own tracer, and a gRPC interceptor so its PDP calls join its spans.

Spans are exported over OTLP when the standard variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SERVICE_NAME`` defaults to ``pdp-mcp-proxy``). The W3C
trace context of a call comes from its ``params._meta`` (``traceparent``/``tracestate``) or, over
HTTP, from the request's headers; the Decide call then shows up under the proxy's span.
"""

from __future__ import annotations

import atexit
import os

import grpc
from opentelemetry import trace

from pdp.pep.tls import Channel


def _provider() -> trace.TracerProvider:
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return trace.NoOpTracerProvider()
    wanted = env.get("OTEL_TRACES_EXPORTER", "").lower() == "otlp" or bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not wanted:
        return trace.NoOpTracerProvider()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME", "pdp-mcp-proxy")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    atexit.register(provider.shutdown)
    return provider


_PROVIDER = None


def provider() -> trace.TracerProvider:
    """The proxy's tracer provider (made once)."""
    global _PROVIDER  # noqa: PLW0603
    if _PROVIDER is None:
        _PROVIDER = _provider()
    return _PROVIDER


def tracer() -> trace.Tracer:
    """The proxy's tracer."""
    return provider().get_tracer("pdp.pep")


def channel(to: Channel) -> grpc.Channel:
    """A channel to the PDP (TLS when ``to`` has credentials) whose calls carry the current span (as the
    W3C ``traceparent``) when tracing."""
    if to.credentials is not None:
        plain = grpc.secure_channel(to.address, to.credentials, options=to.options)
    else:
        plain = grpc.insecure_channel(to.address)
    if isinstance(provider(), trace.NoOpTracerProvider):
        return plain
    from opentelemetry.instrumentation.grpc import client_interceptor
    from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

    traced: grpc.Channel = intercept_channel(plain, client_interceptor(tracer_provider=provider()))  # type: ignore[no-untyped-call]
    return traced
