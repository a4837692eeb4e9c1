"""WebSocket handshake rules and quotas, against the real ASGI application (middleware included)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore

from orchestrator_site.asgi import application
from streams.access.keys import create_key
from streams.store.runlog import get_run_log
from tests.wsclient import recv, send, start, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

SAME_ORIGIN = [(b"origin", b"http://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")]


def communicator(headers, address: str | None = None) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/ws/streams/", headers=headers)
    if address is not None:
        # The scope is read when the application first runs, after this.
        comm.scope["client"] = (address, 40000)
    return comm


async def handshake(headers, address: str | None = None) -> tuple[WebsocketCommunicator, bool, int | None]:
    comm = communicator(headers, address)
    connected, code = await comm.connect(timeout=5)
    return comm, connected, code


def bearer(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {key}".encode())


@sync_to_async
def new_key(username: str | None = None) -> tuple[int, str]:
    user = get_user_model().objects.create_user(username) if username else None
    row, key = create_key("test", user)
    return row.pk, key


@sync_to_async
def session_cookie() -> tuple[bytes, bytes]:
    store = SessionStore()
    store.create()
    return (b"cookie", f"sessionid={store.session_key}".encode())


@pytest.fixture
async def slow(scripted_provider, make_pipeline):
    return await make_pipeline("slow", [{"key": "a", "provider": "scripted", "model": "paced:400:0.01"}])


async def owner_of_run(comm, pipeline: str) -> str:
    """Start a run; the owner its host recorded (by its first ordered frame, the record exists)."""
    run_id = (await start(comm, pipeline))["run_id"]
    while "seq" not in await recv(comm):
        pass
    return (await get_run_log().get_meta(run_id))["owner"]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"origin", b"http://127.0.0.1:9999"), (b"host", b"127.0.0.1:8000")],  # another port
        [(b"origin", b"https://127.0.0.1:8000"), (b"host", b"127.0.0.1:8000")],  # another scheme
        [(b"origin", b"http://localhost:3000"), (b"host", b"127.0.0.1:8000")],
        [(b"origin", b"http://evil.test:8000"), (b"host", b"evil.test:8000")],  # a host not ours
        [(b"origin", b"null"), (b"host", b"127.0.0.1:8000")],
        [(b"host", b"127.0.0.1:8000"), (b"sec-fetch-site", b"cross-site")],
    ],
)
async def test_a_handshake_from_another_origin_is_refused(redis_layer, headers):
    _, connected, _ = await handshake(headers)
    assert not connected


async def test_the_same_origin_with_its_port_is_accepted_and_so_is_a_client_without_origin(redis_layer):
    for headers in (SAME_ORIGIN, [(b"host", b"127.0.0.1:8000")]):
        comm, connected, _ = await handshake(headers)
        assert connected
        await send(comm, {"type": "ping"})
        assert (await recv(comm))["type"] == "pong"
        await comm.disconnect()


async def test_a_valid_key_needs_no_origin_and_owns_its_runs(redis_layer, slow):
    key_id, key = await new_key()
    # No Origin at all, and a foreign one: a key holder is not a page.
    for headers in ([bearer(key)], [bearer(key), (b"origin", b"http://evil.test")]):
        comm, connected, _ = await handshake(headers)
        assert connected
        assert await owner_of_run(comm, slow) == f"key:{key_id}"
        await comm.disconnect()


async def test_a_key_of_a_user_acts_as_the_user(redis_layer, slow):
    _, key = await new_key("ada")
    user = await get_user_model().objects.aget(username="ada")
    comm, connected, _ = await handshake([bearer(key)])
    assert connected
    assert await owner_of_run(comm, slow) == f"user:{user.pk}"
    await comm.disconnect()


@pytest.mark.parametrize("token", ["strm_000000000000_" + "a" * 43, "nonsense", ""])
async def test_a_wrong_key_is_refused_with_4401_even_from_the_same_origin(redis_layer, token):
    _, connected, code = await handshake([*SAME_ORIGIN, bearer(token)])
    assert not connected and code == 4401


async def test_with_anonymous_use_off_a_key_is_enough_and_nothing_else_is(redis_layer, settings):
    settings.STREAMS = {**settings.STREAMS, "ALLOW_ANONYMOUS": False}
    _, key = await new_key()
    _, connected, code = await handshake(SAME_ORIGIN)
    assert not connected and code == 4401
    comm, connected, _ = await handshake([bearer(key)])
    assert connected
    await comm.disconnect()


async def test_session_owners_are_stored_as_hashes(redis_layer, slow):
    cookie = await session_cookie()
    comm, connected, _ = await handshake([*SAME_ORIGIN, cookie])
    assert connected
    owner = await owner_of_run(comm, slow)
    session_key = cookie[1].decode().split("=", 1)[1]
    assert owner.startswith("session:") and session_key not in owner
    await comm.disconnect()


async def test_runs_in_flight_are_capped_per_owner_across_connections_and_freed_at_run_end(
    redis_layer, slow, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_OWNER": 2}
    cookie = await session_cookie()
    one, _, _ = await handshake([*SAME_ORIGIN, cookie])
    two, _, _ = await handshake([*SAME_ORIGIN, cookie])
    first = (await start(one, slow))["run_id"]
    await start(two, slow)
    await send(two, {"type": "run.start", "pipeline": slow, "input": "x", "ref": "third"})
    frame = await recv(two)
    while frame["type"] != "error":
        frame = await recv(two)
    assert frame["code"] == "too_many_runs" and frame["ref"] == "third" and frame["retry_after"] >= 1
    # Another owner is not affected.
    other, _, _ = await handshake([*SAME_ORIGIN, await session_cookie()])
    await start(other, slow)
    # The run's end (here a cancel) gives its slot back.
    await send(one, {"type": "run.cancel", "run_id": first})
    frames = await until_run_end(one)
    assert frames[-1]["type"] == "run.cancelled"
    # The slot is released just after the last frame went out: allow that a moment.
    for _ in range(20):
        await send(two, {"type": "run.start", "pipeline": slow, "input": "x"})
        frame = await recv(two)
        while frame["type"] not in ("run.accepted", "error"):
            frame = await recv(two)
        if frame.get("code") != "too_many_runs":
            break
        await asyncio.sleep(0.1)
    assert frame["type"] == "run.accepted", frame
    for comm in (one, two, other):
        await comm.disconnect()


async def test_clients_with_neither_session_nor_key_are_counted_by_address(redis_layer, slow, settings):
    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_OWNER": 1}
    one, _, _ = await handshake(SAME_ORIGIN, address="198.51.100.1")
    two, _, _ = await handshake(SAME_ORIGIN, address="198.51.100.1")
    # Behind the (trusted, loopback) proxy: the forwarded address counts, not the proxy's.
    proxied, _, _ = await handshake(
        [*SAME_ORIGIN, (b"x-forwarded-for", b"198.51.100.2")], address="127.0.0.1"
    )
    run_id = (await start(one, slow))["run_id"]
    await send(two, {"type": "run.start", "pipeline": slow, "input": "x"})
    assert (await recv(two))["code"] == "too_many_runs"
    await start(proxied, slow)
    # Each connection still owns its own runs: the other one of the same address cannot resume it.
    await send(two, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    assert (await recv(two))["code"] == "unknown_run"
    for comm in (one, two, proxied):
        await comm.disconnect()


async def test_past_the_connection_cap_the_socket_is_told_why_and_closed_with_4429(redis_layer, settings):
    settings.STREAMS = {**settings.STREAMS, "MAX_CONNECTIONS_PER_OWNER": 1}
    cookie = await session_cookie()
    first, connected, _ = await handshake([*SAME_ORIGIN, cookie])
    assert connected
    second, connected, _ = await handshake([*SAME_ORIGIN, cookie])
    assert connected  # accepted only to say why
    frame = await recv(second)
    assert frame["type"] == "error" and frame["code"] == "rate_limited" and frame["retry_after"] >= 1
    assert (await second.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4429}
    await first.disconnect()
    third, connected, _ = await handshake([*SAME_ORIGIN, cookie])
    assert connected
    await send(third, {"type": "ping"})
    assert (await recv(third))["type"] == "pong"
    await third.disconnect()


async def test_runs_started_per_minute_are_capped(redis_layer, scripted_provider, make_pipeline, settings):
    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_MINUTE": 2}
    fast = await make_pipeline("fast", [{"key": "a", "provider": "scripted", "model": "fast:3"}])
    comm, _, _ = await handshake([*SAME_ORIGIN, await session_cookie()])
    for _ in range(2):
        await start(comm, fast)
        await until_run_end(comm)
    await send(comm, {"type": "run.start", "pipeline": fast, "input": "x"})
    frame = await recv(comm)
    assert frame["code"] == "rate_limited" and 1 <= frame["retry_after"] <= 60
    await comm.disconnect()


async def test_resumes_of_one_run_on_one_connection_are_capped(
    redis_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_RESUMES_PER_RUN": 2}
    fast = await make_pipeline("fast", [{"key": "a", "provider": "scripted", "model": "fast:3"}])
    comm, _, _ = await handshake([*SAME_ORIGIN, await session_cookie()])
    run_id = (await start(comm, fast))["run_id"]
    frames = await until_run_end(comm)
    for _ in range(2):
        await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
        assert await until_run_end(comm) == frames
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 0})
    assert (await recv(comm))["code"] == "rate_limited"
    await comm.disconnect()


async def test_a_start_that_fails_before_its_run_exists_gives_its_slot_back(
    redis_layer, slow, settings, monkeypatch
):
    # Regression: a failure while recording the run (Redis down) kept the run's quota
    # slot until its lease lapsed (30 s), so the owner's next start was refused.
    from streams.store.runlog import RedisRunLog

    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_OWNER": 1}
    comm, _, _ = await handshake([*SAME_ORIGIN, await session_cookie()])
    real_create = RedisRunLog.create

    async def broken_create(self, run_id, meta):
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(RedisRunLog, "create", broken_create)
    await send(comm, {"type": "run.start", "pipeline": slow, "input": "x"})
    frame = await recv(comm)
    while frame["type"] == "run.accepted":  # announced before its host records it
        frame = await recv(comm)
    assert frame["code"] == "layer_unavailable"
    monkeypatch.setattr(RedisRunLog, "create", real_create)
    for _ in range(20):  # the slot is given back by a task of its own: allow it a moment
        await send(comm, {"type": "run.start", "pipeline": slow, "input": "x"})
        frame = await recv(comm)
        if frame.get("code") != "too_many_runs":
            break
        await asyncio.sleep(0.05)
    assert frame["type"] == "run.accepted", frame
    await comm.disconnect()
