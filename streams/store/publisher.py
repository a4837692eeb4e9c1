"""Publishing a run: its ordered frames into the log and to the run's group, progress to the group.

With the pub/sub layer, when the group's shard is the run log's node (always, with one
node), the log append and the layer's group message (a PUBLISH of the layer's own
serialization to the layer's own channel) go out in **one pipeline, one round trip**, batched
with other runs' (store/batch.py), without the layer's per-process publish lock. Otherwise
(core layer, another shard, no Redis) the two go out concurrently through the log and the
layer. Either way both are done before the next send, so a frame a consumer finds missing is
always already in the log.

**A Redis outage costs no run.** When a send fails with a Redis or OS error, the publisher
keeps the run going: the pump's sender waits here while the run's tasks go on streaming into
the pump (bounded by the task and log caps), and the send is retried with backoff for up to
STREAMS["LAYER_OUTAGE_S"]. When Redis answers again (the same server, a restarted empty one,
or a promoted replica that missed the last writes), the log's last seq is read, the run's
metadata and its host's beat are written back if they are gone, and every frame the log
lacks is re-appended with its own seq as entry id (so a retried append cannot duplicate)
before the batch is published. Clients fill what the pub/sub layer lost meanwhile from the
log. Only an outage longer than the window raises, and the host ends the run
`layer_unavailable`.
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
        """Log the frames and send them to the run's group, through a Redis outage if need be."""
        now = asyncio.get_running_loop().time()
        renew = frames[-1]["type"] in END_TYPES or now - self._renewed_at > self._ttl_s * TTL_RENEW_FRACTION
        if renew:
            self._renewed_at = now
        try:
            await self._send(frames, renew)
        except LAYER_ERRORS as exc:
            await self._ride_out(frames, exc)

    async def _send(self, frames: list[Frame], renew: bool) -> None:
        """One attempt: append and publish."""
        message = {"type": "run.frames", "frames": frames}
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, message)
            commands = self.log.append_commands(self.run_id, frames, refresh_ttl=renew)
            await self.log.execute(self.run_id, [*commands, ("PUBLISH", self.direct, payload)])
            return
        await asyncio.gather(
            self.log.append(self.run_id, frames, refresh_ttl=renew),
            self.layer.group_send(self.group, message),
        )

    async def _ride_out(self, frames: list[Frame], error: BaseException) -> None:
        """Redis failed a send: retry with backoff until it answers (then repair) or the window ends."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        logger.warning(
            "run %s: Redis unavailable (%s); holding its frames and retrying for up to %.0f s",
            self.run_id,
            error,
            self._outage_s,
            extra={"run_id": self.run_id},
        )
        pause = RETRY_FIRST_S
        while True:
            left = started + self._outage_s - loop.time()
            if left <= 0:
                raise error
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, RETRY_MAX_S)
            try:
                appended = await self._repair(frames)
            except LAYER_ERRORS as exc:
                error = exc
                continue
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
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, {"type": "run.frames", "frames": frames})
            await self.log.execute(self.run_id, [*restore, ("PUBLISH", self.direct, payload)])
        else:
            await self.log.execute(self.run_id, restore)
            await self.layer.group_send(self.group, {"type": "run.frames", "frames": frames})
        return len(missing)

    async def progress(self, frame: Frame) -> None:
        """Send an unordered run.progress frame to the run's group (not logged)."""
        message = {"type": "run.progress", "frame": frame}
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, message)
            await self.log.execute(self.run_id, [("PUBLISH", self.direct, payload)])
        else:
            await self.layer.group_send(self.group, message)
