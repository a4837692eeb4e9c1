"""The records' database work, synchronous; the writer runs it in its own thread.

Each batch is a handful of hand-written statements run with `executemany`, one per kind of
row, in one transaction. The ORM's bulk_create/bulk_update did the same work through its
expression compiler, which cost most of the records' CPU (bench/records_cost.py); the SQL
here (INSERT ... ON CONFLICT, UPDATE ... WHERE) is the same on SQLite and PostgreSQL, and
datetimes and JSON are adapted by the models' own fields, so they are stored as the ORM stores them.
"""

import threading
import time

from django.conf import settings
from django.db import connections, transaction
from django.db.models import DateTimeField, JSONField

from ..models import Conversation, Run, RunTrace, TaskRun
from .codec import encode_frames, encode_pieces

RUN_UPDATE_FIELDS = ["status", "error_code", "error_message", "ended_at", "incomplete"]
RUN_INSERT_FIELDS = [
    "run_id",
    "conversation",
    "owner",
    "pipeline",
    "pipeline_snapshot",
    "input",
    "started_at",
    *RUN_UPDATE_FIELDS,
]
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
# A connection idle this long is checked before it is used (a server may have dropped it).
IDLE_CHECK_S = 30.0


def records_db() -> str:
    """The records' database alias (another than "default" needs a router, for the admin)."""
    return settings.STREAMS["RECORDS_DATABASE"]


class _Table:
    """One model's table for hand-written SQL: quoted names, and a row's values as the DB takes them."""

    def __init__(self, model, connection):
        self.fields = {f.name: f for f in model._meta.concrete_fields}
        # Only these need the field's adaptation; the writer's other values (str, int, float,
        # bool, None) are already what every backend takes, and adapting each cost ~1 us.
        self.adapted = {n for n, f in self.fields.items() if isinstance(f, (DateTimeField, JSONField))}
        self.quote = connection.ops.quote_name
        self.name = self.quote(model._meta.db_table)

    def col(self, name: str) -> str:
        """A field's quoted column."""
        return self.quote(self.fields[name].column)

    def values(self, names: list[str], row: dict, connection) -> list:
        """The row's values of `names`, adapted by their fields."""
        fields, adapted = self.fields, self.adapted
        return [fields[n].get_db_prep_save(row[n], connection) if n in adapted else row[n] for n in names]

    def upsert(self, names: list[str], conflict: list[str], update: list[str]) -> str:
        """INSERT of `names` that, on a conflict of `conflict`, updates `update` (none: ignores it)."""
        cols = ", ".join(self.col(n) for n in names)
        marks = ", ".join(["%s"] * len(names))
        target = ", ".join(self.col(n) for n in conflict)
        action = (
            "UPDATE SET " + ", ".join(f"{self.col(n)} = excluded.{self.col(n)}" for n in update)
            if update
            else "NOTHING"
        )
        return f"INSERT INTO {self.name} ({cols}) VALUES ({marks}) ON CONFLICT ({target}) DO {action}"

    def update(self, names: list[str], where: list[str]) -> str:
        """UPDATE of `names` for the row(s) matching `where`."""
        sets = ", ".join(f"{self.col(n)} = %s" for n in names)
        match = " AND ".join(f"{self.col(n)} = %s" for n in where)
        return f"UPDATE {self.name} SET {sets} WHERE {match}"


class _Statements:
    """The writer's statements for one database alias (built once)."""

    def __init__(self, connection):
        self.conversations = _Table(Conversation, connection)
        self.runs = _Table(Run, connection)
        self.tasks = _Table(TaskRun, connection)
        self.traces = _Table(RunTrace, connection)
        conv, runs, tasks, traces = self.conversations, self.runs, self.tasks, self.traces
        self.conversation_insert = conv.upsert(["id", "owner", "title", "created", "updated"], ["id"], [])
        # A conversation was last used when its latest run started.
        self.conversation_touch = f"{conv.update(['updated'], ['id'])} AND {conv.col('updated')} < %s"
        self.run_insert = runs.upsert(RUN_INSERT_FIELDS, ["run_id"], RUN_UPDATE_FIELDS)
        self.run_update = runs.update(RUN_UPDATE_FIELDS, ["run_id"])
        self.task_upsert = tasks.upsert(
            ["run", "key", *TASK_UPDATE_FIELDS], ["run", "key"], TASK_UPDATE_FIELDS
        )
        self.delivered = tasks.update(["delivered_chars"], ["run", "key"])
        self.trace_upsert = traces.upsert(["run", "frames", "dropped"], ["run"], ["frames", "dropped"])


