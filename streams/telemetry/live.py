"""The live hook: when a run has ended in this process, its trace is built from its RunRecorder.

The host calls `run_ended(recorder)` once the recorder has the run's end (the same data the
records get: task stats, pieces' times, frames as sent). Its times are taken as the records
store them (whole microseconds: streams.records.clock and codec), so a live trace and its replay
(streams.telemetry.replay) are the same to the bit: computed from the exact times, a delivery's
`wait_s` could round to a microsecond more or less than the replay's. With tracing off it
returns at once.
"""

import logging

from ..records.clock import to_datetime
from ..records.codec import as_stored
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


def _stored(ts: float | None, *, up: bool = False) -> float | None:
    """A start (an end: `up`) as the records store it, in epoch seconds."""
    return to_datetime(ts, up=up).timestamp() if ts is not None else None


def run_data(rec: RunRecorder) -> RunData:
    """What the recorder holds of an ended run, for the span builder, with the records' times."""
    t0 = _stored(rec.started_at)
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
                started_at=_stored(t.started_at),
                ended_at=_stored(t.ended_at, up=True),
                first_at=as_stored(t.first_at, t0) if t.first_at is not None else None,
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
        started_at=t0,
        ended_at=_stored(rec.ended_at, up=True) or t0,
        conversation=rec.conversation,
        input=rec.input,
        error=rec.error,
        tasks=tasks,
        frames=[(kind, task, as_stored(at, t0)) for _, kind, task, at in rec.trace],
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
