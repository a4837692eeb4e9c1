"""Resume on the same instance, and the grace period that keeps a dropped run alive for a resume."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.backends.db import SessionStore

from tests.support.scripted import ScriptedProvider
from tests.wsclient import connect, recv, send, start, texts, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


@sync_to_async
def new_session() -> tuple[bytes, bytes]:
    """A stored session and the Cookie header that presents it."""
    store = SessionStore()
    store.create()
    return (b"cookie", f"sessionid={store.session_key}".encode())


async def drop_mid_task_a(scripted_provider, make_pipeline, cookie, model="paced:40:0.01"):
    """Start a run, read a few frames, drop the socket; return the run id and what was seen."""
    await make_pipeline(
        "p", [{"key": f"t{k}", "provider": "scripted", "model": model, "system": k} for k in "ab"]
    )
    comm = await connect([cookie])
    run_id = (await start(comm, "p"))["run_id"]
    seen = []
    while len(seen) < 4:
        frame = await recv(comm)
        if "seq" in frame:
            seen.append(frame)
    await comm.disconnect()
    return run_id, seen


async def test_resume_within_the_grace_period_continues_with_nothing_lost_or_repeated(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "RESUME_GRACE_S": 5.0}
    cookie = await new_session()
    run_id, seen = await drop_mid_task_a(scripted_provider, make_pipeline, cookie)
    await asyncio.sleep(0.1)
    comm = await connect([cookie])
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": seen[-1]["seq"]})
    frames = seen + await until_run_end(comm)
    await comm.disconnect()
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "run.completed"
    for k in "ab":
        assert texts(frames)[f"t{k}"] == "".join(ScriptedProvider.tokens("paced:40", k))


async def test_a_dropped_run_nobody_resumes_is_cancelled_when_the_grace_ends(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "RESUME_GRACE_S": 0.3}
    cookie = await new_session()
    run_id, _ = await drop_mid_task_a(scripted_provider, make_pipeline, cookie, model="paced:500:0.01")
    await asyncio.sleep(0.15)
    assert all(call.closed is None for call in scripted_provider.calls)  # still within the grace
    await asyncio.sleep(0.5)
    assert all(call.closed is not None for call in scripted_provider.calls)
    # The log keeps the whole story: a late resume replays it to run.cancelled.
    comm = await connect([cookie])
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    frames = await until_run_end(comm)
    assert frames[-1]["type"] == "run.cancelled"
    await comm.disconnect()


async def test_without_grace_closing_the_socket_cancels_at_once(
    redis_layer, scripted_provider, make_pipeline
):
    cookie = await new_session()
    await drop_mid_task_a(scripted_provider, make_pipeline, cookie, model="paced:500:0.01")
    # disconnect() awaited the host: every stream is already closed.
    assert scripted_provider.calls and all(call.closed is not None for call in scripted_provider.calls)


async def test_resume_of_a_finished_run_replays_it_whole(redis_layer, scripted_provider, make_pipeline):
    cookie = await new_session()
    await make_pipeline("p", [{"key": "a", "provider": "scripted", "model": "fast:30", "system": "a"}])
    comm = await connect([cookie])
    run_id = (await start(comm, "p"))["run_id"]
    original = await until_run_end(comm)
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 2})
    replay = await until_run_end(comm)
    assert replay == original[2:]
    await comm.disconnect()


async def test_a_lost_final_message_is_recovered_from_the_log(
    redis_layer, scripted_provider, make_pipeline, monkeypatch
):
    from channels.layers import get_channel_layer

    from streams import consumers

    monkeypatch.setattr(consumers, "QUIET_CHECK_S", 0.3)
    layer = get_channel_layer()
    real_group_send = layer.group_send

    async def lossy_group_send(group, message):
        # As if the pub/sub layer lost the message while reconnecting.
        if any(f["type"] == "run.completed" for f in message.get("frames", ())):
            return
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", lossy_group_send)
    await make_pipeline("p", [{"key": "a", "provider": "scripted", "model": "fast:5", "system": "a"}])
    comm = await connect()
    await start(comm, "p")
    frames = await until_run_end(comm, timeout=5)
    assert frames[-1]["type"] == "run.completed"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    await comm.disconnect()


async def test_the_log_and_meta_of_a_finished_run_expire_after_the_log_ttl(
    redis_layer, redis_url, scripted_provider, make_pipeline, settings
):
    import redis.asyncio as aioredis

    settings.STREAMS = {**settings.STREAMS, "LOG_TTL_S": 120}
    await make_pipeline("p", [{"key": "a", "provider": "scripted", "model": "paced:30:0.005", "system": "a"}])
    comm = await connect()
    run_id = (await start(comm, "p"))["run_id"]
    await until_run_end(comm)
    await comm.disconnect()
    client = aioredis.Redis.from_url(redis_url)
    try:
        for part in ("log", "meta"):
            ttl = await client.ttl(f"streams:run:{{{run_id}}}:{part}")
            assert 100 < ttl <= 120, (part, ttl)
    finally:
        await client.aclose()
