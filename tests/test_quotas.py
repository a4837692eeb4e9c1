"""Quotas on real Redis (two instances: two quota objects with their own clients) and in memory."""

import asyncio
import gc
import uuid

import pytest
import redis.asyncio as aioredis

from streams.access.quota_redis import RedisQuotas, quota_key
from streams.access.quotas import LimitExceeded, Limits, MemoryQuotas, ResumeCounter
from streams.protocol import ClientError
from streams.store.topology import Topology, clients_of

pytestmark = pytest.mark.redis


class Pair:
    """Two "instances" counting the same owners, and the owner's name unique to the test."""

    def __init__(self, kind: str, redis_url: str, **kwargs):
        self.owner = f"test:{uuid.uuid4().hex}"
        if kind == "redis":
            # Clients of their own each, as two processes have.
            self.a, self.b = (RedisQuotas(clients_of(Topology.parse(redis_url)), **kwargs) for _ in "ab")
        else:
            shared = MemoryQuotas(**kwargs)  # one process: both "instances" are the same counts
            self.a = self.b = shared

    async def aclose(self):
        await self.a.aclose()
        await self.b.aclose()


@pytest.fixture(params=["redis", "memory"])
async def pairs(request, redis_url):
    """make(**kwargs) -> a Pair of the fixture's kind; closed after the test."""
    made: list[Pair] = []

    def make(**kwargs) -> Pair:
        made.append(Pair(request.param, redis_url, **kwargs))
        return made[-1]

    yield make
    for pair in made:
        await pair.aclose()


async def test_the_runs_cap_holds_across_two_instances_and_a_release_anywhere_frees_a_slot(pairs):
    p = pairs(limits=Limits(max_runs=3, runs_per_minute=0, max_connections=0))
    slots = [
        await p.a.start_run(p.owner, "r1"),
        await p.b.start_run(p.owner, "r2"),
        await p.a.start_run(p.owner, "r3"),
    ]
    for quotas in (p.a, p.b):
        with pytest.raises(LimitExceeded) as info:
            await quotas.start_run(p.owner, "r4")
        assert info.value.code == "too_many_runs" and info.value.retry_after_s >= 1
        assert info.value.headers == {"Retry-After": str(info.value.retry_after_s)}
        assert info.value.frame()["retry_after"] == info.value.retry_after_s
    # The host that ends a run may not be the instance that started it: release by owner and id.
    await p.b.end_run(p.owner, "r1")
    slots.append(await p.b.start_run(p.owner, "r4"))
    await slots[1].release()
    await slots[1].release()  # idempotent
    slots.append(await p.a.start_run(p.owner, "r5"))
    # Another owner is not affected.
    await p.a.start_run(p.owner + "-other", "x")


async def test_a_crashed_instance_leaks_no_slot_beyond_the_lease(pairs):
    p = pairs(limits=Limits(max_runs=1, runs_per_minute=0, max_connections=1), lease_ttl_s=0.6)
    slot = await p.a.start_run(p.owner, "r1")
    conn = await p.a.open_connection(p.owner)
    with pytest.raises(LimitExceeded):
        await p.b.start_run(p.owner, "r2")
    # "Crash" instance a: its renewals stop, nothing is released.
    for renewals in p.a._held.values():
        renewals.task.cancel()
    del slot, conn
    await asyncio.sleep(0.8)
    await p.b.start_run(p.owner, "r2")
    await p.b.open_connection(p.owner)


async def test_held_slots_are_renewed_past_the_lease_while_held(pairs):
    # Renewed every 0.4 s: a loaded machine may be late by most of a lease without a lapse.
    p = pairs(limits=Limits(max_runs=1, runs_per_minute=0, max_connections=1), lease_ttl_s=1.2)
    slot = await p.a.start_run(p.owner, "r1")
    conn = await p.a.open_connection(p.owner)
    await asyncio.sleep(3.0)  # two and a half leases
    with pytest.raises(LimitExceeded):
        await p.b.start_run(p.owner, "r2")
    with pytest.raises(LimitExceeded):
        await p.b.open_connection(p.owner)
    await slot.release()
    await conn.release()
    await p.b.start_run(p.owner, "r2")
    await p.b.open_connection(p.owner)


