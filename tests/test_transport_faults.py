"""What bad luck costs a WebSocket connection: a bug answers `internal`, a crash or a cancel
still detaches the connection's runs, a client that does not read is closed with 4408."""

import asyncio
import logging

import pytest

from streams.runs.relay import RunRelay
from streams.session.core import RunSession
from tests.test_resume import new_session
from tests.wsclient import connect, recv, send, start, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

SLOW = [{"key": "a", "provider": "scripted", "model": "paced:1000:0.01", "system": "a"}]


async def first_delta(comm) -> dict:
    """Frames up to the run's first delta."""
    while (frame := await recv(comm))["type"] != "task.delta":
        pass
    return frame


async def until_closed(calls, timeout_s: float = 2.0) -> None:
    """Wait until every provider stream recorded is closed."""
    async with asyncio.timeout(timeout_s):
        # The provider records no event to wait on: poll.
        while not calls or any(c.closed is None for c in calls):  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_bug_while_handling_a_frame_is_answered_internal_once_and_the_socket_goes_on(
    redis_layer, scripted_provider, make_pipeline, monkeypatch, caplog
):
    await make_pipeline("p", [{"key": "a", "provider": "scripted", "model": "fast:5", "system": "a"}])

    async def broken(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(RunSession, "start", broken)
    comm = await connect()
    with caplog.at_level(logging.ERROR, logger="streams.consumers"):
        await send(comm, {"type": "run.start", "pipeline": "p", "input": "x", "ref": "r1"})
        error = await recv(comm)
    assert error == {
        "type": "error",
        "code": "internal",
        "message": "the frame could not be handled; see the server log",
        "ref": "r1",
    }
    logged = [r for r in caplog.records if r.name == "streams.consumers"]
    assert len(logged) == 1 and "run.start" in logged[0].getMessage() and logged[0].exc_info
    assert "boom" not in error["message"]
    await send(comm, {"type": "ping", "n": 2})
    assert await recv(comm) == {"type": "pong", "n": 2}
    monkeypatch.undo()
    await start(comm, "p")
    assert (await until_run_end(comm))[-1]["type"] == "run.completed"
    await comm.disconnect()


async def test_a_consumer_that_crashes_mid_run_still_detaches_and_cancels_its_run(
    redis_layer, scripted_provider, make_pipeline, monkeypatch
):
    """A resumed run comes through the channel layer: a crash there ends the consumer."""
    await make_pipeline("slow", SLOW)
    cookie = await new_session()
    starter = await connect([cookie])
    run_id = (await start(starter, "slow"))["run_id"]
    await first_delta(starter)
    comm = await connect([cookie])
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    await first_delta(comm)
    await starter.disconnect()  # the resumed connection is now the run's only watcher

    async def crash(self, message):
        raise RuntimeError("crash while relaying")

    monkeypatch.setattr(RunSession, "handle", crash)
    with pytest.raises(RuntimeError, match="crash while relaying"):
        await comm.receive_output(timeout=5)
    await until_closed(scripted_provider.calls)
    assert scripted_provider.calls[0].tokens_sent < 1000


async def test_a_crash_while_relaying_in_process_closes_1011_and_cancels_the_run(
    redis_layer, scripted_provider, make_pipeline, monkeypatch, caplog
):
    """The starter's run comes from its host in-process: a crash there closes the connection."""
    await make_pipeline("slow", SLOW)
    comm = await connect()
    await start(comm, "slow")
    await first_delta(comm)

    def crash(self, frames):
        raise RuntimeError("crash while relaying")

    monkeypatch.setattr(RunRelay, "push_now", crash)
    with caplog.at_level(logging.ERROR, logger="streams.session.core"):
        while (output := await comm.receive_output(timeout=5))["type"] != "websocket.close":
            pass
        assert output["code"] == 1011
        await until_closed(scripted_provider.calls)
    assert scripted_provider.calls[0].tokens_sent < 1000
    assert any("relaying failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_consumer_the_server_cancels_still_detaches_and_cancels_its_run(
    redis_layer, scripted_provider, make_pipeline
):
    await make_pipeline("slow", SLOW)
    comm = await connect()
    await start(comm, "slow")
    await first_delta(comm)
    comm.future.cancel()  # what daphne does to an application 10 s after a disconnect
    await asyncio.gather(comm.future, return_exceptions=True)
    await until_closed(scripted_provider.calls)
    assert scripted_provider.calls[0].tokens_sent < 1000


async def test_a_client_whose_socket_never_drains_is_closed_4408_and_its_run_cancelled(
    redis_layer, scripted_provider, make_pipeline, monkeypatch, settings
):
    from streams.consumers import StreamConsumer

    settings.STREAMS = {**settings.STREAMS, "MAX_UNSENT_BYTES": 20_000}
    await make_pipeline("slow", [{"key": "a", "provider": "scripted", "model": "paced:100000:0.0005"}])
    comm = await connect()
    accepted = asyncio.Event()
    real_send = StreamConsumer.send

    async def stuck_send(self, text_data=None, bytes_data=None, close=False):
        # A socket whose buffer is full: uvicorn's send waits for it, here for ever.
        if accepted.is_set():
            await asyncio.Event().wait()
        await real_send(self, text_data, bytes_data, close)

    monkeypatch.setattr(StreamConsumer, "send", stuck_send)
    await start(comm, "slow")
    accepted.set()
    closed = await comm.receive_output(timeout=10)
    while closed["type"] != "websocket.close":
        closed = await comm.receive_output(timeout=10)
    assert closed["code"] == 4408
    await until_closed(scripted_provider.calls)
    assert scripted_provider.calls[0].tokens_sent < 100000
    await comm.disconnect()
