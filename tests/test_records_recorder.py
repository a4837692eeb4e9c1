"""Run records and traces: what is written matches what the client was sent, cut-short runs, outages."""

import asyncio
import itertools
import logging

import pytest
from channels.db import database_sync_to_async

from streams.models import Run, TaskRun
from streams.records import writer as records_writer
from streams.records.recorder import RecordingSink, RunRecorder
from streams.records.writer import flush_all
from streams.runs.pump import RunPump
from tests.support import scripted
from tests.support.records import aexport, delivered, recorded_run, spec_of

pytestmark = pytest.mark.usefixtures("records")

THREE = (
    {"key": "a", "title": "Answer", "model": "paced:40:0.001", "system": "A"},
    {"key": "b", "title": "Background", "model": "fast:300", "system": "B"},
    {"key": "c", "title": "After A", "model": "fast:20", "system": "C", "depends_on": ("a",)},
)
MODELS = {"a": "x:40", "b": "x:300", "c": "x:20"}  # the token counts of THREE, for expected texts


def ordered(values) -> bool:
    """Whether `values` never decrease."""
    return all(x <= y for x, y in itertools.pairwise(values))


async def test_record_and_trace_match_what_the_client_was_sent():
    """Same text per task, same seq and types, timestamps ordered and inside the run."""
    rec, sent = await recorded_run(spec_of(*THREE), "question")
    assert await flush_all()
    trace = await aexport(rec.run_id)

    assert trace["status"] == "completed" and trace["input"] == "question" and trace["pipeline"] == "rec"
    assert [(f["seq"], f["type"], f["task"]) for f in trace["frames"]] == [
        (f["seq"], f["type"], f.get("task")) for f in sent
    ]
    assert [t["key"] for t in trace["tasks"]] == ["a", "b", "c"]
    for task in trace["tasks"]:
        key = task["key"]
        expected = "".join(scripted.ScriptedProvider.tokens(MODELS[key], key.upper()))
        assert task["text"] == delivered(sent, key) == expected
        assert "".join(text for _, text in task["pieces"]) == expected
        assert task["status"] == "completed" and task["error"] is None
        assert task["completion_tokens"] == len(task["pieces"]) and task["prompt_tokens"] == 1
        assert task["ttft_ms"] is not None and task["duration_ms"] >= task["ttft_ms"]

    times = [at for t in trace["tasks"] for at, _ in t["pieces"]] + [f["sent_at"] for f in trace["frames"]]
    assert trace["started_at"] < min(times) and max(times) < trace["ended_at"]
    assert ordered([f["sent_at"] for f in trace["frames"]])
    for task in trace["tasks"]:
        pieces = [at for at, _ in task["pieces"]]
        assert ordered(pieces)
        # A piece is received before the frame that carries it is sent.
        deltas = [f for f in trace["frames"] if f["task"] == task["key"] and f["type"] == "task.delta"]
        assert pieces[0] <= deltas[0]["sent_at"]


async def test_a_cancelled_run_keeps_the_partial_text():
    """The task cut short is cancelled with the pieces it had; the client's share is a prefix of it."""
    spec = spec_of({"key": "a", "model": "paced:400:0.005", "system": "A"}, {"key": "b", "model": "hang"})
    rec, sent = await recorded_run(spec, cancel_after_deltas=3)
    assert sent[-1]["type"] == "run.cancelled"
    assert await flush_all()
    trace = await aexport(rec.run_id)
    a, b = trace["tasks"]
    full = "".join(scripted.ScriptedProvider.tokens("x:400", "A"))
    assert trace["status"] == "cancelled"
    assert a["status"] == "cancelled" and 0 < len(a["text"]) < len(full) and full.startswith(a["text"])
    assert a["text"] == "".join(text for _, text in a["pieces"])
    assert a["text"].startswith(delivered(sent, "a"))
    assert b["status"] == "cancelled" and b["text"] == ""
    row = await database_sync_to_async(TaskRun.objects.get)(run_id=rec.run_id, key="a")
    assert row.text[: row.delivered_chars] == delivered(sent, "a")


async def test_a_failed_task_records_its_error_and_text_so_far():
    """The provider's error code and the text before it."""
    rec, sent = await recorded_run(spec_of({"key": "a", "model": "fail:5", "system": "A"}))
    assert sent[-1]["type"] == "run.failed"
    assert await flush_all()
    (a,) = (await aexport(rec.run_id))["tasks"]
    assert a["status"] == "failed" and a["error"]["code"] == "upstream_error"
    assert a["text"] == "".join(scripted.ScriptedProvider.tokens("x:5", "A"))


