"""Quota counts in Redis: one sorted set per owner and kind, changed only by atomic Lua scripts.

Scripts read the time from Redis (TIME), so instances with skewed clocks still agree on
what has expired. Keys: streams:quota:<owner>:runs (run ids scored by expiry),
:starts (run ids scored by start time, the per-minute window), :conns (connection ids scored
by expiry); each key expires with its newest entry, so idle owners leave nothing behind.
"""

import asyncio
import weakref

from django.conf import settings

from .quotas import CONNECTIONS, RUNS, STARTS, Limits, Quotas, Slot

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

# KEYS: one set per slot. ARGV: lease ms, then each slot's member. Only existing entries are
# renewed (XX): a slot released or expired meanwhile stays gone.
RENEW = (
    NOW_MS
    + """
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""
)


def quota_key(kind: str, owner: str) -> str:
    """The sorted set of `owner`'s slots of `kind` (runs, starts, conns)."""
    return f"streams:quota:{owner}:{kind}"


class RedisQuotas(Quotas):
    """Counts shared by every instance that uses the same Redis."""

    def __init__(self, url: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.url = url
        # redis.asyncio clients belong to one event loop.
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self):
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=10,
                socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_S,
                health_check_interval=30,
            )
            scripts = {"start": START, "open": OPEN, "renew": RENEW}
            scripts = {name: client.register_script(source) for name, source in scripts.items()}
            entry = self._clients[loop] = (client, scripts)
        return entry

    async def _try_start(self, owner: str, run_id: str, limits: Limits) -> tuple[str | None, float]:
        _, scripts = self._client()
        status, wait_ms = await scripts["start"](
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
        _, scripts = self._client()
        keys = [quota_key(CONNECTIONS, owner)]
        return bool(await scripts["open"](keys=keys, args=[cap, int(self.lease_ttl_s * 1000), conn_id]))

    async def _release(self, kind: str, owner: str, member: str) -> None:
        client, _ = self._client()
        await client.zrem(quota_key(kind, owner), member)

    async def _renew(self, slots: list[Slot]) -> None:
        _, scripts = self._client()
        keys = [quota_key(s.kind, s.owner) for s in slots]
        await scripts["renew"](keys=keys, args=[int(self.lease_ttl_s * 1000), *(s.member for s in slots)])

    async def aclose(self) -> None:
        """Close the running loop's client."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose()
