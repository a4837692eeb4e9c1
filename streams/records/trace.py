"""A run's record and trace in the export_trace shape of the contract (shared/PROTOCOL.md)."""

from ..models import Run
from .codec import decode_frames, decode_pieces
from .store import records_db

__all__ = ["export_trace"]


def _error(code: str, message: str) -> dict | None:
    """{"code", "message"}, or None when there was no error."""
    return {"code": code, "message": message} if code else None


def export_trace(run_id: str) -> dict | None:
    """The run as one JSON-ready object, or None when there is no such run.

    Tasks come in delivery order; a task the record has no row for (the run was cut short
    before it, or it is still running) is listed from the pipeline snapshot.
    """
    run = Run.objects.using(records_db()).filter(pk=run_id).select_related("trace").first()
    if run is None:
        return None
    rows = {t.key: t for t in run.tasks.all()}
    t0 = run.started_at.timestamp()
    tasks = []
    for spec in run.pipeline_snapshot.get("tasks", []):
        row = rows.pop(spec["key"], None)
        if row is None:
            tasks.append(
                {
                    "key": spec["key"],
                    "title": spec.get("title", ""),
                    "provider": spec.get("provider", ""),
                    "model": spec.get("model", ""),
                    "status": "pending" if run.status == "running" else "cancelled",
                    "text": "",
                    "ttft_ms": None,
                    "duration_ms": None,
                    "prompt_tokens": None,
                    "completion_tokens": None,
                    "finish_reason": None,
                    "error": None,
                    "pieces": [],
                }
            )
            continue
        tasks.append(
            {
                "key": row.key,
                "title": row.title,
                "provider": row.provider,
                "model": row.model,
                "status": row.status,
                "text": row.text,
                "ttft_ms": row.ttft_ms,
                "duration_ms": row.duration_ms,
                "prompt_tokens": row.prompt_tokens,
                "completion_tokens": row.completion_tokens,
                "finish_reason": row.finish_reason or None,
                "error": _error(row.error_code, row.error_message),
                "pieces": decode_pieces(row.pieces, row.text, t0),
            }
        )
    trace = run.trace if hasattr(run, "trace") else None  # hasattr: False when it has none
    return {
        "run_id": run.run_id,
        "pipeline": run.pipeline,
        "conversation": run.conversation_id,
        "input": run.input,
        "status": run.status,
        "started_at": t0,
        "ended_at": run.ended_at.timestamp() if run.ended_at is not None else None,
        "tasks": tasks,
        "frames": decode_frames(trace.frames, t0) if trace is not None else [],
    }