async def test_a_task_cut_short_keeps_the_usage_its_provider_reported():
    """cut_short records the stopped stream's tokens; the run's end does not overwrite them."""
    spec = spec_of({"key": "a"})
    rec = RunRecorder("cut", owner="user:1", spec=spec, user_input="x")
    sink = RecordingSink(RunPump("cut", spec.order, publish=None), rec)
    sink.started("a")
    sink.delta("a", "par")
    sink.delta("a", "tial")
    sink.cut_short("a", stats={"prompt_tokens": 7, "completion_tokens": 2, "finish_reason": "length"})
    rec.run_ended("cancelled")
    assert await flush_all()
    (a,) = (await aexport("cut"))["tasks"]
    assert (a["status"], a["text"], a["prompt_tokens"], a["completion_tokens"], a["finish_reason"]) == (
        "cancelled",
        "partial",
        7,
        2,
        "length",
    )


async def test_a_task_written_before_its_frames_were_sent_gets_its_delivered_share_later():
    """A held task's row is written at its end; what the client got of it is added at the run's end."""
    spec = spec_of({"key": "a"}, {"key": "b"})
    rec = RunRecorder("held", owner="user:1", spec=spec, user_input="x")
    rec.piece("b", "held text")
    rec.task_ended("b", stats={"tokens": 1})
    assert await flush_all()  # the run's row and b's row, while a still runs
    row = await database_sync_to_async(TaskRun.objects.get)(run_id="held", key="b")
    assert (row.status, row.text, row.delivered_chars) == ("completed", "held text", 0)
    rec.piece("a", "live")
    rec.task_ended("a", stats={"tokens": 1})
    frames = [("task.started", "a", {}), ("task.delta", "a", {"text": "live"}), ("task.completed", "a", {})]
    frames += [("task.started", "b", {}), ("task.delta", "b", {"text": "held text"})]
    frames += [("task.completed", "b", {}), ("run.completed", None, {})]
    rec.frames(
        [
            {"type": kind, "run_id": "held", "seq": seq, **({"task": task} if task else {}), **extra}
            for seq, (kind, task, extra) in enumerate(frames, 1)
        ]
    )
    assert await flush_all()
    rows = await database_sync_to_async(lambda: {t.key: t.delivered_chars for t in TaskRun.objects.all()})()
    assert rows == {"a": 4, "b": 9}
    run = await database_sync_to_async(Run.objects.get)(pk="held")
    assert run.status == "completed" and run.ended_at > run.started_at


async def test_pieces_beyond_the_cap_are_merged_and_frames_beyond_it_counted(settings):
    """Memory per run is bounded; merging keeps every character and the order of times."""
    settings.STREAMS = {**settings.STREAMS, "RECORDS_MAX_PIECES": 8, "RECORDS_MAX_FRAMES": 5}
    rec = RunRecorder("capped", owner="user:1", spec=spec_of({"key": "a"}), user_input="x")
    task = rec.tasks["a"]
    for i in range(100):
        rec.piece("a", f"{i},")
        assert len(task.texts) < 8
    # Uniform resolution: every entry but the last holds `stride` pieces.
    assert task.count == 100 and task.stride == 16
    assert [entry.count(",") for entry in task.texts[:-1]] == [16] * (len(task.texts) - 1)
    frames = [{"type": "task.started", "run_id": "capped", "seq": 1, "task": "a"}]
    frames += [
        {"type": "task.delta", "run_id": "capped", "seq": s, "task": "a", "text": "t"} for s in range(2, 12)
    ]
    frames += [
        {"type": "task.completed", "run_id": "capped", "seq": 12, "task": "a", "stats": {}},
        {"type": "run.completed", "run_id": "capped", "seq": 13},
    ]
    rec.task_ended("a", stats={"tokens": 100})
    rec.frames(frames)
    assert await flush_all()
    trace = await aexport("capped")
    (a,) = trace["tasks"]
    assert a["text"] == "".join(f"{i}," for i in range(100)) == "".join(t for _, t in a["pieces"])
    assert ordered([at for at, _ in a["pieces"]])
    assert [f["type"] for f in trace["frames"]][-2:] == ["task.completed", "run.completed"]
    assert len(trace["frames"]) == 7  # started and 4 deltas fill the cap; lifecycle frames go beyond it
    run = await database_sync_to_async(Run.objects.select_related("trace").get)(pk="capped")
    assert run.trace.dropped == 6