_statements: dict[str, _Statements] = {}
_local = threading.local()  # per writer thread: when its connection was last used


def write_batch(payloads: list[dict], lost: dict[str, dict], using: str) -> None:
    """Write the writer's payloads (see writer.take) and the given-up runs, in one transaction.

    The writer's thread keeps its connection between batches (it writes several times a
    second under load; opening one per batch cost 0.7 ms of CPU each time): it is closed after a
    failed batch, and checked first when it sat idle for IDLE_CHECK_S.
    """
    connection = connections[using]
    idle = time.monotonic() - getattr(_local, "last_used", time.monotonic())
    if connection.connection is not None and idle > IDLE_CHECK_S and not connection.is_usable():
        connection.close()
    statements = _statements.get(using)
    if statements is None:
        statements = _statements[using] = _Statements(connection)
    try:
        with transaction.atomic(using=using), connection.cursor() as cursor:
            _Batch(cursor, statements, connection).write(payloads, lost)
    except Exception:
        connection.close()  # broken or not, the next batch starts on a fresh connection
        raise
    finally:
        _local.last_used = time.monotonic()


class _Batch:
    """One batch's statements on one cursor."""

    def __init__(self, cursor, statements: _Statements, connection):
        self.cursor, self.s, self.connection = cursor, statements, connection

    def rows(self, table: _Table, names: list[str], rows, *extra: str) -> list[list]:
        """Each row's values of `names` (then of the `extra` names, unadapted: WHERE keys)."""
        return [[*table.values(names, row, self.connection), *(row[n] for n in extra)] for row in rows]

    def write(self, payloads: list[dict], lost: dict[str, dict]) -> None:
        """Every kind of row of the payloads, one executemany each."""
        s, run = self.s, self.cursor.executemany
        conversations = {}
        for p in payloads:
            if (c := p["conversation"]) is not None:
                conversations.setdefault(c["id"], {**c, "updated": c["created"]})
        if conversations:
            cols = ["id", "owner", "title", "created", "updated"]
            run(s.conversation_insert, self.rows(s.conversations, cols, conversations.values()))

        new_runs = [
            {**p["run"], "conversation": p["run"]["conversation_id"]}
            for p in payloads
            if p["run"] and p["new"]
        ]
        if new_runs:
            run(s.run_insert, self.rows(s.runs, RUN_INSERT_FIELDS, new_runs))
            latest: dict[str, dict] = {}
            for r in new_runs:
                cid = r["conversation"]
                if cid and (cid not in latest or latest[cid]["updated"] < r["started_at"]):
                    latest[cid] = {"id": cid, "updated": r["started_at"]}
            # UPDATE ... SET updated = %s WHERE id = %s AND updated < %s
            touch = self.rows(s.conversations, ["updated"], latest.values(), "id")
            if touch:
                run(s.conversation_touch, [[*t, t[0]] for t in touch])
        old_runs = [p["run"] for p in payloads if p["run"] and not p["new"]]
        if old_runs:
            run(s.run_update, self.rows(s.runs, RUN_UPDATE_FIELDS, old_runs, "run_id"))

        tasks = [
            {**row, "run": p["run_id"], "pieces": encode_pieces(*row["pieces"], row["text"], p["t0"])}
            for p in payloads
            for row in p["tasks"]
        ]
        if tasks:
            run(s.task_upsert, self.rows(s.tasks, ["run", "key", *TASK_UPDATE_FIELDS], tasks))
        delivered = [(n, p["run_id"], key) for p in payloads for key, n in p["delivered"]]
        if delivered:
            run(s.delivered, delivered)

        traces = [
            {
                "run": p["run_id"],
                "frames": encode_frames(p["trace"]["frames"], p["t0"]),
                "dropped": p["trace"]["dropped"],
            }
            for p in payloads
            if p["trace"] is not None
        ]
        if traces:
            run(s.trace_upsert, self.rows(s.traces, ["run", "frames", "dropped"], traces))

        for run_id, fields in lost.items():
            row = {**fields, "incomplete": True, "run_id": run_id}
            names = [n for n in row if n != "run_id"]
            self.cursor.execute(
                s.runs.update(names, ["run_id"]), self.rows(s.runs, names, [row], "run_id")[0]
            )