async def test_a_slot_whose_holder_is_gone_without_release_stops_being_renewed(pairs):
    p = pairs(limits=Limits(max_runs=1, runs_per_minute=0, max_connections=0), lease_ttl_s=0.3)
    await p.a.start_run(p.owner, "r1")  # the slot is dropped at once: nobody holds it
    gc.collect()
    await asyncio.sleep(0.6)
    await p.b.start_run(p.owner, "r2")


async def test_runs_per_minute_slide_and_say_when_to_retry(pairs):
    p = pairs(limits=Limits(max_runs=0, runs_per_minute=3, max_connections=0), window_s=1.0)
    for i in range(3):
        await (p.a if i % 2 else p.b).start_run(p.owner, f"r{i}")
    with pytest.raises(LimitExceeded) as info:
        await p.a.start_run(p.owner, "r3")
    assert info.value.code == "rate_limited" and info.value.retry_after_s == 1
    await asyncio.sleep(1.1)
    await p.a.start_run(p.owner, "r3")


async def test_a_refused_start_takes_neither_a_slot_nor_a_place_in_the_window(pairs):
    p = pairs(limits=Limits(max_runs=1, runs_per_minute=2, max_connections=0))
    slot = await p.a.start_run(p.owner, "r1")
    for _ in range(3):
        with pytest.raises(LimitExceeded) as info:
            await p.b.start_run(p.owner, "refused")
        assert info.value.code == "too_many_runs"
    await slot.release()
    await p.b.start_run(p.owner, "r2")  # the window still had room: only two starts counted


async def test_the_connection_cap_holds_across_instances(pairs):
    p = pairs(limits=Limits(max_runs=0, runs_per_minute=0, max_connections=2))
    one = await p.a.open_connection(p.owner)
    await p.b.open_connection(p.owner)
    with pytest.raises(LimitExceeded) as info:
        await p.a.open_connection(p.owner)
    assert info.value.code == "rate_limited"
    await one.release()
    await p.a.open_connection(p.owner)


async def test_a_cap_of_zero_counts_nothing(pairs):
    p = pairs(limits=Limits(max_runs=0, runs_per_minute=0, max_connections=0))
    slots = [await p.a.start_run(p.owner, f"r{i}") for i in range(50)]
    conns = [await p.a.open_connection(p.owner) for _ in range(50)]
    assert all(s.released for s in slots + conns)  # nothing held, nothing to renew


async def test_redis_keys_expire_with_their_newest_entry(redis_url):
    quotas = RedisQuotas(
        clients_of(Topology.parse(redis_url)), limits=Limits(max_runs=2, runs_per_minute=5, max_connections=2)
    )
    owner = f"test:{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_url)
    try:
        slot = await quotas.start_run(owner, "r1")
        await quotas.open_connection(owner)
        for kind in ("runs", "starts", "conns"):
            ttl_ms = await client.pttl(quota_key(kind, owner))
            assert 0 < ttl_ms <= 60_000, kind
        await slot.release()
        assert await client.zcard(quota_key("runs", owner)) == 0
    finally:
        await client.aclose()
        await quotas.aclose()


def test_resumes_per_run_per_connection():
    counter = ResumeCounter(2)
    counter.count("a")
    counter.count("a")
    counter.count("b")
    with pytest.raises(ClientError) as info:
        counter.count("a", ref="r")
    assert info.value.code == "rate_limited" and info.value.ref == "r"
    unlimited = ResumeCounter(0)
    for _ in range(100):
        unlimited.count("a")


def test_defaults_come_from_settings(settings):
    settings.STREAMS = {
        **settings.STREAMS,
        "MAX_RUNS_PER_OWNER": 5,
        "MAX_RUNS_PER_MINUTE": 7,
        "MAX_CONNECTIONS_PER_OWNER": 9,
    }
    assert MemoryQuotas().limits == Limits(5, 7, 9)