async def test_a_database_outage_leaves_streaming_intact_and_marks_the_run_incomplete(database_down, caplog):
    """The run streams to its end; its records are given up with one warning, then flagged incomplete."""
    spec = spec_of({**THREE[0], "model": "paced:40:0.01"}, *THREE[1:])
    first_send = asyncio.Event()
    run = asyncio.create_task(recorded_run(spec, "during the outage", on_send=first_send.set))
    await asyncio.wait_for(first_send.wait(), 10)
    assert await flush_all()  # the run's row is written while the database is up
    database_down(True)
    with caplog.at_level(logging.WARNING, logger="streams.records.writer"):
        rec, sent = await run
        assert not await flush_all()  # retried, then given up

    assert sent[-1]["type"] == "run.completed"
    for key, model in (("a", "x:40"), ("b", "x:300"), ("c", "x:20")):
        assert delivered(sent, key) == "".join(scripted.ScriptedProvider.tokens(model, key.upper()))
    warnings = [r for r in caplog.records if rec.run_id in r.getMessage()]
    assert len(warnings) == 1 and "incomplete" in warnings[0].getMessage()
    assert warnings[0].run_id == rec.run_id
    assert rec.run_id not in records_writer.get_writer().pending  # given up: its memory is freed

    database_down(False)
    assert await flush_all()
    row = await database_sync_to_async(Run.objects.get)(pk=rec.run_id)
    assert row.incomplete and row.status == "completed" and row.ended_at is not None


async def test_with_the_database_down_from_the_start_runs_still_stream(database_down, caplog):
    """No record can be written at all: the run is unaffected and the log names it."""
    database_down(True)
    with caplog.at_level(logging.WARNING, logger="streams.records.writer"):
        rec, sent = await recorded_run(spec_of({"key": "a", "model": "fast:50", "system": "A"}))
        assert not await flush_all()
    assert sent[-1]["type"] == "run.completed"
    assert delivered(sent, "a") == "".join(scripted.ScriptedProvider.tokens("x:50", "A"))
    assert [r.run_id for r in caplog.records if getattr(r, "run_id", None)] == [rec.run_id]
    database_down(False)
    assert await flush_all()
    assert not await database_sync_to_async(Run.objects.filter(pk=rec.run_id).exists)()


def _drop_writer_connection(writer) -> None:
    """Break the connection the writer's thread keeps, behind Django's back (a server restart)."""
    from django.db import connection, connections

    held = writer._executor.submit(lambda: connections["default"].connection).result()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # from another connection, as a restart would
            cursor.execute("SELECT pg_terminate_backend(%s)", [held.info.backend_pid])
    else:
        writer._executor.submit(held.close).result()


async def test_a_connection_dropped_between_batches_is_replaced_and_nothing_is_lost(caplog):
    """The writer keeps its connection; when the server drops it, the next batch reconnects."""
    spec = spec_of({"key": "a", "model": "fast:30", "system": "A"})
    await recorded_run(spec)
    assert await flush_all()  # the writer's thread now holds an open connection
    await database_sync_to_async(_drop_writer_connection)(records_writer.get_writer())

    with caplog.at_level(logging.INFO, logger="streams.records.writer"):
        rec, sent = await recorded_run(spec, "after the drop")
        assert await flush_all()
    row = await database_sync_to_async(Run.objects.get)(pk=rec.run_id)
    assert row.status == "completed" and not row.incomplete
    trace = await aexport(rec.run_id)
    assert (
        trace["tasks"][0]["text"]
        == delivered(sent, "a")
        == "".join(scripted.ScriptedProvider.tokens("x:30", "A"))
    )
    assert [(f["seq"], f["type"]) for f in trace["frames"]] == [(f["seq"], f["type"]) for f in sent]
    messages = [r.getMessage() for r in caplog.records]
    assert any("retrying" in m for m in messages) and any("work again" in m for m in messages)


async def test_a_task_keeps_its_first_piece_time_after_the_writer_freed_its_pieces():
    """Regression: the trace (streams.telemetry) reads first_at at the run's end, after the writer
    has written an early task and given its pieces' memory back."""
    rec, _ = await recorded_run(spec_of(*THREE), "question")
    assert await flush_all()
    stored = await database_sync_to_async(lambda: {t.key: t.ttft_ms for t in TaskRun.objects.all()})()
    for key, t in rec.tasks.items():
        assert t.pieces == ([], [])  # written and freed
        assert t.first_at is not None and t.started_at <= t.first_at <= t.ended_at
        assert rec.ttft_ms(t) == stored[key]
