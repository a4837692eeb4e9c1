"""Per-run storage of ordered frames and run metadata, in Redis or (one process) in memory."""

import asyncio
import itertools
import json
import logging
import time
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable

from django.conf import settings

from .. import compat
from ..protocol import Frame
from . import topology
from .batch import Command, CommandBatcher
from .topology import Clients, get_clients, get_topology

logger = logging.getLogger(__name__)


def run_group(run_id: str) -> str:
    """The channel-layer group that carries a run's frames."""
    return f"run.{run_id}"


def control_group(run_id: str) -> str:
    """The channel-layer group that carries cancel/attach/detach for a run to its host."""
    return f"runctl.{run_id}"


def layer_shards(size: int) -> Callable[[str], int] | None:
    """Which of `size` nodes the channel layer carries a group on; None if it is no Redis layer of them."""
    layer = settings.CHANNEL_LAYERS.get("default", {})
    backend, config = layer.get("BACKEND", ""), layer.get("CONFIG", {})
    if size <= 1 or len(config.get("hosts", ())) != size:
        return None
    prefix = config.get("prefix", "asgi")
    if compat.layer_group_shard(backend, "probe", size, prefix) is None:
        return None
    return lambda group: compat.layer_group_shard(backend, group, size, prefix)


def new_run_id() -> str:
    """A fresh run id whose frames group and control group the layer carries on one node.

    With several nodes a run's log then lives there too (RedisRunLog.node): one node holds
    all of a run, so a dead node costs only the runs it held. Two draws on average with two.
    """
    shard = layer_shards(get_topology().size)
    while True:
        run_id = uuid.uuid4().hex
        if shard is None or shard(run_group(run_id)) == shard(control_group(run_id)):
            return run_id


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

    async def last_seq(self, run_id: str) -> int:
        """The seq of the log's last frame (0: an empty or missing log)."""
        log = self._frames.get(run_id)
        return log[-1]["seq"] if log else 0

    async def append_after(self, run_id: str, last_seq: int, frames: list[Frame]) -> bool:
        """Append only if the log ends at `last_seq` (nobody else appended meanwhile)."""
        log = self._frames.get(run_id)
        if log is None or (log[-1]["seq"] if log else 0) != last_seq:
            return False
        log.extend(frames)
        return True

    async def heartbeat(self, host_id: str) -> None:
        """Nothing to do: in one process a host lives as long as its clients."""

    async def host_alive(self, host_id: str | None, run_id: str) -> bool:
        """Always: the run's host is this process."""
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


