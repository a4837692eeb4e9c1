"""Per-run storage of ordered frames and run metadata, in Redis or (one process) in memory."""

import asyncio
import itertools
import json
import logging
import weakref
from collections import OrderedDict, deque

from django.conf import settings

from ..protocol import Frame
from .batch import Command, CommandBatcher

logger = logging.getLogger(__name__)


class MemoryRunLog:
    """Run logs in this process's memory: for the in-memory channel layer (one process)."""

    # Oldest runs are forgotten past this many, so the log cannot grow without bound.
    MAX_RUNS = 2000

    def __init__(self, max_frames: int):
        self.max_frames = max_frames
        # Bounded like the Redis log: past max_frames the oldest frames go.
        self._frames: OrderedDict[str, deque[Frame]] = OrderedDict()
        self._meta: dict[str, dict] = {}

    async def create(self, run_id: str, meta: dict) -> None:
        """Record a new run and who owns it."""
        self._frames[run_id] = deque(maxlen=self.max_frames)
        self._meta[run_id] = dict(meta)
        while len(self._frames) > self.MAX_RUNS:
            old, _ = self._frames.popitem(last=False)
            self._meta.pop(old, None)

    async def get_meta(self, run_id: str) -> dict | None:
        """The run's metadata, or None for an unknown or expired run."""
        return self._meta.get(run_id)

    async def append(self, run_id: str, frames: list[Frame], refresh_ttl: bool = True) -> None:
        """Append ordered frames (consecutive seq) to the run's log (`refresh_ttl`: Redis only)."""
        log = self._frames.get(run_id)
        if log is not None:
            log.extend(frames)

    async def read(self, run_id: str, after_seq: int, limit: int | None = None) -> list[Frame]:
        """Frames with seq > after_seq, in order (at most `limit`)."""
        log = self._frames.get(run_id)
        if not log:
            return []
        # seq grows by exactly 1, so it gives the index once the trimmed head is known.
        first = max(after_seq - log[0]["seq"] + 1, 0)
        return list(itertools.islice(log, first, None if limit is None else first + limit))

    async def append_after(self, run_id: str, last_seq: int, frames: list[Frame]) -> bool:
        """Append only if the log ends at `last_seq` (nobody else appended meanwhile)."""
        log = self._frames.get(run_id)
        if log is None or (log[-1]["seq"] if log else 0) != last_seq:
            return False
        log.extend(frames)
        return True

    async def heartbeat(self, host_id: str) -> None:
        """Nothing to do: in one process a host lives as long as its clients."""

    async def host_alive(self, host_id: str | None) -> bool:
        """Always: the run's host is this process."""
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


