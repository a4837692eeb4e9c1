"""Quota counts in Redis: one sorted set per owner and kind, changed only by atomic Lua scripts.

Scripts read the time from Redis (TIME), so instances with skewed clocks still agree on
what has expired. Keys: streams:quota:{<owner>}:runs (run ids scored by expiry),
:starts (run ids scored by start time, the per-minute window), :conns (connection ids scored
by expiry); each key expires with its newest entry, so idle owners leave nothing behind. An
owner's keys live on the node its name hashes to, in one Redis Cluster slot (the hash tag).

After Redis lost them (an empty restart, a promoted replica that missed the last writes),
the renewals of held slots add them back: counts recover within a third of the lease.
"""

import asyncio
import weakref
from collections import defaultdict

from ..store.topology import Clients
from .quota_base import CONNECTIONS, RUNS, STARTS, Limits, Quotas, Slot

NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: runs, starts. ARGV: cap, per-window cap, lease ms, window ms, run id.
# Returns {0, 0} (counted), {1, 0} (too many in flight) or {2, ms until the window has room}.
START = (
    NOW_MS
    + """
local cap, per_window = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease, window = tonumber(ARGV[3]), tonumber(ARGV[4])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= cap then return {1, 0} end
end
if per_window > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
  if redis.call('ZCARD', KEYS[2]) >= per_window then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {2, tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], window)
end
if cap > 0 then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[5])
  redis.call('PEXPIRE', KEYS[1], lease)
end
return {0, 0}
"""
)

# KEYS: conns. ARGV: cap, lease ms, connection id. Returns 1 (counted) or 0 (refused).
OPEN = (
    NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
)

# KEYS: the sets of one owner's slots (one per slot, one Cluster slot). ARGV: lease ms, then
# each slot's member. A slot Redis lost is added back: this process still holds it. (A
# release racing a renewal can re-add a slot; it then lapses within one lease.)
RENEW = (
    NOW_MS
    + """
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""
)


def quota_key(kind: str, owner: str) -> str:
    """The sorted set of `owner`'s slots of `kind` (runs, starts, conns)."""
    return f"streams:quota:{{{owner}}}:{kind}"


class RedisQuotas(Quotas):
    """Counts shared by every instance that uses the same Redis nodes."""

    def __init__(self, clients: Clients, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clients = clients
        # Per event loop: each node's registered scripts (redis.asyncio clients belong to one loop).
        self._scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _script(self, owner: str, name: str):
        """The script `name` on the running loop's client of `owner`'s node."""
        index = self.clients.topology.index(owner)
        by_node = self._scripts.setdefault(asyncio.get_running_loop(), {})
        scripts = by_node.get(index)
        if scripts is None:
            client = self.clients.client(index)
            sources = {"start": START, "open": OPEN, "renew": RENEW}
            scripts = by_node[index] = {n: client.register_script(src) for n, src in sources.items()}
        return scripts[name]

    async def _try_start(self, owner: str, run_id: str, limits: Limits) -> tuple[str | None, float]:
        status, wait_ms = await self._script(owner, "start")(
            keys=[quota_key(RUNS, owner), quota_key(STARTS, owner)],
            args=[
                limits.max_runs,
                limits.runs_per_minute,
                int(self.lease_ttl_s * 1000),
                int(self.window_s * 1000),
                run_id,
            ],
        )
        return (None, RUNS, "window")[int(status)], int(wait_ms) / 1000

    async def _try_open(self, owner: str, conn_id: str, cap: int) -> bool:
        keys = [quota_key(CONNECTIONS, owner)]
        script = self._script(owner, "open")
        return bool(await script(keys=keys, args=[cap, int(self.lease_ttl_s * 1000), conn_id]))

    async def _release(self, kind: str, owner: str, member: str) -> None:
        await self.clients.for_tag(owner).zrem(quota_key(kind, owner), member)

    async def _renew(self, slots: list[Slot]) -> None:
        """One script call per owner (its keys share a slot), all owners at once."""
        by_owner: dict[str, list[Slot]] = defaultdict(list)
        for slot in slots:
            by_owner[slot.owner].append(slot)
        lease_ms = int(self.lease_ttl_s * 1000)
        results = await asyncio.gather(
            *(
                self._script(owner, "renew")(
                    keys=[quota_key(s.kind, owner) for s in held], args=[lease_ms, *(s.member for s in held)]
                )
                for owner, held in by_owner.items()
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    async def aclose(self) -> None:
        """Close the running loop's clients."""
        self._scripts.pop(asyncio.get_running_loop(), None)
        await self.clients.aclose()
