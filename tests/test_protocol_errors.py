"""Every refused client frame gets its error code, and the connection keeps working."""

import json

import pytest
from channels.testing import WebsocketCommunicator

from orchestrator_site.asgi import application
from tests.wsclient import connect, recv, send, start, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]


async def expect_error(comm, code: str) -> dict:
    """The next frame is an error with `code`; then a ping still answers."""
    frame = await recv(comm)
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert frame["message"]
    await send(comm, {"type": "ping", "n": 1})
    assert await recv(comm) == {"type": "pong", "n": 1}
    return frame


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "bad_request"),
        ("[1, 2]", "bad_request"),
        ('"text"', "bad_request"),
        ('{"no": "type"}', "bad_request"),
        ('{"type": "run.explode"}', "bad_request"),
        ('{"type": "run.start", "input": "x"}', "bad_request"),
        ('{"type": "run.start", "pipeline": 3, "input": "x"}', "bad_request"),
        ('{"type": "run.start", "pipeline": "demo", "input": "   "}', "bad_request"),
        ('{"type": "run.resume", "run_id": "r", "after_seq": "3"}', "bad_request"),
        ('{"type": "run.resume", "run_id": "r", "after_seq": true}', "bad_request"),
        ('{"type": "run.resume", "run_id": "r", "after_seq": -1}', "bad_request"),
        ('{"type": "run.cancel"}', "bad_request"),
        ('{"type": "run.start", "pipeline": "nope", "input": "x"}', "unknown_pipeline"),
        ('{"type": "run.cancel", "run_id": "nope"}', "unknown_run"),
        ('{"type": "run.resume", "run_id": "nope", "after_seq": 0}', "unknown_run"),
    ],
)
async def test_bad_frame_gets_its_code_and_the_connection_stays_open(raw, code, redis_layer):
    comm = await connect()
    await comm.send_to(text_data=raw)
    await expect_error(comm, code)
    await comm.disconnect()


async def test_ref_is_echoed_on_errors(redis_layer):
    comm = await connect()
    await send(comm, {"type": "run.start", "pipeline": "nope", "input": "x", "ref": "r-7"})
    assert (await expect_error(comm, "unknown_pipeline"))["ref"] == "r-7"
    await comm.disconnect()


async def test_binary_and_oversized_frames_are_refused(redis_layer, settings):
    comm = await connect()
    await comm.send_to(bytes_data=b"\x00\x01")
    await expect_error(comm, "bad_request")
    big = json.dumps({"type": "run.start", "pipeline": "demo", "input": "x" * (70 * 1024)})
    await comm.send_to(text_data=big)
    await expect_error(comm, "too_large")
    settings.STREAMS = {**settings.STREAMS, "MAX_INPUT_CHARS": 10}
    comm2 = await connect()
    await send(comm2, {"type": "run.start", "pipeline": "demo", "input": "x" * 11})
    await expect_error(comm2, "too_large")
    await comm.disconnect()
    await comm2.disconnect()


async def test_too_many_runs_on_one_connection(redis_layer, scripted_provider, make_pipeline, settings):
    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_CONNECTION": 2}
    await make_pipeline("slow", [{"key": "a", "provider": "scripted", "model": "paced:500:0.01"}])
    comm = await connect()
    for _ in range(3):
        await send(comm, {"type": "run.start", "pipeline": "slow", "input": "x"})
    kinds = []
    while (frame := await recv(comm))["type"] != "error":
        kinds.append(frame["type"])
    assert frame["code"] == "too_many_runs"
    assert kinds.count("run.accepted") == 2
    await comm.disconnect()


async def test_flooding_frames_is_rate_limited(redis_layer, settings):
    settings.STREAMS = {**settings.STREAMS, "RATE_LIMIT_PER_S": 5.0}
    comm = await connect()
    for i in range(30):
        await send(comm, {"type": "ping", "i": i})
    frames = [await recv(comm) for _ in range(30)]
    codes = [f.get("code") for f in frames if f["type"] == "error"]
    assert codes and set(codes) == {"rate_limited"}
    assert sum(f["type"] == "pong" for f in frames) >= 10
    await comm.disconnect()


async def test_another_owner_cannot_cancel_or_resume_a_run(redis_layer, scripted_provider, make_pipeline):
    await make_pipeline("slow", [{"key": "a", "provider": "scripted", "model": "paced:50:0.01"}])
    owner = await connect()
    run_id = (await start(owner, "slow"))["run_id"]
    stranger = await connect()
    await send(stranger, {"type": "run.cancel", "run_id": run_id})
    await expect_error(stranger, "unknown_run")
    await send(stranger, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    await expect_error(stranger, "unknown_run")
    # The owner's run went on untouched.
    frames = await until_run_end(owner)
    assert frames[-1]["type"] == "run.completed"
    await owner.disconnect()
    await stranger.disconnect()


async def test_handshake_from_a_foreign_origin_is_refused(redis_layer):
    comm = WebsocketCommunicator(application, "/ws/streams/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect(timeout=5)
    assert not connected


async def test_unauthenticated_handshake_is_refused_when_anonymous_use_is_off(redis_layer, settings):
    settings.STREAMS = {**settings.STREAMS, "ALLOW_ANONYMOUS": False}
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    comm = WebsocketCommunicator(application, "/ws/streams/", headers=headers)
    connected, code = await comm.connect(timeout=5)
    assert not connected
    assert code == 4401
