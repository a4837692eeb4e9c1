"""Settings: in-memory and Redis channel-layer branches; idle connections outlive Redis timeouts."""

import asyncio
import importlib
import os
from types import SimpleNamespace

import pytest
from channels.layers import get_channel_layer

from tests.conftest import redis_layers
from tests.wsclient import connect, recv, send


def load_settings(monkeypatch, **env):
    """Import orchestrator_site.settings afresh under the given environment."""
    for key in ("REDIS_URL", "REDIS_CHANNEL_LAYER"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import orchestrator_site.settings as module

    try:
        # Copy the values: the module object is reloaded again below.
        return SimpleNamespace(**vars(importlib.reload(module)))
    finally:
        monkeypatch.undo()
        importlib.reload(module)


def test_without_redis_url_the_in_memory_layer_is_used(monkeypatch):
    s = load_settings(monkeypatch)
    assert s.CHANNEL_LAYERS["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


@pytest.mark.parametrize(
    ("kind", "backend"),
    [
        ("pubsub", "channels_redis.pubsub.RedisPubSubChannelLayer"),
        ("core", "channels_redis.core.RedisChannelLayer"),
    ],
)
def test_with_redis_url_channels_redis_gets_timeouts_set_on_purpose(monkeypatch, kind, backend):
    s = load_settings(monkeypatch, REDIS_URL="redis://127.0.0.1:6379/3", REDIS_CHANNEL_LAYER=kind)
    layer = s.CHANNEL_LAYERS["default"]
    assert layer["BACKEND"] == backend
    host = layer["CONFIG"]["hosts"][0]
    assert host["address"] == "redis://127.0.0.1:6379/3"
    # redis-py's 5 s default read timeout would drop every idle WebSocket.
    assert host["socket_timeout"] is None
    assert host["socket_connect_timeout"] > 0
    if kind == "core":
        assert layer["CONFIG"]["capacity"] >= 1000


def test_secret_key_and_hosts_come_from_the_environment(monkeypatch):
    s = load_settings(monkeypatch, DJANGO_SECRET_KEY="k" * 50, DJANGO_ALLOWED_HOSTS="a.example, b.example")
    assert s.SECRET_KEY == "k" * 50
    assert s.ALLOWED_HOSTS == ["a.example", "b.example"]


@pytest.mark.parametrize("kind", ["pubsub", "core"])
async def test_a_group_message_round_trips_through_real_redis(kind, settings, redis_url):
    from tests.conftest import close_streams_state, reset_streams_state

    settings.CHANNEL_LAYERS = redis_layers(redis_url, kind)
    reset_streams_state()
    layer = get_channel_layer()
    assert type(layer).__module__.startswith("channels_redis")
    channel = await layer.new_channel()
    await layer.group_add("roundtrip", channel)
    await layer.group_send("roundtrip", {"type": "hello", "text": "héllo", "n": [1, 2]})
    async with asyncio.timeout(5):
        assert await layer.receive(channel) == {"type": "hello", "text": "héllo", "n": [1, 2]}
    await layer.group_discard("roundtrip", channel)
    await close_streams_state()


async def test_in_memory_layer_round_trip(memory_layer):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "x"})
    assert await layer.receive(channel) == {"type": "x"}


IDLE_S = float(os.environ.get("IDLE_TEST_S", "12"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("redis_layer", ["pubsub", "core"], indirect=True)
async def test_a_connection_idle_longer_than_any_redis_timeout_still_answers(redis_layer):
    # redis-py's default socket timeout and channels-redis' blocking pop are both 5 s;
    # idling past twice that proves neither closes the socket.
    comm = await connect()
    await asyncio.sleep(IDLE_S)
    await send(comm, {"type": "ping", "after": IDLE_S})
    assert await recv(comm) == {"type": "pong", "after": IDLE_S}
    await comm.disconnect()
