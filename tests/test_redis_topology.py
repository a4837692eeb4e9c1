"""The Redis topology: configuration, key placement, one home for clients, recovery of leases and beats."""

import asyncio
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from streams.access.quota_base import LimitExceeded, Limits
from streams.access.quota_redis import RedisQuotas, quota_key
from streams.store.runlog import RedisRunLog, control_group, layer_shards, new_run_id, run_group
from streams.store.topology import Topology, clients_of
from tests.support.live import ROOT
from tests.test_settings_layers import load_settings

STREAMS = Path(__file__).resolve().parents[1] / "streams"


def test_plain_nodes_and_sentinel_masters_parse():
    plain = Topology.parse("redis://a:1/0, redis://b:2/0")
    assert plain.urls == ("redis://a:1/0", "redis://b:2/0") and plain.size == 2
    sentinel = Topology.parse(sentinels="s1:26379,[::1]:26380", master="m1,m2", password="pw", db="3")
    assert sentinel.sentinels == (("s1", 26379), ("::1", 26380))
    assert sentinel.masters == ("m1", "m2") and sentinel.size == 2 and sentinel.db == 3
    assert "pw" not in repr(sentinel)  # settings are shown on error pages
    assert not Topology.parse().configured


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "redis://a:1", "sentinels": "s:1", "master": "m"}, "both set"),
        ({"sentinels": "s:1"}, "without REDIS_SENTINEL_MASTER"),
        ({"master": "m"}, "without REDIS_SENTINELS"),
        ({"sentinels": "nohost", "master": "m"}, "not host:port"),
        ({"url": "http://a:1"}, "not a redis://"),
        ({"url": "redis://a:1,redis://a:1"}, "same node twice"),
        ({"url": "redis://a:1", "db": "x"}, "REDIS_DB must be a number"),
    ],
)
def test_a_topology_that_makes_no_sense_is_refused_clearly(kwargs, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        Topology.parse(**kwargs)


def test_a_password_in_a_url_stays_out_of_its_label():
    topology = Topology.parse("redis://:s3cret@a:1/0")
    assert "s3cret" not in topology.label(0)


def test_naming_both_redis_url_and_sentinels_stops_the_app_at_start_up():
    env = {
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "REDIS_SENTINELS": "127.0.0.1:2",
        "REDIS_SENTINEL_MASTER": "m",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "REDIS_URL and REDIS_SENTINELS are both set" in done.stderr


def test_sentinel_settings_give_channels_redis_its_own_sentinel_hosts(monkeypatch):
    s = load_settings(
        monkeypatch,
        REDIS_SENTINELS="127.0.0.1:26379,127.0.0.1:26380",
        REDIS_SENTINEL_MASTER="a,b",
        REDIS_SENTINEL_PASSWORD="sentinel-pw",
        REDIS_PASSWORD="data-pw",
    )
    hosts = s.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert [h["master_name"] for h in hosts] == ["a", "b"]
    for host in hosts:
        assert host["sentinels"] == [("127.0.0.1", 26379), ("127.0.0.1", 26380)]
        assert host["sentinel_kwargs"]["password"] == "sentinel-pw"
        assert host["password"] == "data-pw"
        assert host["socket_timeout"] is None  # as for plain nodes: idle sockets must outlive it


def test_several_urls_give_the_layer_one_shard_each(monkeypatch):
    s = load_settings(monkeypatch, REDIS_URL="redis://127.0.0.1:1/0,redis://127.0.0.1:2/0")
    hosts = s.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
    assert [h["address"] for h in hosts] == ["redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"]


def test_no_module_but_the_topology_builds_a_redis_client():
    building = re.compile(r"\b(from_url|from_pool|Redis\(|Sentinel\(|master_for|ConnectionPool)")
    offenders = [
        str(path.relative_to(STREAMS))
        for path in STREAMS.rglob("*.py")
        if path.name != "topology.py" and building.search(path.read_text())
    ]
    assert offenders == []


def test_a_runs_groups_and_log_share_one_node(settings):
    urls = "redis://127.0.0.1:1/0,redis://127.0.0.1:2/0"
    settings.REDIS_URL = urls
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": u} for u in urls.split(",")]},
        }
    }
    from streams.store import topology

    topology.reset()
    try:
        shard = layer_shards(2)
        log = RedisRunLog(clients_of(Topology.parse(urls)), 60, 100, shards=shard)
        ids = [new_run_id() for _ in range(200)]
        assert {log.node(i) for i in ids} == {0, 1}  # spread over both
        for run_id in ids:
            assert shard(run_group(run_id)) == shard(control_group(run_id)) == log.node(run_id)
    finally:
        topology.reset()


@pytest.mark.redis
async def test_quota_slots_lost_with_an_empty_restart_come_back_with_the_renewals(redis_process):
    quotas = RedisQuotas(
        clients_of(Topology.parse(redis_process.url)), limits=Limits(1, 100, 10), lease_ttl_s=0.6
    )
    owner = f"test:{uuid.uuid4().hex}"
    try:
        slot = await quotas.start_run(owner, "held")  # held: renewed while referenced
        await asyncio.to_thread(redis_process.restart)
        assert redis_process.client().zcard(quota_key("runs", owner)) == 0
        await asyncio.sleep(0.6)  # two renewals (every lease / 3)
        assert redis_process.client().zscore(quota_key("runs", owner), "held") is not None
        # Counted again: the owner's cap of one holds.
        with pytest.raises(LimitExceeded, match="at most 1 runs"):
            await quotas.start_run(owner, "second")
        await slot.release()
    finally:
        await quotas.aclose()


@pytest.mark.redis
async def test_a_silent_host_is_lost_only_once_redis_has_served_longer_than_a_beat(redis_process):
    log = RedisRunLog(clients_of(Topology.parse(redis_process.url)), 60, 100, host_ttl_s=1.0)
    run_id = uuid.uuid4().hex
    try:
        # A fresh (restarted) Redis has no beats of anyone: silence proves nothing yet.
        assert await log.host_alive("gone", run_id)
        await asyncio.sleep(1.1)  # now it has served longer than a host TTL...
        # ...but this process has only just seen this Redis (a promoted replica looks the same).
        assert await log.host_alive("gone", run_id)
        await asyncio.sleep(1.1)
        assert not await log.host_alive("gone", run_id)
        await log.heartbeat("beating")
        assert await log.host_alive("beating", run_id)
    finally:
        await log.aclose()
