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
    "parent",
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


class _Statement:
    """One SQL statement and the row keys its placeholders take, in order."""

    __slots__ = ("params", "sql", "table")

    def __init__(self, table: "_Table", sql: str, params: list[str]):
        self.table, self.sql, self.params = table, sql, params

    def values(self, row: dict, connection) -> list:
        """The row's parameters, datetimes and JSON adapted by their fields.

        The writer's other values (str, int, float, bool, None) are already what every
        backend takes, and adapting each through its field cost ~1 us.
        """
        fields, adapted = self.table.fields, self.table.adapted
        return [
            fields[n].get_db_prep_save(row[n], connection) if n in adapted else row[n] for n in self.params
        ]


class _Table:
    """One model's table for hand-written SQL: its quoted names and the statements on it."""

    def __init__(self, model, connection):
        self.fields = {f.name: f for f in model._meta.concrete_fields}
        self.adapted = {n for n, f in self.fields.items() if isinstance(f, (DateTimeField, JSONField))}
        self.quote = connection.ops.quote_name
        self.name = self.quote(model._meta.db_table)

    def col(self, name: str) -> str:
        """A field's quoted column."""
        return self.quote(self.fields[name].column)

    def upsert(self, names: list[str], conflict: list[str], update: list[str]) -> _Statement:
        """INSERT of `names` that, on a conflict of `conflict`, updates `update` (none: ignores it)."""
        cols = ", ".join(self.col(n) for n in names)
        marks = ", ".join(["%s"] * len(names))
        target = ", ".join(self.col(n) for n in conflict)
        action = (
            "UPDATE SET " + ", ".join(f"{self.col(n)} = excluded.{self.col(n)}" for n in update)
            if update
            else "NOTHING"
        )
        sql = f"INSERT INTO {self.name} ({cols}) VALUES ({marks}) ON CONFLICT ({target}) DO {action}"
        return _Statement(self, sql, names)

    def update(self, names: list[str], where: list[str], *, only_if_later: str | None = None) -> _Statement:
        """UPDATE of `names` for the row(s) matching `where`; `only_if_later`: while that column is older."""
        sets = ", ".join(f"{self.col(n)} = %s" for n in names)
        match = " AND ".join(f"{self.col(n)} = %s" for n in where)
        params = [*names, *where]
        if only_if_later:
            match += f" AND {self.col(only_if_later)} < %s"
            params.append(only_if_later)
        return _Statement(self, f"UPDATE {self.name} SET {sets} WHERE {match}", params)


class _Statements:
    """The writer's statements for one database alias (built once)."""

    def __init__(self, connection):
        conv, runs = _Table(Conversation, connection), _Table(Run, connection)
        tasks, traces = _Table(TaskRun, connection), _Table(RunTrace, connection)
        self.conversation_insert = conv.upsert(["id", "owner", "title", "created", "updated"], ["id"], [])
        # A conversation was last used when its latest run started.
        self.conversation_touch = conv.update(["updated"], ["id"], only_if_later="updated")
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

    def run(self, statement: _Statement, rows) -> None:
        """The statement once per row (nothing when there are none)."""
        params = [statement.values(row, self.connection) for row in rows]
        if params:
            self.cursor.executemany(statement.sql, params)

    def write(self, payloads: list[dict], lost: dict[str, dict]) -> None:
        """Every kind of row of the payloads, one executemany each."""
        s = self.s
        conversations = {}
        for p in payloads:
            if (c := p["conversation"]) is not None:
                conversations.setdefault(c["id"], {**c, "updated": c["created"]})
        self.run(s.conversation_insert, conversations.values())

        new_runs = [p["run"] for p in payloads if p["run"] and p["new"]]
        self.run(s.run_insert, new_runs)
        latest: dict[str, dict] = {}
        for r in new_runs:
            cid = r["conversation"]
            if cid and (cid not in latest or latest[cid]["updated"] < r["started_at"]):
                latest[cid] = {"id": cid, "updated": r["started_at"]}
        self.run(s.conversation_touch, latest.values())
        self.run(s.run_update, [p["run"] for p in payloads if p["run"] and not p["new"]])

        self.run(
            s.task_upsert,
            [
                {**row, "run": p["run_id"], "pieces": encode_pieces(*row["pieces"], row["text"], p["t0"])}
                for p in payloads
                for row in p["tasks"]
            ],
        )
        self.run(
            s.delivered,
            [
                {"delivered_chars": n, "run": p["run_id"], "key": key}
                for p in payloads
                for key, n in p["delivered"]
            ],
        )
        self.run(
            s.trace_upsert,
            [
                {
                    "run": p["run_id"],
                    "frames": encode_frames(p["trace"]["frames"], p["t0"]),
                    "dropped": p["trace"]["dropped"],
                }
                for p in payloads
                if p["trace"] is not None
            ],
        )
        # Given-up runs: their final status (writer._give_up keeps every RUN_UPDATE_FIELDS but this).
        self.run(
            s.run_update,
            [{**fields, "incomplete": True, "run_id": run_id} for run_id, fields in lost.items()],
        )
