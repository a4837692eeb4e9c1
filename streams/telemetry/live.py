"""The live hook: when a run has ended in this process, its trace is built from its RunRecorder.

The host calls `run_ended(recorder)` once the recorder has the run's end (the same data the
records get: task stats, pieces' times, frames as sent). With tracing off it returns at once.
"""

import logging

from ..records.recorder import RunRecorder
from . import config
from .spans import RunData, TaskData, emit
from .upstream import server_of

__all__ = ["run_ended"]

logger = logging.getLogger(__name__)

# Read once: the OTEL_* environment is the process's configuration (tests call reset()).
_on: bool | None = None
_content = False


def reset() -> None:
    """Read the environment again at the next run (tests)."""
    global _on
    _on = None


def _enabled() -> bool:
    global _on, _content
    if _on is None:
        _on, _content = config.enabled(), config.capture_content()
    return _on


def run_data(rec: RunRecorder) -> RunData:
    """What the recorder holds of an ended run, for the span builder."""
    specs = {t["key"]: t for t in rec.snapshot["tasks"]}
    tasks = []
    for key, t in rec.tasks.items():
        spec = specs.get(key, {})
        stats = t.stats
        route = (
            {k: stats[k] for k in ("provider", "model", "fallbacks_tried") if k in stats}
            if spec.get("fallbacks")
            else None
        )
        tasks.append(
            TaskData(
                key=key,
                provider=t.provider,
                model=t.model,
                status=t.status,
                started_at=t.started_at,
                ended_at=t.ended_at,
                first_at=t.first_at,
                depends_on=tuple(spec.get("depends_on") or ()),
                max_tokens=spec.get("max_tokens"),
                temperature=spec.get("temperature"),
                ttft_ms=rec.ttft_ms(t),
                prompt_tokens=stats.get("prompt_tokens"),
                completion_tokens=stats.get("completion_tokens"),
                finish_reason=stats.get("finish_reason"),
                error=t.error,
                text=t.text or "",
                route=route or None,
            )
        )
    return RunData(
        run_id=rec.run_id,
        pipeline=rec.pipeline,
        status=rec.status,
        started_at=rec.started_at,
        ended_at=rec.ended_at if rec.ended_at is not None else rec.started_at,
        conversation=rec.conversation,
        input=rec.input,
        error=rec.error,
        tasks=tasks,
        frames=[(kind, task, at) for _, kind, task, at in rec.trace],
    )


def run_ended(rec: RunRecorder) -> None:
    """Export the ended run's trace (queued; the processor's thread sends it). Never raises."""
    if not _enabled():
        return
    try:
        from .exporting import get_tracer

        emit(get_tracer(), run_data(rec), content=_content, server_of=server_of)
    except Exception:  # tracing must never cost a run
        logger.exception("run %s: its trace could not be built", rec.run_id)
