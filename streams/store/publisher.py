"""Publishing a run: its ordered frames into the log and to the run's group, progress to the group.

With the pub/sub layer, when the group's shard is the run log's node (always, with one
node), the log append and the layer's group message (a PUBLISH of the layer's own
serialization to the layer's own channel) go out in **one pipeline, one round trip**, batched
with other runs' (store/batch.py), without the layer's per-process publish lock. Otherwise
(core layer, another shard, no Redis) the two go out concurrently through the log and the
layer. Either way both are done before the next send, so a frame a consumer finds missing is
always already in the log.

**A Redis outage costs no run.** When a send fails with a Redis or OS error, the publisher
keeps the run going without making its sender wait: it holds this batch and every later one
(the run's frames are bounded by its log cap) while a task retries with backoff for up to
STREAMS["LAYER_OUTAGE_S"]. The run's tasks go on streaming, and the clients of this process,
which get the frames from the host before they are published, go on reading live. When Redis
answers again (the same server, a restarted empty one, or a promoted replica that missed the
last writes), the log's last seq is read, the run's metadata and its host's beat are written
back if they are gone, and every frame the log lacks is re-appended with its own seq as entry
id (so a retried append cannot duplicate) before the held frames are published. Clients of
other instances fill what they missed from the log. The run's final frame waits for the log,
and an outage longer than the window raises: the host ends the run `layer_unavailable`.
"""

import asyncio
import logging

from django.conf import settings

from .. import compat
from ..protocol import END_TYPES, Frame
from . import LAYER_ERRORS
from .runlog import RedisRunLog, control_group, get_run_log, run_group

__all__ = ["RunPublisher", "control_group", "run_group"]

logger = logging.getLogger(__name__)

# Renewing the log's expiry on every send would double the commands of a live token: it is
# renewed at the start, at the end, and every this fraction of the TTL.
TTL_RENEW_FRACTION = 0.1
# Backoff between attempts while Redis is unreachable: first and longest pause (seconds).
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0


class RunPublisher:
    """The publishing side of one run (used by its one sender, so never concurrently)."""

    def __init__(self, run_id: str, layer, meta: dict | None = None):
        self.run_id = run_id
        self.layer = layer
        self.log = get_run_log()
        self.group = run_group(run_id)
        # What re-creates the run's metadata after Redis lost it (an empty restart).
        self.meta = meta
        # Every frame of the run so far, in seq order (the host hands over its pump's list):
        # what the log may lack after an outage. Without it only the failed batch is re-sent.
        self.history: list[Frame] | None = None
        self.direct = self._direct_channel()
        self._ttl_s = settings.STREAMS["LOG_TTL_S"]
        self._outage_s = settings.STREAMS["LAYER_OUTAGE_S"]
        self._renewed_at = -float("inf")
        # While Redis is unreachable: the frames not yet published, and the task that retries.
        self._held: list[Frame] = []
        self._outage: asyncio.Task | None = None

    def _direct_channel(self) -> str | None:
        """The pub/sub channel to PUBLISH to in the log's pipeline, when the group lives on the log's node."""
        if not isinstance(self.log, RedisRunLog):
            return None
        found = compat.pubsub_group_channel(self.layer, self.group)
        if found is None:
            return None
        host, channel = found
        return channel if self.log.topology.same_node(self.log.node(self.run_id), host) else None

    async def frames(self, frames: list[Frame]) -> None:
        """Log the frames and send them to the run's group; during an outage, hold them (see above)."""
        now = asyncio.get_running_loop().time()
        end = frames[-1]["type"] in END_TYPES
        renew = end or now - self._renewed_at > self._ttl_s * TTL_RENEW_FRACTION
        if renew:
            self._renewed_at = now
        if self._outage is None:
            try:
                await self._send(frames, renew)
                return
            except LAYER_ERRORS as exc:
                logger.warning(
                    "run %s: Redis unavailable (%s); holding its frames, retrying for up to %.0f s",
                    self.run_id,
                    exc,
                    self._outage_s,
                    extra={"run_id": self.run_id},
                )
                self._outage = asyncio.create_task(self._ride_out(exc), name=f"outage:{self.run_id}")
        elif self._outage.done():
            self._outage.result()  # the window ran out: raise its error
        self._held.extend(frames)
        if end:
            # The run ends only once its log is whole (or the window has run out).
            outage = self._outage
            if outage is not None:
                await outage

    def stop(self) -> None:
        """The run is over: stop retrying (its error, if any, was or will never be reported)."""
        if self._outage is not None:
            if self._outage.done() and not self._outage.cancelled():
                self._outage.exception()  # retrieved: the host already ended the run
            self._outage.cancel()

    async def _send(self, frames: list[Frame], renew: bool) -> None:
        """One attempt: append and publish."""
        if not isinstance(self.log, RedisRunLog):  # memory: no commands to batch
            await asyncio.gather(
                self.log.append(self.run_id, frames, refresh_ttl=renew),
                self.layer.group_send(self.group, {"type": "run.frames", "frames": frames}),
            )
            return
        await self._write(self.log.append_commands(self.run_id, frames, refresh_ttl=renew), frames)

    async def _write(self, commands: list, frames: list[Frame]) -> None:
        """Run `commands` on the run's node and publish `frames`: in one pipeline when the group
        lives there, else concurrently through the layer."""
        message = {"type": "run.frames", "frames": frames}
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, message)
            await self.log.execute(self.run_id, [*commands, ("PUBLISH", self.direct, payload)])
        else:
            await asyncio.gather(
                self.log.execute(self.run_id, commands), self.layer.group_send(self.group, message)
            )

    async def _ride_out(self, error: BaseException) -> None:
        """Retry with backoff until Redis answers (then repair, publish what is held) or the window ends."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause = RETRY_FIRST_S
        while True:
            left = started + self._outage_s - loop.time()
            if left <= 0:
                raise error
            await asyncio.sleep(min(pause, left))
            batch, self._held = self._held, []
            try:
                appended = await self._repair(batch)
            except LAYER_ERRORS as exc:
                self._held[:0] = batch
                error, pause = exc, min(pause * 2, RETRY_MAX_S)
                continue
            if self._held:  # frames arrived during the repair: publish them too, at once
                pause = 0.0
                continue
            self._outage = None
            logger.warning(
                "run %s: Redis answers again after %.1f s; re-appended %d frames the log lacked",
                self.run_id,
                loop.time() - started,
                appended,
                extra={"run_id": self.run_id},
            )
            return

    async def _repair(self, frames: list[Frame]) -> int:
        """Bring the log up to date (metadata, beat, missing frames), then publish `frames`."""
        if not isinstance(self.log, RedisRunLog):
            await self._send(frames, True)
            return 0
        last = await self.log.last_seq(self.run_id)
        # The log may end anywhere before the batch: an emptied Redis, a promoted replica
        # that missed writes, or a failed pipeline that was applied after all.
        by_seq = {f["seq"]: f for f in (*(self.history or ()), *frames) if f["seq"] > last}
        missing = [by_seq[seq] for seq in sorted(by_seq)]
        restore = self.log.create_commands(self.run_id, self.meta, only_new=True) if self.meta else []
        restore += self.log.append_commands(self.run_id, missing)
        await self._write(restore, frames)
        return len(missing)

    async def progress(self, frame: Frame) -> None:
        """Send an unordered run.progress frame to the run's group (not logged; skipped during an outage)."""
        if self._outage is not None:
            return
        message = {"type": "run.progress", "frame": frame}
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, message)
            await self.log.execute(self.run_id, [("PUBLISH", self.direct, payload)])
        else:
            await self.layer.group_send(self.group, message)
