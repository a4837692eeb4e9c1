"""A recorded run's trace, built from its stored rows with their recorded times (export_trace --otlp)."""

from ..models import Run
from ..records.codec import decode_frames, decode_pieces
from ..records.store import records_db
from .spans import RunData, TaskData

__all__ = ["run_data"]


def _error(code: str, message: str) -> dict | None:
    return {"code": code, "message": message} if code else None


def _ts(value) -> float | None:
    return value.timestamp() if value is not None else None


def run_data(run_id: str) -> RunData | None:
    """The stored run as the span builder's input, or None when there is no such run."""
    run = Run.objects.using(records_db()).filter(pk=run_id).select_related("trace").first()
    if run is None:
        return None
    t0 = run.started_at.timestamp()
    rows = {t.key: t for t in run.tasks.all()}
    tasks = []
    for spec in run.pipeline_snapshot.get("tasks", []):
        row = rows.get(spec["key"])
        if row is None:  # its row was never written (the database was down)
            continue
        pieces = decode_pieces(row.pieces, row.text, t0)
        tasks.append(
            TaskData(
                key=row.key,
                provider=row.provider,
                model=row.model,
                status=row.status,
                started_at=_ts(row.started_at),
                ended_at=_ts(row.ended_at),
                first_at=pieces[0][0] if pieces else None,
                depends_on=tuple(spec.get("depends_on") or ()),
                max_tokens=spec.get("max_tokens"),
                temperature=spec.get("temperature"),
                ttft_ms=row.ttft_ms,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                finish_reason=row.finish_reason or None,
                error=_error(row.error_code, row.error_message),
                text=row.text,
            )
        )
    trace = run.trace if hasattr(run, "trace") else None  # hasattr: False when it has none
    frames = decode_frames(trace.frames, t0) if trace is not None else []
    return RunData(
        run_id=run.run_id,
        pipeline=run.pipeline,
        status=run.status,
        started_at=t0,
        ended_at=_ts(run.ended_at) or t0,
        conversation=run.conversation_id,
        input=run.input,
        error=_error(run.error_code, run.error_message),
        tasks=tasks,
        frames=[(f["type"], f["task"], f["sent_at"]) for f in frames],
    )
