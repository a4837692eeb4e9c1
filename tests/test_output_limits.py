"""Output bounds through the consumer and real Redis: frame size, bytes per task, bytes per run log."""

import asyncio
import json

import pytest

from tests.support.scripted import ScriptedProvider
from tests.wsclient import connect, start, texts

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


async def raw_until_end(comm, timeout: float = 60) -> list[str]:
    """Raw text frames until the run's final frame (progress dropped)."""
    out = []
    while True:
        raw = await comm.receive_from(timeout=timeout)
        frame = json.loads(raw)
        if frame["type"] == "run.progress":
            continue
        out.append(raw)
        if frame["type"] in ("run.completed", "run.failed", "run.cancelled"):
            return out


async def test_a_held_task_flushed_after_a_huge_answer_comes_in_frames_under_100_kib(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_TASK_BYTES": 0}
    await make_pipeline(
        "huge",
        [
            {"key": "a", "provider": "scripted", "model": "paced:3:0.2", "system": "a"},
            {"key": "b", "provider": "scripted", "model": "fast:160000", "system": "b"},
        ],
    )
    comm = await connect()
    await start(comm, "huge")
    raws = await raw_until_end(comm)
    await comm.disconnect()
    frames = [json.loads(r) for r in raws]
    expected_b = "".join(ScriptedProvider.tokens("fast:160000", "b"))
    assert len(expected_b.encode()) > 1024 * 1024  # one frame would have passed daphne's limit
    assert texts(frames)["b"] == expected_b
    assert frames[-1]["type"] == "run.completed"
    assert max(len(r.encode()) for r in raws) < 100 * 1024
    assert max(len(f["text"]) for f in frames if f["type"] == "task.delta") <= 16384
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))


async def test_a_task_past_its_byte_bound_fails_too_large_and_the_others_go_on(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_TASK_BYTES": 50_000}
    await make_pipeline(
        "big",
        [
            {"key": "a", "provider": "scripted", "model": "fast:1000000", "system": "a"},
            {"key": "b", "provider": "scripted", "model": "fast:300", "system": "b"},
        ],
    )
    comm = await connect()
    await start(comm, "big")
    frames = [json.loads(r) for r in await raw_until_end(comm)]
    await comm.disconnect()
    failed = {f["task"]: f["error"]["code"] for f in frames if f["type"] == "task.failed"}
    assert failed == {"a": "too_large"}
    sent_a = texts(frames)["a"]
    assert len(sent_a.encode()) <= 50_000
    assert "".join(ScriptedProvider.tokens("fast:1000000", "a")).startswith(sent_a)
    assert texts(frames)["b"] == "".join(ScriptedProvider.tokens("fast:300", "b"))
    assert frames[-1]["type"] == "run.failed" and frames[-1]["error"]["code"] == "tasks_failed"
    big = next(c for c in scripted_provider.calls if c.model == "fast:1000000")
    # Its upstream stream was closed (before its task.failed was sent) once it passed the bound.
    assert big.closed is not None and big.tokens_sent < 10_000


async def test_a_run_whose_log_passes_its_bound_fails_too_large_and_stops_its_tasks(
    redis_layer, scripted_provider, make_pipeline, settings
):
    from streams.runs.gate import frame_bytes
    from streams.store.runlog import get_run_log

    cap = 60_000
    settings.STREAMS = {**settings.STREAMS, "MAX_RUN_LOG_BYTES": cap}
    await make_pipeline(
        "log",
        [
            {"key": "a", "provider": "scripted", "model": "fast:4000", "system": "a"},
            {"key": "b", "provider": "scripted", "model": "fast:1000000", "system": "b"},
            {"key": "c", "provider": "scripted", "model": "fast:1000000", "system": "c"},
        ],
    )
    comm = await connect()
    accepted = await start(comm, "log")
    frames = [json.loads(r) for r in await raw_until_end(comm)]
    await comm.disconnect()
    assert frames[-1]["type"] == "run.failed" and frames[-1]["error"]["code"] == "too_large"
    logged = await get_run_log().read(accepted["run_id"], 0)
    assert logged == frames
    assert sum(frame_bytes(f) for f in logged) <= cap
    for k in "abc":
        mine = [f["type"] for f in frames if f.get("task") == k]
        assert mine[0] == "task.started" and mine[-1] in ("task.completed", "task.failed")
    # The run ended before its tasks did: they are stopped and their streams closed.
    async with asyncio.timeout(5):
        while any(c.closed is None for c in scripted_provider.calls):  # noqa: ASYNC110 (no event)
            await asyncio.sleep(0.01)
    assert all(call.tokens_sent < 1_000_000 for call in scripted_provider.calls)
