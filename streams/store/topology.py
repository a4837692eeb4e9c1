"""The one home of the app's Redis: which nodes there are, where each key lives, every client.

Configured from the environment (orchestrator_site/settings.py reads the variables):
- `REDIS_URL=redis://h:p/db[,redis://h2:p2/db]`: one or several plain nodes;
- or `REDIS_SENTINELS=h:p,h:p,...` with `REDIS_SENTINEL_MASTER=name[,name2]`: masters that
  Sentinel manages and fails over; `REDIS_SENTINEL_PASSWORD` (the sentinels'), and
  `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_DB` (the data nodes').

With several nodes the channel layer shards channels and groups by channels-redis' own hash;
everything else places its keys by `Topology.index`: a run's log and metadata by run id, a
quota by owner. Key names carry a Redis Cluster hash tag (`{run_id}`, `{owner}`) and every
Lua script names its keys in KEYS, so the key layout is also valid on Redis Cluster.

Clients are built once per process, node and event loop (redis.asyncio clients belong to one
loop), and reused; nothing else in the app builds a Redis client.
"""

from __future__ import annotations

import asyncio
import binascii
import weakref
from dataclasses import dataclass, field
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _address(entry: str) -> tuple[str, int]:
    host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {entry!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class Topology:
    """The configured Redis nodes: plain URLs, or Sentinel-managed masters."""

    urls: tuple[str, ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    masters: tuple[str, ...] = ()
    # Never in a repr: settings are shown on error pages.
    sentinel_password: str = field(default="", repr=False)
    username: str = ""
    password: str = field(default="", repr=False)
    db: int = 0

    @classmethod
    def parse(
        cls,
        url: str = "",
        sentinels: str = "",
        master: str = "",
        sentinel_password: str = "",
        username: str = "",
        password: str = "",
        db: str | int = 0,
    ) -> Topology:
        """The topology the environment names; a clear ImproperlyConfigured when it makes no sense."""
        urls, sentinel_list, masters = _split(url), _split(sentinels), _split(master)
        if urls and sentinel_list:
            raise ImproperlyConfigured(
                "REDIS_URL and REDIS_SENTINELS are both set: name the nodes one way only "
                "(REDIS_URL for plain nodes, REDIS_SENTINELS with REDIS_SENTINEL_MASTER for Sentinel)"
            )
        if sentinel_list and not masters:
            raise ImproperlyConfigured(
                "REDIS_SENTINELS is set without REDIS_SENTINEL_MASTER (the master name)"
            )
        if masters and not sentinel_list:
            raise ImproperlyConfigured("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS (host:port,...)")
        for u in urls:
            if urlparse(u).scheme not in ("redis", "rediss", "unix"):
                raise ImproperlyConfigured(
                    f"REDIS_URL: {_safe(u)!r} is not a redis://, rediss:// or unix:// URL"
                )
        if len(set(urls)) != len(urls) or len(set(masters)) != len(masters):
            raise ImproperlyConfigured("REDIS_URL / REDIS_SENTINEL_MASTER names the same node twice")
        try:
            db = int(db or 0)
        except ValueError:
            raise ImproperlyConfigured(f"REDIS_DB must be a number, not {db!r}") from None
        return cls(
            urls,
            tuple(_address(s) for s in sentinel_list),
            masters,
            sentinel_password,
            username,
            password,
            db,
        )

    @property
    def configured(self) -> bool:
        """Whether the app runs on Redis at all (else: the in-memory layer, one process)."""
        return bool(self.urls or self.masters)

    @property
    def size(self) -> int:
        """How many nodes (shards) there are."""
        return len(self.urls) or len(self.masters)

    def index(self, tag: str) -> int:
        """The node that holds the keys tagged `tag` (a run id, an owner)."""
        if self.size <= 1:
            return 0
        return binascii.crc32(tag.encode()) % self.size

    def label(self, index: int) -> str:
        """A node's name for logs and errors: never a password."""
        return _safe(self.urls[index]) if self.urls else f"sentinel master {self.masters[index]}"

    def layer_hosts(self, **connection: object) -> list[dict]:
        """channels-redis host entries, one per node, in node order, with `connection` options."""
        if self.urls:
            return [{"address": u, **connection} for u in self.urls]
        return [
            {
                "sentinels": list(self.sentinels),
                "master_name": name,
                "sentinel_kwargs": self._sentinel_kwargs(connection),
                **self._data_kwargs(),
                **connection,
            }
            for name in self.masters
        ]

    def same_node(self, index: int, host: dict) -> bool:
        """Whether a channels-redis host entry is node `index` of this topology."""
        if self.urls:
            return host.get("address") == self.urls[index]
        return host.get("master_name") == self.masters[index] and list(host.get("sentinels", ())) == list(
            self.sentinels
        )

    def _sentinel_kwargs(self, connection: dict) -> dict:
        kwargs = {k: v for k, v in connection.items() if k.startswith("socket_")}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def _data_kwargs(self) -> dict:
        kwargs: dict = {"db": self.db}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def build_client(self, index: int, **connection: object):
        """A new asyncio client of node `index` (callers cache it: see `Clients`)."""
        import redis.asyncio as aioredis

        if self.urls:
            # A blocking pool: past its size a command waits for a connection instead of
            # failing its run (redis-py's plain pool refuses past its maximum).
            pool = aioredis.BlockingConnectionPool.from_url(self.urls[index], **connection)
            return aioredis.Redis.from_pool(pool)
        from redis.asyncio.sentinel import Sentinel

        connection = dict(connection)
        # The Sentinel pool has no blocking variant: past max_connections it refuses.
        connection.pop("timeout", None)
        sentinel = Sentinel(
            list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(connection), **self._data_kwargs()
        )
        return sentinel.master_for(self.masters[index], **connection)


def _safe(url: str) -> str:
    """A URL without its password."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


class Clients:
    """This process's clients of a topology: one per node and event loop, built on first use."""

    def __init__(self, topology: Topology, **connection: object):
        self.topology = topology
        self.connection = connection
        self._by_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def client(self, index: int):
        """Node `index`'s client for the running loop."""
        loop = asyncio.get_running_loop()
        clients = self._by_loop.get(loop)
        if clients is None:
            clients = self._by_loop[loop] = [None] * self.topology.size
        client = clients[index]
        if client is None:
            client = clients[index] = self.topology.build_client(index, **self.connection)
        return client

    def for_tag(self, tag: str):
        """The running loop's client of the node that holds the keys tagged `tag`."""
        return self.client(self.topology.index(tag))

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        clients = self._by_loop.pop(asyncio.get_running_loop(), None) or ()
        for client in clients:
            if client is not None:
                await client.aclose()


_topology: Topology | None = None
_clients: Clients | None = None


def get_topology() -> Topology:
    """The topology the settings name (parsed once; `reset` after a settings change)."""
    global _topology
    if _topology is None:
        from django.conf import settings

        _topology = Topology.parse(
            settings.REDIS_URL,
            getattr(settings, "REDIS_SENTINELS", ""),
            getattr(settings, "REDIS_SENTINEL_MASTER", ""),
            getattr(settings, "REDIS_SENTINEL_PASSWORD", ""),
            getattr(settings, "REDIS_USERNAME", ""),
            getattr(settings, "REDIS_PASSWORD", ""),
            getattr(settings, "REDIS_DB", 0),
        )
    return _topology


def get_clients() -> Clients:
    """The process's clients of the configured nodes (the run log's, the quotas', the heartbeats')."""
    global _clients
    if _clients is None:
        _clients = clients_of(get_topology())
    return _clients


def clients_of(topology: Topology) -> Clients:
    """Clients of `topology` with the app's connection options (settings.REDIS_*)."""
    from django.conf import settings
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    return Clients(
        topology,
        # As for the channel layer (settings.redis_connection_options): a connection that
        # died with a Redis restart or failover is replaced on its next use.
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
        max_connections=settings.REDIS_MAX_CONNECTIONS,
        timeout=settings.REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=10,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_S,
        health_check_interval=30,
    )


def reset() -> None:
    """Forget the topology and its clients (settings changed, e.g. in tests)."""
    global _topology, _clients
    _topology = _clients = None
