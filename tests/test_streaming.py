"""End to end through the consumer and real Redis: order, concurrency, no loss, cancellation, DAG."""

import asyncio
import time

import pytest

from tests.support.scripted import ScriptedProvider
from tests.wsclient import connect, recv, send, start, task_order, texts, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


def four(model: str) -> list[dict]:
    """Four independent scripted tasks a..d with the same model, each tagging its text."""
    return [
        {"key": f"task_{k}", "title": k.upper(), "provider": "scripted", "model": model, "system": k}
        for k in "abcd"
    ]


async def test_a_streams_live_while_b_c_d_run_and_then_flush_in_order(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline("p", four("paced:20:0.02"))
    comm = await connect()
    t0 = time.monotonic()
    await start(comm, "p")
    frames = await until_run_end(comm)
    elapsed = time.monotonic() - t0
    await comm.disconnect()

    assert task_order(frames) == ["task_a", "task_b", "task_c", "task_d"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    for k in "abcd":
        assert texts(frames)[f"task_{k}"] == "".join(ScriptedProvider.tokens("paced:20", k))
    assert frames[-1]["type"] == "run.completed"
    # Four tasks of ~0.4 s each ran at the same time: about T, not 4T.
    assert elapsed < 1.2, elapsed
    completed = [f for f in frames if f["type"] == "task.completed"]
    assert all(c["stats"]["tokens"] == 20 and c["stats"]["ttft_ms"] is not None for c in completed)


async def test_first_delta_of_a_arrives_before_b_c_d_have_finished(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline(
        "p",
        [
            {"key": "task_a", "provider": "scripted", "model": "paced:5:0.02", "system": "a"},
            *[
                {"key": f"task_{k}", "provider": "scripted", "model": "paced:30:0.02", "system": k}
                for k in "bcd"
            ],
        ],
    )
    comm = await connect()
    await start(comm, "p")
    while (frame := await recv(comm))["type"] != "task.delta":
        pass
    assert frame["task"] == "task_a"
    # B, C and D are still streaming: none of their calls is closed yet.
    others = [c for c in scripted_provider.calls if not c.model.startswith("paced:5")]
    assert len(others) == 3 and all(c.closed is None for c in others)
    frames = await until_run_end(comm)
    assert task_order([frame, *frames]) == ["task_a", "task_b", "task_c", "task_d"]
    await comm.disconnect()


async def test_twenty_connections_of_fast_providers_lose_nothing(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline("fast", four("fast:2000"))

    async def one_client():
        comm = await connect()
        await start(comm, "fast")
        frames = await until_run_end(comm, timeout=60)
        await comm.disconnect()
        return frames

    results = await asyncio.gather(*(one_client() for _ in range(20)))
    for frames in results:
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert task_order(frames) == ["task_a", "task_b", "task_c", "task_d"]
        for k in "abcd":
            assert texts(frames)[f"task_{k}"] == "".join(ScriptedProvider.tokens("fast:2000", k))
        assert frames[-1]["type"] == "run.completed"


@pytest.mark.parametrize("how", ["cancel", "close"])
async def test_cancel_or_close_closes_every_provider_stream_within_200ms(
    how, redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline("slow", four("paced:1000:0.01"))
    comm = await connect()
    accepted = await start(comm, "slow")
    while (await recv(comm))["type"] != "task.delta":
        pass
    t0 = time.monotonic()
    if how == "cancel":
        await send(comm, {"type": "run.cancel", "run_id": accepted["run_id"]})
        frames = await until_run_end(comm)
        assert frames[-1]["type"] == "run.cancelled"
        assert [f["seq"] for f in frames] == list(range(frames[0]["seq"], frames[-1]["seq"] + 1))
        # Nothing of the run is sent after its final frame.
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()
    else:
        await comm.disconnect()
    await asyncio.sleep(0.25)
    assert len(scripted_provider.calls) == 4
    for call in scripted_provider.calls:
        assert call.closed is not None and call.closed - t0 < 0.2, call
        assert call.tokens_sent < 1000


async def test_dependent_task_sees_both_outputs_and_a_failed_dependency_fails_only_its_dependents(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline(
        "dag",
        [
            {"key": "a", "provider": "scripted", "model": "fast:3", "system": "a"},
            {"key": "b", "provider": "scripted", "model": "fast:2", "system": "b"},
            {"key": "bad", "provider": "scripted", "model": "fail:2", "system": "x"},
            {
                "key": "join",
                "provider": "scripted",
                "model": "echo",
                "prompt": "A={{ outputs.a }}|B={{ outputs.b }}",
                "depends_on": ["a", "b"],
            },
            {"key": "after_bad", "provider": "scripted", "model": "echo", "depends_on": ["bad"]},
            {"key": "free", "provider": "scripted", "model": "fast:4", "system": "f"},
        ],
    )
    comm = await connect()
    await start(comm, "dag")
    frames = await until_run_end(comm)
    await comm.disconnect()
    out = texts(frames)
    a, b = "".join(ScriptedProvider.tokens("fast:3", "a")), "".join(ScriptedProvider.tokens("fast:2", "b"))
    assert out["join"] == f"A={a}|B={b}"
    failed = {f["task"]: f["error"]["code"] for f in frames if f["type"] == "task.failed"}
    assert failed == {"bad": "upstream_error", "after_bad": "dependency_failed"}
    assert out["free"] == "".join(ScriptedProvider.tokens("fast:4", "f"))
    assert task_order(frames) == ["a", "b", "bad", "join", "after_bad", "free"]
    assert frames[-1]["type"] == "run.failed"


async def test_progress_reports_background_tasks_while_the_head_streams(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "PROGRESS_INTERVAL_S": 0.1}
    await make_pipeline("p", four("paced:25:0.02"))
    comm = await connect()
    await start(comm, "p")
    progress = []
    while (frame := await recv(comm))["type"] not in ("run.completed", "run.failed"):
        if frame["type"] == "run.progress":
            progress.append(frame)
    await comm.disconnect()
    assert progress, "no run.progress while task_a streamed"
    assert "seq" not in progress[0]
    assert set(progress[0]["tasks"]) <= {"task_b", "task_c", "task_d"}
    assert any(t["tokens"] > 0 and t["state"] in ("running", "done") for t in progress[-1]["tasks"].values())


async def test_a_connection_without_session_or_user_owns_its_runs_alone(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "RESUME_GRACE_S": 5.0}
    await make_pipeline("p", four("paced:30:0.01"))
    first = await connect()
    accepted = await start(first, "p")
    seen = [await recv(first) for _ in range(3)]
    seen = [f for f in seen if "seq" in f]
    await first.disconnect()
    second = await connect()
    # Anonymous without a session: the owner is the connection, so another one may not resume.
    await send(second, {"type": "run.resume", "run_id": accepted["run_id"], "after_seq": seen[-1]["seq"]})
    assert (await recv(second))["code"] == "unknown_run"
    await second.disconnect()


async def test_a_pipeline_edited_after_a_run_is_used_as_edited_by_the_next_run(
    redis_layer, scripted_provider, make_pipeline
):
    from asgiref.sync import sync_to_async

    from streams.models import PipelineTask

    await make_pipeline("p", [{"key": "a", "provider": "scripted", "model": "fast:3", "system": "a"}])
    comm = await connect()
    await start(comm, "p")
    assert texts(await until_run_end(comm))["a"] == "".join(ScriptedProvider.tokens("fast:3", "a"))
    # Specs are cached for a few seconds; a save in this process must not have to wait.
    await sync_to_async(PipelineTask.objects.filter(key="a").update)(model="fast:5")  # no signal
    task = await sync_to_async(PipelineTask.objects.get)(key="a")
    task.system = "b"
    await sync_to_async(task.save)()
    await start(comm, "p")
    assert texts(await until_run_end(comm))["a"] == "".join(ScriptedProvider.tokens("fast:5", "b"))
    await comm.disconnect()
