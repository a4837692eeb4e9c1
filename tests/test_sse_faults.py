"""What bad luck costs an SSE response, in process: a bug is a JSON 500 or an `error` event,
a client that does not read ends its response and detaches, and cleanup runs either way."""

import asyncio
import logging
import uuid

from streams.session import shutdown
from streams.session.core import RunSession
from tests.test_sse import drain


async def logged_run(n_deltas: int, text: str = "x" * 1000) -> str:
    """A finished one-task run with `n_deltas` deltas in the (memory) run log; its id."""
    from streams.store.runlog import get_run_log

    run_id = uuid.uuid4().hex
    frames = [
        {"type": "task.started", "task": "t"},
        *({"type": "task.delta", "task": "t", "text": text} for _ in range(n_deltas)),
        {"type": "task.completed", "task": "t", "stats": {}},
        {"type": "run.completed"},
    ]
    frames = [{**f, "run_id": run_id, "seq": seq} for seq, f in enumerate(frames, 1)]
    await get_run_log().create(run_id, {"owner": "x", "pipeline": "p", "tasks": ["t"]})
    await get_run_log().append(run_id, frames)
    return run_id


async def test_an_unexpected_error_in_a_view_is_a_json_500_without_a_traceback(
    memory_layer, monkeypatch, caplog
):
    from django.test import AsyncClient

    async def broken(self, *args, **kwargs):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(RunSession, "prepare", broken)
    with caplog.at_level(logging.ERROR, logger="streams.sse"):
        response = await AsyncClient().post(
            "/stream", {"pipeline": "demo", "input": "hi"}, content_type="application/json"
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "internal"
    assert b"secret detail" not in response.content and b"Traceback" not in response.content
    assert [r.exc_info is not None for r in caplog.records if r.name == "streams.sse"] == [True]


async def test_an_unexpected_error_inside_the_stream_ends_it_with_an_error_event_and_cleans_up(
    memory_layer, caplog
):
    from channels.layers import get_channel_layer

    from streams.sse import RunEventStream
    from streams.store.publisher import run_group

    run_id = await logged_run(1)
    stream = RunEventStream(run_id, 0)
    stream.session.attached.add(run_id)

    async def begin():
        raise RuntimeError("bug in begin")

    with caplog.at_level(logging.ERROR, logger="streams.sse"):
        events = await drain(stream.events(b"", begin, resume=False))
    assert [e.event for e in events] == ["error"] and events[0].json["code"] == "internal"
    assert any(r.exc_info for r in caplog.records if r.name == "streams.sse")
    assert stream.session.watching == {} and stream.session.attached == set()
    assert get_channel_layer().groups.get(run_group(run_id)) in (None, {})
    assert stream.session not in set(shutdown._sessions)


async def test_a_client_that_stops_reading_a_replay_ends_its_response_and_detaches(memory_layer, settings):
    from streams.sse import RunEventStream

    settings.STREAMS = {**settings.STREAMS, "MAX_UNSENT_BYTES": 50_000}
    run_id = await logged_run(2000)  # about 2 MB of events
    stream = RunEventStream(run_id, 0)

    async def begin():
        pass

    events = stream.events(b": first\n\n", begin, resume=True)
    assert await anext(events) == b": first\n\n"
    # The client reads no more: the feeder replays the log into the outbox until it overflows.
    async with asyncio.timeout(5):
        await asyncio.gather(stream._feeder, return_exceptions=True)
    assert stream.outbox.overflowed and stream.outbox.unsent == 0
    rest = b"".join([chunk async for chunk in events])
    assert rest == b""  # what was queued is dropped: the response just ends
    assert stream.session.watching == {}
    assert stream.session not in set(shutdown._sessions)
    # The replay stopped reading the log at the page that overflowed.
    assert stream.relay.last < 300
