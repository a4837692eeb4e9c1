"""Runs driven through the real orchestrator and pump with a RunRecorder, as the host will drive them."""

import asyncio
import uuid

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from streams.pipelines.specs import PipelineSpec, TaskSpec
from streams.records.conversations import load_tree
from streams.records.recorder import RecordingSink, RunRecorder
from streams.records.trace import export_trace
from streams.records.writer import close_writer
from streams.runs import orchestrator
from streams.runs.pump import RunPump
from tests.support import scripted


def spec_of(*tasks: dict, slug: str = "rec") -> PipelineSpec:
    """A pipeline of scripted tasks (dicts of TaskSpec fields)."""
    return PipelineSpec(slug=slug, name=slug, tasks=tuple(TaskSpec(provider="scripted", **t) for t in tasks))


async def recorded_run(
    spec: PipelineSpec,
    user_input: str = "hello",
    *,
    owner: str = "user:1",
    conversation: str | None = None,
    parent: str | None = None,
    cancel_after_deltas: int | None = None,
    on_send=None,
) -> tuple[RunRecorder, list[dict]]:
    """Run `spec` as RunHost._main does, recording it; return the recorder and every frame sent.

    In a conversation the run follows `parent`, by default its newest run (as a start would).
    """
    run_id = uuid.uuid4().hex
    if conversation is not None and parent is None:
        parent = (await load_tree(conversation))[0].newest() or ""
    rec = RunRecorder(
        run_id,
        owner=owner,
        spec=spec,
        user_input=user_input,
        conversation=conversation,
        parent=parent or "",
    )
    sent: list[dict] = []
    deltas = asyncio.Event()

    async def publish(frames):
        await asyncio.sleep(0)  # a send suspends, as a real one does
        sent.extend(frames)
        rec.frames(frames)
        if on_send is not None:
            on_send()
        if cancel_after_deltas is not None and cancel_after_deltas <= sum(
            f["type"] == "task.delta" for f in sent
        ):
            deltas.set()

    pump = RunPump(run_id, spec.order, publish)
    execute = asyncio.create_task(
        orchestrator.execute(
            spec,
            user_input,
            RecordingSink(pump, rec),
            default_timeout_s=30,
            providers=lambda name: scripted.PROVIDER,
        )
    )
    sender = asyncio.create_task(pump.run())
    if cancel_after_deltas is not None:
        await asyncio.wait_for(deltas.wait(), 10)
        execute.cancel()
    try:
        await execute
    except asyncio.CancelledError:
        pump.cancel()
    await asyncio.wait_for(sender, 10)
    return rec, sent


def delivered(frames: list[dict], task: str) -> str:
    """The text the client received of `task`."""
    return "".join(f["text"] for f in frames if f["type"] == "task.delta" and f["task"] == task)


aexport = database_sync_to_async(export_trace)


@pytest.fixture
async def records(transactional_db):
    """A real database for records; the loop's writer is flushed and closed afterwards."""
    scripted.PROVIDER.calls.clear()
    yield
    await close_writer()


@pytest.fixture
def database_down(settings):
    """A database alias that points at nothing; `down()` sends the records writer there."""
    default = connections.settings["default"]
    if default["ENGINE"].endswith("sqlite3"):
        broken = {**default, "NAME": "/nonexistent-directory/records.sqlite3"}
    else:
        broken = {**default, "HOST": "127.0.0.1", "PORT": "1"}  # nothing listens on port 1
    connections.settings["records_down"] = broken
    settings.STREAMS = {**settings.STREAMS, "RECORDS_RETRIES": 2, "RECORDS_FLUSH_S": 60.0}

    def down(is_down: bool):
        settings.STREAMS = {**settings.STREAMS, "RECORDS_DATABASE": "records_down" if is_down else "default"}

    yield down
    del connections.settings["records_down"]
