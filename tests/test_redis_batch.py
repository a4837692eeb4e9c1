"""The Redis command batcher, on a real Redis: shared pipelines, per-submitter replies and errors, order."""

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from streams.store.batch import CommandBatcher


class CountingBatcher(CommandBatcher):
    """Counts the pipelines it sends."""

    pipelines = 0

    async def _send_batch(self, batch):
        self.pipelines += 1
        await super()._send_batch(batch)


@pytest.fixture
async def client(redis_url):
    redis = aioredis.Redis.from_url(redis_url)
    yield redis
    await redis.aclose()


@pytest.fixture
def key():
    return f"test:batch:{uuid.uuid4().hex}"


async def test_concurrent_submitters_share_pipelines_and_each_gets_its_own_replies(client, key):
    batcher = CountingBatcher(client)
    replies = await asyncio.gather(
        *(batcher.execute([("RPUSH", key, f"{n}a"), ("RPUSH", key, f"{n}b")]) for n in range(50))
    )
    # Submitted in one loop iteration: one pipeline, not fifty round trips.
    assert batcher.pipelines == 1
    assert [len(r) for r in replies] == [2] * 50
    # RPUSH answers the list's new length: each submitter's two commands ran back to back.
    assert all(b == a + 1 for a, b in replies)
    values = [v.decode() for v in await client.lrange(key, 0, -1)]
    assert values == [f"{n}{part}" for n in range(50) for part in "ab"]
    await client.delete(key)


async def test_a_failing_command_fails_only_its_submitter(client, key):
    batcher = CommandBatcher(client)
    await client.xadd(key, {"f": "x"}, id="5-1")
    results = await asyncio.gather(
        batcher.execute([("XADD", key, "6-1", "f", "ok")]),
        # An id below the stream's top: Redis refuses it.
        batcher.execute([("XADD", key, "1-1", "f", "stale")]),
        batcher.execute([("XADD", key, "7-1", "f", "ok")]),
        return_exceptions=True,
    )
    assert results[0] == [b"6-1"] and results[2] == [b"7-1"]
    assert isinstance(results[1], ResponseError)
    assert [entry_id for entry_id, _ in await client.xrange(key)] == [b"5-1", b"6-1", b"7-1"]
    await client.delete(key)


async def test_a_lost_connection_fails_every_submitter_and_the_batcher_recovers(redis_url, key):
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    batcher = CommandBatcher(dead)
    results = await asyncio.gather(*(batcher.execute([("PING",)]) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RedisConnectionError) for r in results), results
    await dead.aclose()
    # The sender ended with the failure: a new submission starts a new one.
    live = aioredis.Redis.from_url(redis_url)
    batcher.client = live
    assert await batcher.execute([("PING",)]) == [True]
    await live.aclose()


async def test_a_submitter_that_stops_waiting_does_not_let_its_next_commands_overtake(client, key):
    batcher = CommandBatcher(client)
    first = asyncio.ensure_future(batcher.execute([("RPUSH", key, "1")]))
    await asyncio.sleep(0)  # submitted; its pipeline is on its way
    first.cancel()
    await batcher.execute([("RPUSH", key, "2")])
    assert [v.decode() for v in await client.lrange(key, 0, -1)] == ["1", "2"]
    await client.delete(key)


async def test_submissions_during_a_pipeline_go_out_together_in_the_next(client, key):
    batcher = CountingBatcher(client)
    first = asyncio.ensure_future(batcher.execute([("RPUSH", key, "0")]))
    await asyncio.sleep(0)  # the first pipeline is in flight
    later = [batcher.execute([("RPUSH", key, str(n))]) for n in range(1, 21)]
    await asyncio.gather(first, *later)
    assert batcher.pipelines == 2
    assert [v.decode() for v in await client.lrange(key, 0, -1)] == [str(n) for n in range(21)]
    await client.delete(key)