class RedisRunLog:
    """Run logs as Redis streams whose entry ids are the frames' seq, with an expiry."""

    # Appends frames only when the log's last seq is ARGV[1], atomically: two instances that
    # both find a run orphaned cannot both end it.
    APPEND_AFTER = """
    local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    local last = 0
    if #top > 0 then last = tonumber(string.match(top[1][1], '^(%d+)')) end
    if last ~= tonumber(ARGV[1]) then return 0 end
    for i = 2, #ARGV, 2 do redis.call('XADD', KEYS[1], ARGV[i], 'f', ARGV[i + 1]) end
    return 1
    """

    def __init__(self, url: str, ttl_s: int, max_frames: int, host_ttl_s: float = 15.0):
        self.url = url
        self.ttl_s = ttl_s
        self.max_frames = max_frames
        self.host_ttl_ms = max(int(host_ttl_s * 1000), 1)
        # redis.asyncio clients belong to one event loop: one client (in its batcher) per loop.
        self._batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _redis(self):
        """The client of the running loop."""
        return self._batch().client

    def _batch(self) -> CommandBatcher:
        """The running loop's batcher: the hot path's commands share pipelines across runs."""
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            # A blocking pool: past its size a send waits for a connection instead of
            # failing its run (redis-py's plain pool refuses past 100).
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff

            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                # As for the channel layer (settings.redis_host_config): a connection that
                # died with a Redis restart is replaced on its next use.
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2),
                max_connections=settings.REDIS_MAX_CONNECTIONS,
                timeout=settings.REDIS_CONNECT_TIMEOUT_S,
                socket_timeout=10,
                socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_S,
                health_check_interval=30,
            )
            batcher = self._batchers[loop] = CommandBatcher(aioredis.Redis.from_pool(pool))
        return batcher

    @staticmethod
    def _key(run_id: str, part: str) -> str:
        return f"streams:run:{run_id}:{part}"

    async def create(self, run_id: str, meta: dict) -> None:
        """Record a new run and who owns it; its host counts as alive from now on."""
        pipe = self._redis().pipeline(transaction=False)
        pipe.set(self._key(run_id, "meta"), json.dumps(meta), ex=self.ttl_s)
        if meta.get("host"):
            pipe.set(self._host_key(meta["host"]), 1, px=self.host_ttl_ms)
        await pipe.execute()

    @staticmethod
    def _host_key(host_id: str) -> str:
        return f"streams:host:{host_id}"

    async def heartbeat(self, host_id: str) -> None:
        """Say that the host is alive for another host TTL."""
        await self._redis().set(self._host_key(host_id), 1, px=self.host_ttl_ms)

    async def host_alive(self, host_id: str | None) -> bool:
        """Whether the host beat its heart within its TTL (a run without a host counts as alive)."""
        return not host_id or bool(await self._redis().exists(self._host_key(host_id)))

    async def append_after(self, run_id: str, last_seq: int, frames: list[Frame]) -> bool:
        """Append only if the log ends at `last_seq` (nobody else appended meanwhile)."""
        args: list = [last_seq]
        for frame in frames:
            args += [f"{frame['seq']}-1", json.dumps(frame)]
        appended = await self._redis().eval(self.APPEND_AFTER, 1, self._key(run_id, "log"), *args)
        await self._redis().expire(self._key(run_id, "log"), self.ttl_s)
        return bool(appended)

    async def get_meta(self, run_id: str) -> dict | None:
        """The run's metadata, or None for an unknown or expired run."""
        raw = await self._redis().get(self._key(run_id, "meta"))
        return json.loads(raw) if raw else None

    def append_commands(self, run_id: str, frames: list[Frame], refresh_ttl: bool = True) -> list[Command]:
        """The commands that append frames (entry id = seq) and, with `refresh_ttl`, renew the expiry."""
        key = self._key(run_id, "log")
        commands: list[Command] = [
            ("XADD", key, "MAXLEN", "~", self.max_frames, f"{frame['seq']}-1", "f", json.dumps(frame))
            for frame in frames
        ]
        if refresh_ttl:
            commands += [("EXPIRE", key, self.ttl_s), ("EXPIRE", self._key(run_id, "meta"), self.ttl_s)]
        return commands

    async def append(self, run_id: str, frames: list[Frame], refresh_ttl: bool = True) -> None:
        """Append frames, in one round trip shared with other runs' appends."""
        await self.execute(self.append_commands(run_id, frames, refresh_ttl))

    async def execute(self, commands: list[Command]) -> list:
        """Send commands through the running loop's batcher (see store/batch.py)."""
        return await self._batch().execute(commands)

    async def read(self, run_id: str, after_seq: int, limit: int | None = None) -> list[Frame]:
        """Frames with seq > after_seq, in order (at most `limit`)."""
        key = self._key(run_id, "log")
        entries = await self._redis().xrange(key, min=f"{max(after_seq, 0) + 1}-0", count=limit)
        return [json.loads(fields[b"f"]) for _, fields in entries]

    async def aclose(self) -> None:
        """Close the client of the running loop."""
        batcher = self._batchers.pop(asyncio.get_running_loop(), None)
        if batcher is not None:
            await batcher.client.aclose()


_log = None


def get_run_log():
    """The process's run log: Redis when REDIS_URL is set, else memory."""
    global _log
    if _log is None:
        cfg = settings.STREAMS
        if settings.REDIS_URL:
            _log = RedisRunLog(
                settings.REDIS_URL, cfg["LOG_TTL_S"], cfg["LOG_MAX_FRAMES"], 3 * cfg["HOST_HEARTBEAT_S"]
            )
        else:
            _log = MemoryRunLog(cfg["LOG_MAX_FRAMES"])
    return _log


async def owned_meta(run_id: str, owner: str) -> dict | None:
    """The run's metadata if `owner` owns it; None for a missing or foreign run alike."""
    meta = await get_run_log().get_meta(run_id)
    return meta if meta is not None and meta.get("owner") == owner else None


def reset_run_log() -> None:
    """Forget the process's run log (settings changed, e.g. in tests)."""
    global _log
    _log = None
