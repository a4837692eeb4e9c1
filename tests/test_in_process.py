"""The starter of a run gets its frames in-process from the run's host (RunHost.deliver), not
through the channel layer: in seq order, each once, while the log and the group still get them
for resumes and other instances; a slow reader is still closed with 4408 and holds up nobody."""

import asyncio

import pytest

from streams.consumers import StreamConsumer
from streams.runs.host import current_host
from streams.session.core import RunSession
from streams.store.publisher import RunPublisher
from streams.store.runlog import get_run_log
from tests.support.scripted import ScriptedProvider
from tests.test_resume import new_session
from tests.wsclient import connect, recv, send, start, texts, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


def two(model: str) -> list[dict]:
    """Two scripted tasks with the same model."""
    return [{"key": f"t{k}", "provider": "scripted", "model": model, "system": k} for k in "ab"]


def assert_whole(frames: list[dict], model: str) -> None:
    """Every seq once and in order, every task's text exact, the run completed."""
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "run.completed"
    for k in "ab":
        assert texts(frames)[f"t{k}"] == "".join(ScriptedProvider.tokens(model, k))


async def test_the_starter_gets_every_frame_without_the_channel_layer_and_the_log_has_them_all(
    redis_layer, scripted_provider, make_pipeline, monkeypatch
):
    await make_pipeline("p", two("paced:30:0.005"))
    through_layer = []
    real_handle = RunSession.handle

    async def counting_handle(self, message):
        through_layer.append(message["type"])
        await real_handle(self, message)

    monkeypatch.setattr(RunSession, "handle", counting_handle)
    comm = await connect()
    run_id = (await start(comm, "p"))["run_id"]
    frames = await until_run_end(comm)
    await comm.disconnect()

    assert_whole(frames, "paced:30")
    assert through_layer == []
    # Resumes and other instances read the log: it holds exactly what the starter got.
    assert await get_run_log().read(run_id, 0) == frames


async def test_the_starter_has_each_batch_before_it_goes_to_redis(
    redis_layer, scripted_provider, make_pipeline, monkeypatch
):
    """Local delivery comes first, so a Redis that is slow or down does not hold it back."""
    await make_pipeline("p", two("paced:20:0.005"))
    before_publish = []  # per publish: its last seq, and the last seq the starter had by then
    real_frames = RunPublisher.frames

    async def spying_frames(self, frames):
        run = current_host().runs[self.run_id]
        had = [w.watching[self.run_id].last for w in run.local if self.run_id in w.watching]
        before_publish.append((frames[-1]["seq"], had))
        await real_frames(self, frames)

    monkeypatch.setattr(RunPublisher, "frames", spying_frames)
    comm = await connect()
    await start(comm, "p")
    frames = await until_run_end(comm)
    await comm.disconnect()

    assert_whole(frames, "paced:20")
    watched = [(seq, had) for seq, had in before_publish if had]
    assert len(watched) >= 5, before_publish
    assert all(had == [seq] for seq, had in watched), before_publish
    # The last batch ended the run: the starter had it whole and let go before the publish.
    assert before_publish[-1] == (frames[-1]["seq"], [])


async def test_in_process_and_channel_layer_watchers_of_one_run_each_get_every_frame_once(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline("p", two("paced:60:0.01"))
    cookie = await new_session()
    starter = await connect([cookie])
    run_id = (await start(starter, "p"))["run_id"]
    seen = []
    while len(seen) < 3:
        if "seq" in (frame := await recv(starter)):
            seen.append(frame)
    # The same connection asks for the run again after seq 1: from there it is sent once more.
    await send(starter, {"type": "run.resume", "run_id": run_id, "after_seq": 1})
    # Another connection of the same owner resumes it through the channel layer and the log.
    other = await connect([cookie])
    await send(other, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    again = await until_run_end(starter)
    frames = await until_run_end(other)
    await starter.disconnect()
    await other.disconnect()

    assert_whole(frames, "paced:60")
    before = seen + again[: (restart := max(i for i, f in enumerate(again) if f["seq"] == 2))]
    assert before == frames[: len(before)]  # in order, each once, up to the resume
    assert again[restart:] == frames[1:]  # then from seq 2 to the end, each once


async def test_a_slow_in_process_reader_is_closed_4408_and_holds_up_no_other_run(
    redis_layer, scripted_provider, make_pipeline, monkeypatch, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_UNSENT_BYTES": 20_000}
    await make_pipeline("slow", [{"key": "a", "provider": "scripted", "model": "paced:100000:0.0005"}])
    await make_pipeline("p", two("paced:80:0.005"))
    stalled: set[str] = set()
    real_send = StreamConsumer.send

    async def stuck_send(self, text_data=None, bytes_data=None, close=False):
        # A socket whose buffer is full (uvicorn's send waits for it), here for ever.
        if self.session is not None and stalled & set(self.session.watching):
            await asyncio.Event().wait()
        await real_send(self, text_data, bytes_data, close)

    monkeypatch.setattr(StreamConsumer, "send", stuck_send)
    slow = await connect()
    stalled.add((await start(slow, "slow"))["run_id"])
    fast = await connect()
    await start(fast, "p")
    frames = await until_run_end(fast)
    assert_whole(frames, "paced:80")

    closed = await slow.receive_output(timeout=10)
    while closed["type"] != "websocket.close":
        closed = await slow.receive_output(timeout=10)
    assert closed["code"] == 4408
    slow_call = next(c for c in scripted_provider.calls if c.model.startswith("paced:100000"))
    async with asyncio.timeout(2):
        while slow_call.closed is None:  # noqa: ASYNC110 (the provider records no event)
            await asyncio.sleep(0.01)
    assert slow_call.tokens_sent < 100000
    await fast.disconnect()
    await slow.disconnect()
