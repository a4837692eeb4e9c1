"""The records' database work, synchronous; the writer runs it in its own thread."""

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Case, F, JSONField, PositiveIntegerField, Q, Value, When
from django.db.models.functions import Greatest

from ..models import Conversation, Run, RunTrace, TaskRun
from .codec import encode_frames, encode_pieces

RUN_UPDATE_FIELDS = ["status", "error_code", "error_message", "ended_at", "incomplete"]
TASK_UPDATE_FIELDS = [
    "title",
    "position",
    "provider",
    "model",
    "status",
    "text",
    "delivered_chars",
    "started_at",
    "ended_at",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "error_code",
    "error_message",
    "pieces",
]


def records_db() -> str:
    """The records' database alias (another than "default" needs a router, for the admin)."""
    return settings.STREAMS["RECORDS_DATABASE"]


# Rows per CASE statement: well under every backend's limit on query parameters.
CHUNK = 200


def write_batch(payloads: list[dict], lost: dict[str, dict], using: str) -> None:
    """Write the writer's payloads (see writer.take) and the given-up runs, in one transaction."""
    connection = connections[using]
    # As Django does around a request: a connection that broke or outlived CONN_MAX_AGE goes.
    connection.close_if_unusable_or_obsolete()
    try:
        with transaction.atomic(using=using):
            _write(payloads, lost, using)
    finally:
        connection.close_if_unusable_or_obsolete()


def _json(value) -> Value:
    """A JSON value as an expression: PostgreSQL then inserts the rows as VALUES, not UNNEST.

    UNNEST passes each column as one array literal, which psycopg's client-side binding
    escapes with a regular expression per quote: for the JSON of pieces and frames, most of the
    writer's CPU. A value that is an expression turns UNNEST off (django's SQLInsertCompiler).
    """
    return Value(value, output_field=JSONField())


def _pieces(row: dict, t0: float) -> Value:
    """A task row's pieces, encoded."""
    times, texts = row["pieces"]
    return _json(encode_pieces(times, texts, row["text"], t0))


def _write(payloads: list[dict], lost: dict[str, dict], using: str) -> None:
    """The body of write_batch."""
    conversations = {}
    for p in payloads:
        if p["conversation"] is not None:
            c = p["conversation"]
            conversations.setdefault(c["id"], Conversation(updated=c["created"], **c))
    if conversations:
        Conversation.objects.using(using).bulk_create(conversations.values(), ignore_conflicts=True)

    new_runs = [Run(**p["run"]) for p in payloads if p["run"] is not None and p["new"]]
    if new_runs:
        Run.objects.using(using).bulk_create(
            new_runs, update_conflicts=True, unique_fields=["run_id"], update_fields=RUN_UPDATE_FIELDS
        )
        # A conversation was last used when its latest run started.
        latest: dict[str, object] = {}
        for run in new_runs:
            if run.conversation_id and (
                run.conversation_id not in latest or latest[run.conversation_id] < run.started_at
            ):
                latest[run.conversation_id] = run.started_at
        for cid, started in latest.items():
            Conversation.objects.using(using).filter(pk=cid).update(updated=Greatest(F("updated"), started))
    old_runs = [Run(**p["run"]) for p in payloads if p["run"] is not None and not p["new"]]
    if old_runs:
        Run.objects.using(using).bulk_update(old_runs, RUN_UPDATE_FIELDS, batch_size=CHUNK)

    tasks = [
        TaskRun(run_id=p["run_id"], **{**row, "pieces": _pieces(row, p["t0"])})
        for p in payloads
        for row in p["tasks"]
    ]
    if tasks:
        TaskRun.objects.using(using).bulk_create(
            tasks,
            update_conflicts=True,
            unique_fields=["run", "key"],
            update_fields=TASK_UPDATE_FIELDS,
            batch_size=CHUNK,
        )
    delivered = [(p["run_id"], key, n) for p in payloads for key, n in p["delivered"]]
    for start in range(0, len(delivered), CHUNK):
        chunk = delivered[start : start + CHUNK]
        match = Q()
        for run_id, key, _ in chunk:
            match |= Q(run_id=run_id, key=key)
        TaskRun.objects.using(using).filter(match).update(
            delivered_chars=Case(
                *(When(run_id=run_id, key=key, then=Value(n)) for run_id, key, n in chunk),
                default=F("delivered_chars"),
                output_field=PositiveIntegerField(),
            )
        )

    traces = [
        RunTrace(
            run_id=p["run_id"],
            frames=_json(encode_frames(p["trace"]["frames"], p["t0"])),
            dropped=p["trace"]["dropped"],
        )
        for p in payloads
        if p["trace"] is not None
    ]
    if traces:
        RunTrace.objects.using(using).bulk_create(
            traces, update_conflicts=True, unique_fields=["run"], update_fields=["frames", "dropped"]
        )

    for run_id, fields in lost.items():
        Run.objects.using(using).filter(pk=run_id).update(incomplete=True, **fields)