class RedisRunLog:
    """Run logs as Redis streams whose entry ids are the frames' seq, with an expiry.

    A run's keys (`streams:run:{<id>}:meta`, `:log`) live on the node its id hashes to
    (store/topology.py); a host's heartbeat key is written to every node, since each run's
    node is where its host's liveness is checked.
    """

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

    def __init__(
        self,
        clients: Clients,
        ttl_s: int,
        max_frames: int,
        host_ttl_s: float = 15.0,
        shards: Callable[[str], int] | None = None,
    ):
        self.clients = clients
        self.topology = clients.topology
        # Where the channel layer carries a group (layer_shards), else None: by run id alone.
        self._shards = shards
        self.ttl_s = ttl_s
        self.max_frames = max_frames
        self.host_ttl_s = host_ttl_s
        self.host_ttl_ms = max(int(host_ttl_s * 1000), 1)
        # One batcher per node and event loop (redis.asyncio clients belong to one loop).
        self._batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # Per node: the replication id last seen and when (see host_alive).
        self._serving: dict[int, tuple[str, float]] = {}

    def node(self, run_id: str) -> int:
        """The index of the node that holds the run's keys: where the layer carries its group."""
        if self._shards is not None:
            return self._shards(run_group(run_id))
        return self.topology.index(run_id)

    def _redis(self, run_id: str):
        """The running loop's client of the run's node."""
        return self.clients.client(self.node(run_id))

    def _batch(self, run_id: str) -> CommandBatcher:
        """The running loop's batcher of the run's node: hot-path commands share pipelines across runs."""
        index = self.node(run_id)
        loop = asyncio.get_running_loop()
        batchers = self._batchers.get(loop)
        if batchers is None:
            batchers = self._batchers[loop] = {}
        batcher = batchers.get(index)
        if batcher is None:
            batcher = batchers[index] = CommandBatcher(self.clients.client(index))
        return batcher

    @staticmethod
    def _key(run_id: str, part: str) -> str:
        # The hash tag keeps every key of a run in one Redis Cluster slot.
        return f"streams:run:{{{run_id}}}:{part}"

    @staticmethod
    def _host_key(host_id: str) -> str:
        return f"streams:host:{{{host_id}}}"

    def create_commands(self, run_id: str, meta: dict, *, only_new: bool = False) -> list[Command]:
        """The commands that record a run's metadata (`only_new`: unless it is there) and beat its host."""
        meta_set: Command = ("SET", self._key(run_id, "meta"), json.dumps(meta), "EX", self.ttl_s)
        commands = [(*meta_set, "NX") if only_new else meta_set]
        if meta.get("host"):
            commands.append(("SET", self._host_key(meta["host"]), 1, "PX", self.host_ttl_ms))
        return commands

    async def create(self, run_id: str, meta: dict) -> None:
        """Record a new run and who owns it; its host counts as alive from now on."""
        await self.execute(run_id, self.create_commands(run_id, meta))

    async def heartbeat(self, host_id: str) -> None:
        """Say on every node that the host is alive for another host TTL (a dead node raises last)."""
        key = self._host_key(host_id)
        results = await asyncio.gather(
            *(self.clients.client(i).set(key, 1, px=self.host_ttl_ms) for i in range(self.topology.size)),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def host_alive(self, host_id: str | None, run_id: str) -> bool:
        """Whether the run's host is alive: it beat within its TTL, or its silence proves nothing.

        A host cannot beat while Redis is unreachable, and an emptied (restarted) Redis or a
        promoted replica may lack its last beat: silence counts only once the node has been
        serving, as this process sees it, for longer than a host TTL.
        """
        if not host_id:
            return True
        client = self._redis(run_id)
        if await client.exists(self._host_key(host_id)):
            return True
        info = await client.info("server")
        if info.get("uptime_in_seconds", 0) < self.host_ttl_s:
            return True
        replid = (await client.info("replication")).get("master_replid", "")
        index, now = self.node(run_id), time.monotonic()
        seen = self._serving.get(index)
        if seen is None or seen[0] != replid:
            self._serving[index] = (replid, now)
            return True
        return now - seen[1] < self.host_ttl_s

    async def append_after(self, run_id: str, last_seq: int, frames: list[Frame]) -> bool:
        """Append only if the log ends at `last_seq` (nobody else appended meanwhile)."""
        args: list = [last_seq]
        for frame in frames:
            args += [f"{frame['seq']}-1", json.dumps(frame)]
        client = self._redis(run_id)
        appended = await client.eval(self.APPEND_AFTER, 1, self._key(run_id, "log"), *args)
        await client.expire(self._key(run_id, "log"), self.ttl_s)
        return bool(appended)

    async def last_seq(self, run_id: str) -> int:
        """The seq of the log's last frame (0: an empty or missing log)."""
        top = await self._redis(run_id).xrevrange(self._key(run_id, "log"), count=1)
        return int(top[0][0].split(b"-")[0]) if top else 0

    async def get_meta(self, run_id: str) -> dict | None:
        """The run's metadata, or None for an unknown or expired run."""
        raw = await self._redis(run_id).get(self._key(run_id, "meta"))
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
        await self.execute(run_id, self.append_commands(run_id, frames, refresh_ttl))

    async def execute(self, run_id: str, commands: list[Command]) -> list:
        """Send commands to the run's node through the running loop's batcher (see store/batch.py)."""
        return await self._batch(run_id).execute(commands)

    async def read(self, run_id: str, after_seq: int, limit: int | None = None) -> list[Frame]:
        """Frames with seq > after_seq, in order (at most `limit`)."""
        key = self._key(run_id, "log")
        entries = await self._redis(run_id).xrange(key, min=f"{max(after_seq, 0) + 1}-0", count=limit)
        return [json.loads(fields[b"f"]) for _, fields in entries]

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        self._batchers.pop(asyncio.get_running_loop(), None)
        await self.clients.aclose()


_log = None


def get_run_log():
    """The process's run log: Redis when a topology is configured, else memory."""
    global _log
    if _log is None:
        cfg = settings.STREAMS
        if get_topology().configured:
            _log = RedisRunLog(
                get_clients(),
                cfg["LOG_TTL_S"],
                cfg["LOG_MAX_FRAMES"],
                3 * cfg["HOST_HEARTBEAT_S"],
                layer_shards(get_topology().size),
            )
        else:
            _log = MemoryRunLog(cfg["LOG_MAX_FRAMES"])
    return _log


async def owned_meta(run_id: str, owner: str) -> dict | None:
    """The run's metadata if `owner` owns it; None for a missing or foreign run alike."""
    meta = await get_run_log().get_meta(run_id)
    return meta if meta is not None and meta.get("owner") == owner else None


def reset_run_log() -> None:
    """Forget the process's run log and Redis topology (settings changed, e.g. in tests)."""
    global _log
    _log = None
    topology.reset()
