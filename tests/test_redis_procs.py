"""The Redis processes the failover tests start: a kill and restart leaves an empty server on the
same port, and a Sentinel failover hands redis-py's asyncio Sentinel client the promoted replica."""

import asyncio
import logging
import time

import pytest
import redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from tests.support.redis_procs import RedisProcess, SentinelGroup

logger = logging.getLogger(__name__)

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_killed_process_restarts_empty_on_its_port(redis_process: RedisProcess):
    client = redis_process.client()
    client.set("before", "1")
    port, url = redis_process.port, redis_process.url

    redis_process.kill()
    assert not redis_process.alive
    with pytest.raises(redis.ConnectionError):
        client.ping()

    redis_process.restart()
    assert redis_process.alive
    assert (redis_process.port, redis_process.url) == (port, url)
    assert url == f"redis://127.0.0.1:{port}/0"
    # The client connected before the kill reconnects on its own, and finds nothing.
    assert client.get("before") is None
    assert client.dbsize() == 0


def test_pair_is_two_independent_servers(redis_pair: tuple[RedisProcess, RedisProcess]):
    first, second = redis_pair
    assert first.port != second.port
    first.client().set("only-here", "1")
    assert second.client().get("only-here") is None

    first.kill()
    assert second.client().ping()
    assert second.client().info("replication")["role"] == "master"


def test_stop_ends_the_process_and_close_removes_its_dir():
    process = RedisProcess().start()
    try:
        process.stop()
        assert not process.alive
    finally:
        process.close()
    assert not process.dir.exists()


async def _write_until_accepted(client, key: str, value: str) -> float:
    """Retry SET every 50 ms until a master accepts it; the monotonic time it did."""
    while True:
        try:
            await client.set(key, value)
            return time.monotonic()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            await asyncio.sleep(0.05)


async def test_sentinel_failover_reaches_the_promoted_replica(sentinel_group: SentinelGroup):
    old_master = sentinel_group.master()
    assert old_master is sentinel_group.nodes[0]
    async with Sentinel(sentinel_group.sentinels, socket_timeout=1) as sentinel:
        # master_for's connections do not retry by default (Retry(NoBackoff(), 0)): one retry lets
        # a command on a connection to the dead master reconnect through the Sentinels.
        client = sentinel.master_for(
            sentinel_group.master_name, socket_timeout=1, decode_responses=True, retry=Retry(NoBackoff(), 1)
        )
        try:
            await client.set("before", "kept")
            # Replication is asynchronous; WAIT makes "before" a write the replica has.
            assert await client.wait(1, 2000) == 1

            killed_at = time.monotonic()
            assert sentinel_group.kill_master() is old_master
            # In a thread, so the loop keeps running as an app's would while it waits.
            writer = asyncio.create_task(_write_until_accepted(client, "after", "written"))
            promoted = await asyncio.to_thread(sentinel_group.wait_for_failover)
            promoted_s = time.monotonic() - killed_at
            written_s = await asyncio.wait_for(writer, timeout=10) - killed_at

            assert promoted is sentinel_group.nodes[1]
            assert sentinel_group.master() is promoted
            assert promoted.client().get("after") == "written"
            assert await client.get("before") == "kept"
            assert client.connection_pool.master_address == ("127.0.0.1", promoted.port)
        finally:
            await client.aclose()
    logger.info(
        "Sentinel failover: promoted %.2f s after SIGKILL, client wrote at %.2f s", promoted_s, written_s
    )
