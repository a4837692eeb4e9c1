"""The quota rules and their in-memory counts; streams/access/quota_redis.py counts in Redis.

See streams/access/quotas.py for which one a process uses. A held slot (a run in
flight, an open connection) is one entry of its owner's sorted set, scored by when it
expires: the process that holds it renews it every LEASE_TTL_S / 3 seconds while it holds
it, and releases it when done. A crashed instance renews nothing, so its slots stop counting
within LEASE_TTL_S; a slot whose holder is gone without a release (an SSE response that was
never sent) is dropped from the renewals when the holder is garbage, and expires likewise.

The calls, for both transports:
    slot = await get_quotas().start_run(client.quota_owner, run_id)  # before run.accepted
    ...the host keeps `slot` with the run and, when the run ends: slot.release_soon()
    lease = await get_quotas().open_connection(client.quota_owner)  # at connect
    await lease.release()                                             # at close
A refusal raises LimitExceeded (`too_many_runs` or `rate_limited`, with retry_after_s).
"""

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass

from django.conf import settings

from streams.protocol import ClientError

logger = logging.getLogger(__name__)

# Seconds a slot counts without being renewed (the time a crashed instance's slots still count).
LEASE_TTL_S = 30.0
# The window of MAX_RUNS_PER_MINUTE, sliding.
WINDOW_S = 60.0
# Retry-After for a cap on things in flight: when one of them ends is not known here.
BUSY_RETRY_AFTER_S = 2

RUNS, STARTS, CONNECTIONS = "runs", "starts", "conns"
# Releases under way from sync code: the loop keeps only weak references to tasks.
_releasing: set[asyncio.Task] = set()


class LimitExceeded(ClientError):
    """A quota refused the request; `retry_after_s` tells when to try again (SSE: 429, Retry-After)."""

    status = 429

    def __init__(self, code: str, message: str, retry_after_s: float, ref: str | None = None):
        super().__init__(code, message, ref, retry_after_s)


@dataclass(frozen=True)
class Limits:
    """The caps (0: no cap)."""

    max_runs: int = 16
    runs_per_minute: int = 60
    max_connections: int = 32

    @classmethod
    def from_settings(cls) -> "Limits":
        """The caps in settings.STREAMS."""
        cfg = settings.STREAMS
        return cls(cfg["MAX_RUNS_PER_OWNER"], cfg["MAX_RUNS_PER_MINUTE"], cfg["MAX_CONNECTIONS_PER_OWNER"])


class Slot:
    """A held run slot or connection: renewed while held, released once."""

    __slots__ = ("__weakref__", "held", "kind", "member", "owner", "quotas", "released")

    def __init__(self, quotas: "Quotas", kind: str, owner: str, member: str, held: bool):
        self.quotas, self.kind, self.owner, self.member, self.held = quotas, kind, owner, member, held
        self.released = not held

    async def release(self) -> None:
        """Stop counting it (idempotent; a Redis failure is logged: the slot expires anyway)."""
        if self.released:
            return
        self.released = True
        self.quotas._forget(self)
        try:
            await self.quotas._release(self.kind, self.owner, self.member)
        except Exception as exc:
            logger.warning("quota slot %s of %s not released (it expires): %s", self.kind, self.owner, exc)

    def release_soon(self) -> None:
        """release() from sync code, in the running loop."""
        if not self.released:
            task = asyncio.get_running_loop().create_task(self.release())
            _releasing.add(task)
            task.add_done_callback(_releasing.discard)


class _Renewals:
    """One event loop's held slots (weakly: a holder that is garbage stops renewing) and their renewer."""

    def __init__(self):
        self.slots: weakref.WeakSet[Slot] = weakref.WeakSet()
        self.task: asyncio.Task | None = None


