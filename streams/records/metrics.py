"""Prometheus metrics of runs, tasks and upstream requests (prometheus-client); cheap to update.

The recorder (streams.records.recorder) updates the run and task metrics itself: a run
counts in `streams_runs_in_flight` from its RunRecorder's creation to its end. The lead adds
only `upstream(provider)` around each provider stream and `error(code)` where a client frame
is refused.

Served at `GET /metrics` (streams.api.metrics_view) when STREAMS_METRICS=1; see
that view for who may read it.

Several processes per host: set PROMETHEUS_MULTIPROC_DIR to an empty directory, writable by
every worker and wiped at deploy (before the workers start), and every process then writes its
values to files there; `/metrics` on any of them answers the sum over all (gauges: the live
processes' sum). A supervisor that restarts workers should call
`prometheus_client.multiprocess.mark_process_dead(pid)` for a dead worker. Without the
variable each process serves its own values (scrape each, e.g. one port per process).
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "CONTENT_TYPE_LATEST",
    "error",
    "render",
    "run_ended",
    "run_started",
    "spans_dropped",
    "task_ended",
    "upstream",
]

REGISTRY = CollectorRegistry()

# Seconds; LLM calls: first tokens in 0.1-10 s, whole answers up to minutes.
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
DURATION_BUCKETS = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)

RUNS = Counter("streams_runs", "Runs that ended, by final status.", ["status"], registry=REGISTRY)
TASKS = Counter(
    "streams_tasks", "Tasks that ended, by provider and status.", ["provider", "status"], registry=REGISTRY
)
TTFT = Histogram(
    "streams_task_ttft_seconds",
    "Time from a task's provider call to its first piece of text.",
    ["provider"],
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
DURATION = Histogram(
    "streams_task_duration_seconds",
    "Time from a task's provider call to its end.",
    ["provider"],
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
TOKENS = Counter(
    "streams_tokens_delivered",
    "Completion tokens of ended tasks (the provider's count, else pieces received).",
    ["provider"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "streams_errors", "Errors by code: tasks that failed and refused frames.", ["code"], registry=REGISTRY
)
RUNS_IN_FLIGHT = Gauge(
    "streams_runs_in_flight", "Runs started and not ended.", registry=REGISTRY, multiprocess_mode="livesum"
)
UPSTREAM_IN_FLIGHT = Gauge(
    "streams_upstream_requests_in_flight",
    "Provider requests open now.",
    ["provider"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
SPANS_DROPPED = Counter(
    "streams_trace_spans_dropped",
    "Trace spans lost on the way to the OTLP collector: queue_full, export_failed or already_shutdown.",
    ["reason"],
    registry=REGISTRY,
)

# Label children, looked up once: .labels() costs a lock and a tuple per call.
_children: dict[tuple, object] = {}


def _child(metric, *labels):
    """The metric's child for `labels`, cached."""
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def run_started() -> None:
    """A run started (counted in flight until run_ended)."""
    RUNS_IN_FLIGHT.inc()


def run_ended(status: str) -> None:
    """A run ended with `status`."""
    RUNS_IN_FLIGHT.dec()
    _child(RUNS, status).inc()


def task_ended(
    provider: str,
    status: str,
    *,
    ttft_ms: float | None,
    duration_ms: float | None,
    tokens: int | None,
    error_code: str | None,
) -> None:
    """A task ended: its counters, histograms and tokens; its error code when it failed."""
    _child(TASKS, provider, status).inc()
    if ttft_ms is not None:
        _child(TTFT, provider).observe(ttft_ms / 1000)
    if duration_ms is not None:
        _child(DURATION, provider).observe(duration_ms / 1000)
    if tokens:
        _child(TOKENS, provider).inc(tokens)
    if error_code:
        _child(ERRORS, error_code).inc()


def error(code: str) -> None:
    """A client frame or request was refused with `code`."""
    _child(ERRORS, code).inc()


def spans_dropped(reason: str, count: int = 1) -> None:
    """`count` trace spans were dropped for `reason` (streams.telemetry; any thread)."""
    _child(SPANS_DROPPED, reason).inc(count)


def upstream(provider: str):
    """Context manager: one provider request open (`with metrics.upstream(task.provider): ...`)."""
    return _child(UPSTREAM_IN_FLIGHT, provider).track_inprogress()


def render() -> bytes:
    """The Prometheus text format: this process's values, or every process's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
