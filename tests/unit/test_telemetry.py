"""Telemetry is configured by OTEL_* only, and is silent and free when none are set."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from pdp.telemetry import Telemetry, opa_tracing_config


def test_nothing_is_exported_without_otel_variables(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = Telemetry(env={})
    assert not t.exporting
    assert isinstance(t.tracer_provider, trace.NoOpTracerProvider)
    with t.opa_call(url="http://127.0.0.1:8181", path="/v1/data/pdp/decision?metrics=true") as headers:
        assert headers == {}  # no traceparent when nothing records
    t.shutdown()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_TRACES_EXPORTER": "otlp"},
    ],
)
def test_an_endpoint_or_exporter_turns_tracing_on(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody listens at the endpoint: give up exporting quickly at shutdown.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.2")
    t = Telemetry(env=env)
    try:
        assert t.exporting
        with t.opa_call(url="http://127.0.0.1:8181", path="/v1/data/pdp/decision") as headers:
            assert headers["traceparent"].startswith("00-")
    finally:
        t.shutdown()


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
        },
    ],
)
def test_disabled_or_none_exports_nothing(env: dict[str, str]) -> None:
    assert not Telemetry(env=env).exporting


@pytest.mark.parametrize(
    ("env", "address"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, "jaeger:4317"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "localhost:4317"}, "localhost:4317"),
        ({}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_opa_traces_go_where_the_pdp_traces_go(env: dict[str, str], address: str | None) -> None:
    config = opa_tracing_config(env)
    if address is None:
        assert config is None
    else:
        assert config == {
            "distributed_tracing": {"type": "grpc", "address": address, "service_name": "opa", "sample_percentage": 100}
        }
