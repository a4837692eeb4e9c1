"""The process's tracer: a TracerProvider with a BatchSpanProcessor over the OTLP exporter.

Spans are queued in memory (bounded: OTEL_BSP_MAX_QUEUE_SIZE, 2048 by default) and exported
by the processor's own thread, so neither a slow nor an unreachable collector touches the
event loop. What is lost on the way is counted in `streams_trace_spans_dropped_total`:
`queue_full` and `already_shutdown` as the SDK's processor reports them (its internal
`otel.sdk.processor.span.processed` metric, read here through a small MeterProvider), and
`export_failed` for batches the exporter gave up on (after its own retries, within its timeout).
That the SDK reports queue drops this way is pinned by tests/test_telemetry.py. Its `queue_full`
count is an upper bound: it counts a drop on finding the queue full before appending, and its
worker may empty the queue in between, so that span is exported as well (docs/records.md).
"""

import logging
import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager

from opentelemetry.metrics import NoOpCounter, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from ..records import metrics
from . import config

__all__ = ["CountingExporter", "build_provider", "flush", "get_tracer", "new_exporter", "shutdown"]

logger = logging.getLogger(__name__)

# The GenAI conventions followed: semantic-conventions v1.41.0 (docs/records.md, "Tracing").
SCHEMA_URL = "https://opentelemetry.io/schemas/1.41.0"
# The SDK's processor metric that carries drops (attribute error.type: queue_full, already_shutdown).
PROCESSED = "otel.sdk.processor.span.processed"
_SDK_METRICS_SWITCH = "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED"


class _DropCounter(NoOpCounter):
    """The processor's `processed` counter: only the additions that carry an error are drops."""

    def add(self, amount, attributes=None, context=None) -> None:
        """Count dropped spans by their error type."""
        reason = (attributes or {}).get("error.type")
        if reason:
            metrics.spans_dropped(str(reason), int(amount))


class _DropMeter(NoOpMeter):
    def create_counter(self, name, unit="", description=""):
        """The processed counter counts drops; every other instrument is a no-op."""
        if name == PROCESSED:
            return _DropCounter(name, unit=unit, description=description)
        return super().create_counter(name, unit=unit, description=description)


class DropMeterProvider(NoOpMeterProvider):
    """A MeterProvider that only turns the span processor's drops into the Prometheus counter."""

    def get_meter(self, name, version=None, schema_url=None, attributes=None):
        """A meter whose `processed` counter counts drops."""
        return _DropMeter(name, version=version, schema_url=schema_url)


class CountingExporter(SpanExporter):
    """Wraps the OTLP exporter: a batch it could not deliver is counted as dropped."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self.failed = 0  # spans it could not deliver

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export; count the batch when that failed."""
        try:
            result = self.inner.export(spans)
        except Exception:
            logger.warning("trace export failed", exc_info=True)
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
            metrics.spans_dropped("export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


@contextmanager
def _sdk_metrics_on():
    """The processor reports drops only when the SDK's internal metrics are on at its creation."""
    before = os.environ.get(_SDK_METRICS_SWITCH)
    os.environ[_SDK_METRICS_SWITCH] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_SDK_METRICS_SWITCH, None)
        else:
            os.environ[_SDK_METRICS_SWITCH] = before


def _resource() -> Resource:
    """OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES as the SDK reads them; this app's name by default."""
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: config.DEFAULT_SERVICE_NAME}))
    return resource


def new_exporter() -> CountingExporter:
    """The OTLP exporter of the configured protocol, counting what it fails to deliver."""
    return CountingExporter(config.exporter_class()(timeout=config.export_timeout_s()))


def build_provider(exporter: CountingExporter | None = None) -> TracerProvider:
    """A TracerProvider (sampler from OTEL_TRACES_SAMPLER) exporting in batches through `exporter`."""
    provider = TracerProvider(resource=_resource())
    with _sdk_metrics_on():
        processor = BatchSpanProcessor(exporter or new_exporter(), meter_provider=DropMeterProvider())
    provider.add_span_processor(processor)
    return provider


_lock = threading.Lock()
_provider: TracerProvider | None = None


def get_tracer():
    """The process's tracer, its provider built on first use (tracing must be on)."""
    global _provider
    if _provider is None:
        with _lock:
            if _provider is None:
                _provider = build_provider()
                logger.info("tracing on: runs are exported as OTLP traces (%s)", config.protocol())
    return tracer_of(_provider)


def tracer_of(provider: TracerProvider):
    """This app's tracer from `provider`."""
    return provider.get_tracer("streams", schema_url=SCHEMA_URL)


def flush() -> None:
    """Export what is queued now (benchmarks and tests)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Export what is queued and stop the exporter's thread (shutdown and tests)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()