class Quotas:
    """The quota counts; subclasses store them (memory here, Redis in quota_redis)."""

    def __init__(
        self, limits: Limits | None = None, lease_ttl_s: float = LEASE_TTL_S, window_s: float = WINDOW_S
    ):
        self._limits = limits
        self.lease_ttl_s = lease_ttl_s
        self.window_s = window_s
        # Per event loop: the slots held there and the task that renews them.
        self._held: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def limits(self) -> Limits:
        """The caps: as constructed, else as settings say now."""
        return self._limits or Limits.from_settings()

    async def start_run(self, owner: str, run_id: str) -> Slot:
        """Count a new run of `owner`, or raise LimitExceeded (too_many_runs, rate_limited)."""
        limits = self.limits
        if limits.max_runs <= 0 and limits.runs_per_minute <= 0:
            return Slot(self, RUNS, owner, run_id, held=False)
        refused, retry_after_s = await self._try_start(owner, run_id, limits)
        if refused == RUNS:
            raise LimitExceeded(
                "too_many_runs", f"at most {limits.max_runs} runs in flight at once", BUSY_RETRY_AFTER_S
            )
        if refused == "window":
            raise LimitExceeded(
                "rate_limited", f"at most {limits.runs_per_minute} runs started per minute", retry_after_s
            )
        return self._hold(Slot(self, RUNS, owner, run_id, held=limits.max_runs > 0))

    async def end_run(self, owner: str, run_id: str) -> None:
        """Stop counting a run (from any instance; idempotent)."""
        await self._release(RUNS, owner, run_id)

    async def open_connection(self, owner: str, conn_id: str | None = None) -> Slot:
        """Count a new connection of `owner`, or raise LimitExceeded (rate_limited)."""
        cap = self.limits.max_connections
        conn_id = conn_id or uuid.uuid4().hex
        if cap <= 0:
            return Slot(self, CONNECTIONS, owner, conn_id, held=False)
        if not await self._try_open(owner, conn_id, cap):
            raise LimitExceeded("rate_limited", f"at most {cap} connections at once", BUSY_RETRY_AFTER_S)
        return self._hold(Slot(self, CONNECTIONS, owner, conn_id, held=True))

    # --- renewals ---------------------------------------------------------------------

    def _hold(self, slot: Slot) -> Slot:
        if not slot.held:
            return slot
        loop = asyncio.get_running_loop()
        renewals = self._held.get(loop)
        if renewals is None:
            renewals = self._held[loop] = _Renewals()
        renewals.slots.add(slot)
        if renewals.task is None or renewals.task.done():
            renewals.task = loop.create_task(self._renew_loop(renewals.slots), name="quota-renewals")
        return slot

    def _forget(self, slot: Slot) -> None:
        renewals = self._held.get(asyncio.get_running_loop())
        if renewals is not None:
            renewals.slots.discard(slot)

    async def _renew_loop(self, slots: weakref.WeakSet) -> None:
        """While slots are held in this loop, renew them all in one call every third of the TTL."""
        while slots:
            await asyncio.sleep(self.lease_ttl_s / 3)
            held = [s for s in list(slots) if not s.released]
            if not held:
                continue
            try:
                await self._renew(held)
            except Exception as exc:  # Redis down: the slots may lapse; they are renewed next time
                logger.warning("quota renewal of %d slots failed: %s", len(held), exc)

    # --- storage (memory) ---------------------------------------------------------------

    async def _try_start(self, owner: str, run_id: str, limits: Limits) -> tuple[str | None, float]:
        raise NotImplementedError

    async def _try_open(self, owner: str, conn_id: str, cap: int) -> bool:
        raise NotImplementedError

    async def _release(self, kind: str, owner: str, member: str) -> None:
        raise NotImplementedError

    async def _renew(self, slots: list[Slot]) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close this loop's connections, if any."""


class MemoryQuotas(Quotas):
    """Counts in this process (no Redis: one process serves everything)."""

    def __init__(self, *args, clock=time.monotonic, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        # (kind, owner) -> member -> expiry (held slots) or start time (the starts window).
        self._sets: dict[tuple[str, str], dict[str, float]] = {}
        self._calls = 0

    def _live(self, kind: str, owner: str, now: float, horizon: float) -> dict[str, float]:
        """The set's entries scored after `horizon` (older ones are dropped)."""
        entries = self._sets.setdefault((kind, owner), {})
        for member in [m for m, score in entries.items() if score <= horizon]:
            del entries[member]
        return entries

    def _sweep(self, now: float) -> None:
        """Now and then, drop what has expired for every owner: idle owners must not stay in memory."""
        self._calls += 1
        if self._calls % 1000:
            return
        for (kind, owner), entries in list(self._sets.items()):
            horizon = now - self.window_s if kind == STARTS else now
            if all(score <= horizon for score in entries.values()):
                del self._sets[(kind, owner)]

    async def _try_start(self, owner, run_id, limits):
        now = self.clock()
        self._sweep(now)
        runs = self._live(RUNS, owner, now, now)
        if limits.max_runs > 0 and len(runs) >= limits.max_runs:
            return RUNS, 0.0
        if limits.runs_per_minute > 0:
            starts = self._live(STARTS, owner, now, now - self.window_s)
            if len(starts) >= limits.runs_per_minute:
                return "window", min(starts.values()) + self.window_s - now
            starts[run_id] = now
        if limits.max_runs > 0:
            runs[run_id] = now + self.lease_ttl_s
        return None, 0.0

    async def _try_open(self, owner, conn_id, cap):
        now = self.clock()
        self._sweep(now)
        conns = self._live(CONNECTIONS, owner, now, now)
        if len(conns) >= cap:
            return False
        conns[conn_id] = now + self.lease_ttl_s
        return True

    async def _release(self, kind, owner, member):
        entries = self._sets.get((kind, owner))
        if entries is not None:
            entries.pop(member, None)
            if not entries:
                del self._sets[(kind, owner)]

    async def _renew(self, slots):
        expiry = self.clock() + self.lease_ttl_s
        for slot in slots:
            entries = self._sets.get((slot.kind, slot.owner))
            if entries is not None and slot.member in entries:  # released elsewhere: stays released
                entries[slot.member] = expiry


class ResumeCounter:
    """Resumes of each run on one connection (each replays the run's log): at most `limit` (0: any)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.counts: dict[str, int] = {}

    def count(self, run_id: str, ref: str | None = None) -> None:
        """Count a resume of `run_id`, or raise rate_limited past the limit."""
        if self.limit <= 0:
            return
        done = self.counts.get(run_id, 0)
        if done >= self.limit:
            raise ClientError(
                "rate_limited", f"run {run_id} was resumed {self.limit} times on this connection", ref
            )
        self.counts[run_id] = done + 1
