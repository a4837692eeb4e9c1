"""Shared fixtures: real Redis, channel-layer switching, the scripted provider, pipelines."""

import os
import socket
from urllib.parse import urlparse

import pytest
from channels.layers import channel_layers

from streams import providers
from streams.access import keys, quotas
from streams.store import runlog
from tests.support import scripted
from tests.support.records import database_down, records  # noqa: F401  (fixtures of the records tests)

# Session fixtures of the real llama.cpp server (llama_server) and of private Redis processes.
pytest_plugins = ["tests.support.llama_server", "tests.support.redis_procs"]

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def _redis_answers(url: str) -> bool:
    """Whether something accepts connections on the Redis URL's port."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def reset_streams_state() -> None:
    """Forget cached layers, logs and providers after a settings change."""
    channel_layers.backends.clear()
    runlog.reset_run_log()
    providers.reset()
    quotas.reset_quotas()
    keys.forget_keys()


async def close_streams_state() -> None:
    """Close this loop's Redis connections (layer and run log), then forget them."""
    from channels.layers import get_channel_layer

    from streams.records.writer import close_writer
    from streams.runs.host import close_host

    await close_host()
    await close_writer()
    layer = get_channel_layer()
    if hasattr(layer, "flush") and "pubsub" in type(layer).__module__:
        await layer.flush()  # the pub/sub layer's flush only closes its connections
    elif hasattr(layer, "close_pools"):
        await layer.close_pools()
    await runlog.get_run_log().aclose()
    await quotas.get_quotas().aclose()
    reset_streams_state()


@pytest.fixture
def redis_url():
    """A real Redis; the test command starts one, so its absence is a failure, not a skip."""
    if not _redis_answers(REDIS_URL):
        pytest.fail(f"Redis does not answer at {REDIS_URL}; run the tests with scripts/test")
    return REDIS_URL


def redis_layers(url: str, kind: str) -> dict:
    """CHANNEL_LAYERS for channels-redis as settings.py builds it."""
    from orchestrator_site.settings import redis_host_config

    if kind == "core":
        return {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [redis_host_config(url)], "capacity": 10_000, "expiry": 60},
            }
        }
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_host_config(url)]},
        }
    }


@pytest.fixture(params=["pubsub"])
async def redis_layer(request, settings, redis_url):
    """The app configured with channels-redis (pubsub by default) and the Redis run log."""
    settings.REDIS_URL = redis_url
    settings.CHANNEL_LAYERS = redis_layers(redis_url, request.param)
    reset_streams_state()
    yield request.param
    await close_streams_state()


@pytest.fixture
def memory_layer(settings):
    """The app configured with the in-memory layer and the in-memory run log."""
    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    reset_streams_state()
    yield
    reset_streams_state()


@pytest.fixture
def scripted_provider(settings):
    """The scripted provider registered as "scripted"; its calls are recorded."""
    settings.STREAMS_PROVIDERS = {
        **settings.STREAMS_PROVIDERS,
        "scripted": {"kind": "scripted", "factory": "tests.support.scripted.build"},
    }
    providers.reset()
    scripted.PROVIDER.calls.clear()
    yield scripted.PROVIDER
    providers.reset()


@pytest.fixture
def make_pipeline(transactional_db):
    """Create a pipeline from task dicts (delivery order); `await make(slug, tasks)` returns the slug."""
    from asgiref.sync import sync_to_async

    from streams.models import Pipeline, PipelineTask

    def make(slug: str, tasks: list[dict]) -> str:
        pipeline = Pipeline.objects.create(slug=slug, name=slug.title())
        for position, task in enumerate(tasks):
            PipelineTask.objects.create(pipeline=pipeline, position=position, **task)
        return slug

    return sync_to_async(make)
