"""The WebSocket consumer: checks client frames, hands work to the run host, relays ordered frames."""

import asyncio
import json
import logging
import uuid

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from .access.quotas import ResumeCounter, get_quotas
from .catalog import aload_spec
from .frames import ClientError, TokenBucket, parse_client_frame
from .gate import Frame
from .host import get_host, run_group
from .recovery import end_if_orphaned
from .relay import RunRelay
from .runlog import owned_meta

logger = logging.getLogger(__name__)

# Cleanup on close must not hang on a dead Redis.
CLOSE_TIMEOUT_S = 5.0
# A run quiet for this long gets its log checked: the pub/sub layer can lose a message
# (even the final one) while it reconnects, and no later frame would reveal the gap.
QUIET_CHECK_S = 5.0


class StreamConsumer(AsyncWebsocketConsumer):
    """One browser tab: starts, cancels and resumes runs, and sends their frames in order."""

    async def dispatch(self, message):
        """Call the message's handler without Channels' close_old_connections before it.

        That costs a thread hop per message (per token frame, per client frame), and this
        consumer reaches the database only through database_sync_to_async, which closes
        stale connections in its own thread anyway.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        """As Channels does it (this consumer joins no `groups`), minus the thread hop."""
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def connect(self):
        """Accept the handshake (streams.access.middleware has admitted it and says who it is)."""
        self.cfg = settings.STREAMS
        self.client = self.scope["streams_client"]
        self.owner = self.client.owner_for(self.channel_name)
        self.resumes = ResumeCounter(self.cfg["MAX_RESUMES_PER_RUN"])
        self.watching: dict[str, RunRelay] = {}
        self.started: set[str] = set()  # runs this connection started and that are not over
        self.watchdog: asyncio.Task | None = None
        loop = asyncio.get_running_loop()
        self.bucket = TokenBucket(self.cfg["RATE_LIMIT_PER_S"], 2 * self.cfg["RATE_LIMIT_PER_S"], loop.time())
        await self.accept()

    async def disconnect(self, code):
        """Leave every run's group; runs nobody watches any more are cancelled (after the grace)."""
        if getattr(self, "watchdog", None) is not None:
            self.watchdog.cancel()
        watching = list(getattr(self, "watching", {}))
        if not watching:
            return
        host = get_host()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                for run_id in watching:
                    await self.channel_layer.group_discard(run_group(run_id), self.channel_name)
                    await host.detach(run_id)
                # Nothing of a cancelled run may outlive the connection: wait for local ones.
                await host.settle(watching)
        except Exception:
            logger.warning("cleanup of runs %s on close failed", watching, exc_info=True)

    async def receive(self, text_data=None, bytes_data=None):
        """Handle one client frame; a refused frame gets an error and the connection stays open."""
        ref = None
        try:
            if not self.bucket.allow(asyncio.get_running_loop().time()):
                raise ClientError("rate_limited", "too many frames; slow down")
            frame = parse_client_frame(
                text_data,
                max_bytes=self.cfg["MAX_FRAME_BYTES"],
                max_input_chars=self.cfg["MAX_INPUT_CHARS"],
                max_ping_bytes=self.cfg["MAX_PING_BYTES"],
            )
            ref = frame.get("ref")
            handler = {
                "run.start": self.start_run,
                "run.cancel": self.cancel_run,
                "run.resume": self.resume_run,
                "ping": self.pong,
            }[frame["type"]]
            await handler(frame)
        except ClientError as exc:
            if exc.ref is None and ref is not None:
                exc.ref = ref
            await self.send_json(exc.frame())
        except (RedisError, OSError) as exc:
            # Redis is down: say so and keep the socket; the next frame may find it back.
            logger.warning("client frame failed, layer unavailable: %s", exc)
            error = ClientError("layer_unavailable", "the message layer is unavailable; retry shortly", ref)
            await self.send_json(error.frame())

    async def send_json(self, data: dict) -> None:
        """Send one JSON frame."""
        await self.send(text_data=json.dumps(data, ensure_ascii=False))

    async def pong(self, frame: dict) -> None:
        """Echo a ping."""
        await self.send_json({**frame, "type": "pong"})

    async def start_run(self, frame: dict) -> None:
        """Start a run of a pipeline on the client's input."""
        if len(self.started) >= self.cfg["MAX_RUNS_PER_CONNECTION"]:
            raise ClientError("too_many_runs", "too many runs in flight on this connection")
        spec = await aload_spec(frame["pipeline"])
        if spec is None or not spec.tasks:
            raise ClientError("unknown_pipeline", f"no runnable pipeline {frame['pipeline']!r}")
        run_id = uuid.uuid4().hex
        quota = await get_quotas().start_run(self.client.quota_owner, run_id)
        # Join the group first: no frame of the run may be published before we listen.
        await self.channel_layer.group_add(run_group(run_id), self.channel_name)
        self._watch(RunRelay(run_id, 0, self.send_json))
        self.started.add(run_id)
        await self.send_json(
            {
                "type": "run.accepted",
                "run_id": run_id,
                "pipeline": spec.slug,
                "tasks": [{"key": t.key, "title": t.title} for t in spec.tasks],
                "ref": frame.get("ref"),
            }
        )
        try:
            await get_host().start(
                run_id, spec, frame["input"], self.owner, on_layer_failure=self._layer_failed, quota=quota
            )
        except BaseException:
            # Not started (Redis down, or the socket closing): it must not count as in flight.
            self.watching.pop(run_id, None)
            self.started.discard(run_id)
            quota.release_soon()
            raise

    async def cancel_run(self, frame: dict) -> None:
        """Cancel a run this client owns, on whichever instance hosts it."""
        run_id = frame["run_id"]
        await self._check_owner(run_id)
        await get_host().cancel(run_id)
        if await end_if_orphaned(run_id):  # nobody hosts it any more: end it here
            await self._relay(run_id, None)

    async def resume_run(self, frame: dict) -> None:
        """Re-send the run's frames after `after_seq`, then continue live."""
        run_id, after = frame["run_id"], frame["after_seq"]
        await self._check_owner(run_id)
        self.resumes.count(run_id)
        if run_id not in self.watching:
            await self.channel_layer.group_add(run_group(run_id), self.channel_name)
            await get_host().attach(run_id)
        # Subscribed first, then the log: what is published meanwhile is either in the
        # log or arrives later and is recognised by its seq.
        self._watch(RunRelay(run_id, after, self.send_json))
        await self._relay(run_id, None)

    async def _check_owner(self, run_id: str) -> None:
        """Refuse a run that does not exist or belongs to someone else, with the same answer."""
        if await owned_meta(run_id, self.owner) is None:
            raise ClientError("unknown_run", f"no run {run_id!r}")

    async def run_frames(self, message: dict) -> None:
        """Frames of a run published by its host."""
        frames = message["frames"]
        if frames:
            await self._relay(frames[0]["run_id"], frames)

    async def run_progress(self, message: dict) -> None:
        """Progress of a run's background tasks (unordered)."""
        frame = message["frame"]
        if frame["run_id"] in self.watching:
            await self.send_json(frame)

    async def _relay(self, run_id: str, frames: list[Frame] | None) -> None:
        """Send frames through the run's relay (None: replay the log); forget the run at its end."""
        relay = self.watching.get(run_id)
        if relay is None:
            return
        await (relay.replay() if frames is None else relay.push(frames))
        if relay.ended:
            await self._finished(run_id)

    def _watch(self, relay: RunRelay) -> None:
        """Relay the run to this client, and make sure a quiet run gets checked."""
        self.watching[relay.run_id] = relay
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """While runs are watched, poke this consumer to check the ones that went quiet."""
        while self.watching:
            await asyncio.sleep(QUIET_CHECK_S)
            if any(r.quiet_for() >= QUIET_CHECK_S for r in self.watching.values()):
                try:
                    # Through the consumer's own queue, so the check never races a frame.
                    await self.channel_layer.send(self.channel_name, {"type": "run.check"})
                except (RedisError, OSError) as exc:  # Redis down: try again next time
                    logger.warning("quiet-run check could not be queued: %s", exc)

    async def run_check(self, message: dict) -> None:
        """Send what the log holds beyond the last seq of every quiet run; end runs whose host is gone."""
        for run_id, relay in list(self.watching.items()):
            if relay.quiet_for() >= QUIET_CHECK_S:
                await self._relay(run_id, None)
                if not relay.ended and await end_if_orphaned(run_id):
                    await self._relay(run_id, None)

    async def _finished(self, run_id: str) -> None:
        """The run's final frame was sent: stop listening to it."""
        self.watching.pop(run_id, None)
        self.started.discard(run_id)
        await self.channel_layer.group_discard(run_group(run_id), self.channel_name)

    def _layer_failed(self, frames: list[Frame]) -> None:
        """The layer is down: the host hands the run's frames over directly."""
        if frames:
            task = asyncio.ensure_future(self._send_frames_direct(frames[0]["run_id"], frames))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_frames_direct(self, run_id: str, frames: list[Frame]) -> None:
        """Send what this client has not seen, without touching the layer or the log."""
        relay = self.watching.pop(run_id, None)
        self.started.discard(run_id)
        if relay is not None:
            await relay.push(frames)
