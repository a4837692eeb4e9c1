"""Publishing a run: its ordered frames into the log and to the run's group, progress to the group.

With the pub/sub layer on the run log's own Redis, the log append and the layer's group
message (a PUBLISH of the layer's own serialization to the layer's own channel) go out in
**one pipeline, one round trip**, batched with other runs' (store/batch.py), without the
layer's per-process publish lock. Otherwise (core layer, several Redis hosts, no Redis) the
two go out concurrently through the log and the layer. Either way both are done before the
next send, so a frame a consumer finds missing is always already in the log.
"""

import asyncio

from django.conf import settings

from .. import compat
from ..protocol import END_TYPES, Frame
from .runlog import RedisRunLog, get_run_log

# Renewing the log's expiry on every send would double the commands of a live token: it is
# renewed at the start, at the end, and every this fraction of the TTL.
TTL_RENEW_FRACTION = 0.1


def run_group(run_id: str) -> str:
    """The channel-layer group that carries a run's frames."""
    return f"run.{run_id}"


def control_group(run_id: str) -> str:
    """The channel-layer group that carries cancel/attach/detach for a run to its host."""
    return f"runctl.{run_id}"


class RunPublisher:
    """The publishing side of one run (used by its one sender, so never concurrently)."""

    def __init__(self, run_id: str, layer):
        self.run_id = run_id
        self.layer = layer
        self.log = get_run_log()
        self.group = run_group(run_id)
        # The direct path needs the Redis run log too (the in-memory log has no Redis).
        redis_log = isinstance(self.log, RedisRunLog)
        self.direct = (
            compat.pubsub_group_channel(layer, self.group, settings.REDIS_URL) if redis_log else None
        )
        self._ttl_s = settings.STREAMS["LOG_TTL_S"]
        self._renewed_at = -float("inf")

    async def frames(self, frames: list[Frame]) -> None:
        """Log the frames and send them to the run's group."""
        now = asyncio.get_running_loop().time()
        renew = frames[-1]["type"] in END_TYPES or now - self._renewed_at > self._ttl_s * TTL_RENEW_FRACTION
        if renew:
            self._renewed_at = now
        message = {"type": "run.frames", "frames": frames}
        if self.direct is not None:
            payload = compat.pubsub_serialize(self.layer, message)
            commands = self.log.append_commands(self.run_id, frames, refresh_ttl=renew)
            await self.log.execute([*commands, ("PUBLISH", self.direct, payload)])
        else:
            await asyncio.gather(
                self.log.append(self.run_id, frames, refresh_ttl=renew),
                self.layer.group_send(self.group, message),
            )

    async def progress(self, frame: Frame) -> None:
        """Send an unordered run.progress frame to the run's group (not logged)."""
        message = {"type": "run.progress", "frame": frame}
        if self.direct is not None:
            await self.log.execute([("PUBLISH", self.direct, compat.pubsub_serialize(self.layer, message))])
        else:
            await self.layer.group_send(self.group, message)
