"""Whether tracing is on, and the tracer provider built from the standard OTEL_* variables.

The SDK reads most variables itself: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (resource),
OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (sampler), OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT,
_HEADERS, _TIMEOUT, _COMPRESSION (exporter), OTEL_BSP_* (batch processor: queue size, delay).
This module decides on/off, picks the exporter by OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL, and
shortens the export timeout when none is set, so that a collector that is down costs little.
"""

import os

from django.core.exceptions import ImproperlyConfigured

__all__ = ["capture_content", "check", "enabled", "protocol"]

DEFAULT_PROTOCOL = "http/protobuf"
DEFAULT_SERVICE_NAME = "llm-stream-orchestrator"
# Seconds per export request when OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT is unset (the SDK's is 10).
DEFAULT_TIMEOUT_S = 3.0
_TRUE = {"true", "1", "yes", "on"}
# OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT values that put content into spans
# (the boolean of the GenAI instrumentations, and the newer mode names that include spans).
_CONTENT_ON = {"true", "span_only", "span_and_event"}


def _env(name: str, environ=None) -> str:
    return ((os.environ if environ is None else environ).get(name) or "").strip()


def enabled(environ=None) -> bool:
    """On when an OTLP endpoint is set and OTEL_SDK_DISABLED is not true."""
    if _env("OTEL_SDK_DISABLED", environ).lower() == "true":
        return False
    return bool(
        _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", environ) or _env("OTEL_EXPORTER_OTLP_ENDPOINT", environ)
    )


def protocol(environ=None) -> str:
    """The OTLP protocol asked for (signal-specific first), default http/protobuf."""
    return (
        _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", environ)
        or _env("OTEL_EXPORTER_OTLP_PROTOCOL", environ)
        or DEFAULT_PROTOCOL
    ).lower()


def capture_content(environ=None) -> bool:
    """Whether prompts and completions go into spans (off unless asked for)."""
    return _env("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", environ).lower() in _CONTENT_ON


def export_timeout_s(environ=None) -> float | None:
    """None when a timeout variable is set (the exporter reads it), else the short default."""
    if _env("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", environ) or _env("OTEL_EXPORTER_OTLP_TIMEOUT", environ):
        return None
    return DEFAULT_TIMEOUT_S


def exporter_class(environ=None):
    """The span exporter class for the configured protocol; a clear error when it cannot be had."""
    proto = protocol(environ)
    if proto == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter
    if proto == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ImproperlyConfigured(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package opentelemetry-exporter-otlp-proto-grpc, "
                "which is not installed; install it or use http/protobuf (the default)"
            ) from None
        return OTLPSpanExporter
    raise ImproperlyConfigured(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={proto!r} is not supported: use http/protobuf (the default) or grpc"
    )


def check(environ=None) -> None:
    """At start-up: when tracing is on, fail now (not at the first run) on a protocol it cannot use."""
    if enabled(environ):
        exporter_class(environ)
