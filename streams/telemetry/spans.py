"""One run as one trace: the root `invoke_workflow` span and a `chat` span per task.

Built once the run has ended, from a RunData (what the records hold: streams.telemetry.live
makes one from a RunRecorder, streams.telemetry.replay from the stored rows), with the recorded
times. Attribute names follow the GenAI semantic conventions of semantic-conventions v1.41.0
(Development status); this app's own attributes are under `streams.`.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from ..protocol import TASK_COMPLETED, TASK_DELTA, TASK_FAILED

__all__ = ["RunData", "TaskData", "emit"]

CANCELLED = "cancelled"  # error.type of a run or task that was cancelled


@dataclass
class TaskData:
    """One task as recorded (times in epoch seconds)."""

    key: str
    provider: str
    model: str
    status: str
    started_at: float | None
    ended_at: float | None
    first_at: float | None = None  # when its first piece arrived
    depends_on: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    ttft_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    error: dict | None = None
    text: str = ""
    route: dict | None = None  # the fallback route that served: provider, model, fallbacks_tried


@dataclass
class RunData:
    """One run as recorded: its tasks in delivery order and its frames as (type, task, sent_at)."""

    run_id: str
    pipeline: str
    status: str
    started_at: float
    ended_at: float
    conversation: str | None = None
    input: str = ""
    error: dict | None = None
    tasks: list[TaskData] = field(default_factory=list)
    frames: list[tuple[str, str | None, float]] = field(default_factory=list)


def _ns(ts: float) -> int:
    return int(ts * 1e9)


def _messages(role: str, text: str, **extra) -> str:
    """GenAI message content as the conventions' JSON (one text part)."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}], **extra}])


def _dependency_order(tasks: list[TaskData]) -> list[TaskData]:
    """Tasks with each after its dependencies (their spans must exist to be linked)."""
    by_key = {t.key: t for t in tasks}
    out: list[TaskData] = []
    seen: set[str] = set()

    def visit(t: TaskData) -> None:
        if t.key in seen:
            return
        seen.add(t.key)
        for dep in t.depends_on:
            if dep in by_key:
                visit(by_key[dep])
        out.append(t)

    for t in tasks:
        visit(t)
    return out


def _deliveries(run: RunData) -> dict[str, tuple[float, bool]]:
    """Per task: when its first text was sent to the clients, and whether it was held until then.

    Held: its first piece had arrived before the task ahead of it in delivery order ended
    (the gate keeps a task's text back until every task before it has ended).
    """
    first_sent: dict[str, float] = {}
    end_sent: dict[str, float] = {}
    for kind, task, at in run.frames:
        if kind == TASK_DELTA and task not in first_sent:
            first_sent[task] = at
        elif kind in (TASK_COMPLETED, TASK_FAILED):
            end_sent[task] = at
    out = {}
    previous: TaskData | None = None
    for t in run.tasks:
        sent = first_sent.get(t.key)
        if sent is not None:
            ahead_end = end_sent.get(previous.key) if previous is not None else None
            held = t.first_at is not None and ahead_end is not None and t.first_at < ahead_end
            out[t.key] = (sent, held)
        previous = t
    return out


def _task_attributes(t: TaskData, server: tuple[str, int] | None) -> dict:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": t.provider,
        "gen_ai.request.model": t.model,
        "gen_ai.request.stream": True,
        "streams.task.key": t.key,
        "streams.task.status": t.status,
    }
    if t.max_tokens is not None:
        attrs["gen_ai.request.max_tokens"] = t.max_tokens
    if t.temperature is not None:
        attrs["gen_ai.request.temperature"] = t.temperature
    if server is not None:
        attrs["server.address"], attrs["server.port"] = server
    if t.first_at is not None or t.status == "completed":
        # The model of the request that served (a fallback's when one served); not read from the answer.
        attrs["gen_ai.response.model"] = (t.route or {}).get("model") or t.model
    if t.finish_reason:
        attrs["gen_ai.response.finish_reasons"] = [t.finish_reason]
    if t.prompt_tokens is not None:
        attrs["gen_ai.usage.input_tokens"] = t.prompt_tokens
    if t.completion_tokens is not None:
        attrs["gen_ai.usage.output_tokens"] = t.completion_tokens
    if t.ttft_ms is not None:
        attrs["gen_ai.response.time_to_first_chunk"] = round(t.ttft_ms / 1000, 6)
    if t.route:
        attrs["streams.route.provider"] = t.route.get("provider", t.provider)
        attrs["streams.route.model"] = t.route.get("model", t.model)
        attrs["streams.route.fallbacks_tried"] = int(t.route.get("fallbacks_tried", 0))
    return attrs


def emit(
    tracer,
    run: RunData,
    *,
    content: bool = False,
    server_of: Callable[[str], tuple[str, int] | None] = lambda _: None,
) -> None:
    """Create and end the run's spans with their recorded times (the processor exports them)."""
    end = run.ended_at
    attrs = {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": run.pipeline,
        "streams.run.id": run.run_id,
        "streams.run.status": run.status,
    }
    if run.conversation:
        attrs["gen_ai.conversation.id"] = run.conversation
    if content:
        attrs["gen_ai.input.messages"] = _messages("user", run.input)
    root = tracer.start_span(
        f"invoke_workflow {run.pipeline}",
        kind=SpanKind.INTERNAL,
        attributes=attrs,
        start_time=_ns(run.started_at),
    )
    parent = trace.set_span_in_context(root)
    deliveries = _deliveries(run)
    spans = {}
    for t in _dependency_order(run.tasks):
        links = [
            Link(spans[d].get_span_context(), {"streams.link": "depends_on", "streams.task.key": d})
            for d in t.depends_on
            if d in spans
        ]
        started = t.started_at if t.started_at is not None else run.started_at
        span = tracer.start_span(
            f"chat {t.model}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=_task_attributes(t, server_of(t.provider)),
            links=links,
            start_time=_ns(started),
        )
        spans[t.key] = span
        if t.key in deliveries:
            sent, held = deliveries[t.key]
            wait = max(sent - t.first_at, 0.0) if t.first_at is not None else 0.0
            span.add_event(
                "delivery",
                {"streams.delivery.held": held, "streams.delivery.wait_s": round(wait, 6)},
                timestamp=_ns(sent),
            )
        if content and t.text:
            extra = {"finish_reason": t.finish_reason} if t.finish_reason else {}
            span.set_attribute("gen_ai.output.messages", _messages("assistant", t.text, **extra))
        if t.status in ("failed", CANCELLED):
            code = (t.error or {}).get("code") or CANCELLED
            span.set_attribute("error.type", code)
            span.set_status(Status(StatusCode.ERROR, (t.error or {}).get("message") or code))
        span.end(end_time=_ns(t.ended_at if t.ended_at is not None else end))
    if run.status in ("failed", CANCELLED):
        code = (run.error or {}).get("code") or CANCELLED
        root.set_attribute("error.type", code)
        root.set_status(Status(StatusCode.ERROR, (run.error or {}).get("message") or code))
    root.end(end_time=_ns(end))
