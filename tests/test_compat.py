"""Private APIs of dependencies that streams/compat.py uses: each test fails if an upgrade changes one."""

import asyncio
import uuid

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async

from streams import compat

pytestmark = pytest.mark.redis


def frames_of(run_id: str) -> list[dict]:
    return [
        {"type": "task.started", "run_id": run_id, "seq": 1, "task": "a"},
        {"type": "task.delta", "run_id": run_id, "seq": 2, "task": "a", "text": "hi"},
    ]


async def test_the_pubsub_layer_is_published_to_directly_with_the_log_append(redis_layer, monkeypatch):
    from channels.layers import get_channel_layer
    from django.conf import settings

    from streams.store.publisher import RunPublisher, run_group
    from streams.store.runlog import get_run_log

    layer = get_channel_layer()
    run_id = uuid.uuid4().hex
    found = compat.pubsub_group_channel(layer, run_group(run_id))
    assert found is not None and found[0]["address"] == settings.REDIS_URL
    publisher = RunPublisher(run_id, layer)
    # If channels-redis renamed what compat reads, the publisher would fall back to the
    # layer silently: the direct path must be the one taken.
    assert publisher.direct is not None

    async def no_group_send(group, message):
        raise AssertionError("the direct path fell back to the layer's group_send")

    monkeypatch.setattr(layer, "group_send", no_group_send)
    channel = await layer.new_channel("test.")
    await layer.group_add(run_group(run_id), channel)
    receive = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)  # the pub/sub layer subscribes in its receive
    await get_run_log().create(run_id, {"owner": "x"})
    await publisher.frames(frames_of(run_id))
    async with asyncio.timeout(5):
        message = await receive
    assert message == {"type": "run.frames", "frames": frames_of(run_id)}
    assert await get_run_log().read(run_id, 0) == frames_of(run_id)
    await publisher.progress({"type": "run.progress", "run_id": run_id, "tasks": {}})
    async with asyncio.timeout(5):
        progress = await layer.receive(channel)
    assert progress["type"] == "run.progress"


@pytest.mark.parametrize("redis_layer", ["core"], indirect=True)
async def test_the_core_layer_has_no_direct_path_and_gets_group_messages(redis_layer):
    from channels.layers import get_channel_layer

    from streams.store.publisher import RunPublisher, run_group

    layer = get_channel_layer()
    run_id = uuid.uuid4().hex
    publisher = RunPublisher(run_id, layer)
    assert publisher.direct is None
    channel = await layer.new_channel("test.")
    await layer.group_add(run_group(run_id), channel)
    await publisher.frames(frames_of(run_id))
    async with asyncio.timeout(5):
        assert (await layer.receive(channel))["frames"] == frames_of(run_id)


async def test_a_requests_thread_sensitive_executor_can_be_found_and_taken():
    assert not compat.has_request_executor()
    assert compat.pop_request_executor() is None
    async with ThreadSensitiveContext():
        await sync_to_async(lambda: None)()  # creates the context's one-thread executor
        assert compat.has_request_executor()
        executor = compat.pop_request_executor()
        assert executor is not None and hasattr(executor, "shutdown")
        assert not compat.has_request_executor()
        executor.shutdown(wait=False)


def test_daphne_closes_with_1001_only_through_autobahns_close_frame():
    from autobahn.websocket.protocol import WebSocketProtocol as Autobahn
    from daphne.ws_protocol import WebSocketProtocol

    class Probe:
        state = Autobahn.STATE_OPEN

        def __init__(self):
            self.frames = []

        def sendCloseFrame(self, code=None, reasonUtf8=None, isReply=False):
            self.frames.append((code, isReply))

    # autobahn still refuses 1001 from sendClose: without the patch daphne's close would raise.
    with pytest.raises(Exception, match="invalid close code 1001"):
        Autobahn.sendClose(Probe(), code=1001)
    original = WebSocketProtocol.serverClose
    try:
        compat.daphne_close_going_away()
        compat.daphne_close_going_away()  # once is enough, twice is harmless
        probe = Probe()
        WebSocketProtocol.serverClose(probe, 1001)
        assert probe.frames == [(1001, False)]
        probe.sendClose = lambda code=None: probe.frames.append(("sendClose", code))
        WebSocketProtocol.serverClose(probe, 4408)  # every other code as daphne does it
        assert probe.frames[-1] == ("sendClose", 4408)
    finally:
        WebSocketProtocol.serverClose = original
