"""The WebSocket consumer: a thin adapter from JSON text frames to the session core."""

import asyncio
import json
import logging

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from .protocol import (
    INTERNAL,
    LAYER_UNAVAILABLE,
    PING,
    PONG,
    RUN_CANCEL,
    RUN_RESUME,
    RUN_START,
    ClientError,
)
from .records import metrics
from .session import shutdown
from .session.core import QUIET_CHECK_S, RunSession
from .session.inputs import parse_client_frame
from .session.limits import TokenBucket
from .session.outbox import GOING_AWAY, SLOW_READER, Outbox
from .store import LAYER_ERRORS

logger = logging.getLogger(__name__)


class StreamConsumer(AsyncWebsocketConsumer):
    """One browser tab: its client frames go to its RunSession, the session's frames go out."""

    session: RunSession | None = None
    outbox: Outbox | None = None
    writer: asyncio.Task | None = None
    watchdog: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        """Run the consumer; however it ends (disconnect, a crash, the server cancelling it),
        its runs are detached and its tasks stopped."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._end()

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
        client = self.scope["streams_client"]
        if shutdown.draining():
            await self.accept()
            await self.close(code=GOING_AWAY)
            return
        self.outbox = Outbox(_encode, max_bytes=self.cfg["MAX_UNSENT_BYTES"])
        self.session = RunSession(
            client.owner_for(self.channel_name),
            self.outbox.send,
            layer=self.channel_layer,
            channel=self.channel_name,
            max_runs=self.cfg["MAX_RUNS_PER_CONNECTION"],
            quota_owner=client.quota_owner,
            max_resumes=self.cfg["MAX_RESUMES_PER_RUN"],
            on_watch=self._ensure_watchdog,
            outbox=self.outbox,
        )
        self.outbox.on_overflow.append(self._slow_reader)
        loop = asyncio.get_running_loop()
        self.bucket = TokenBucket(self.cfg["RATE_LIMIT_PER_S"], 2 * self.cfg["RATE_LIMIT_PER_S"], loop.time())
        await self.accept()
        self.writer = asyncio.create_task(self._write())

    async def disconnect(self, code):
        """Stop watching every run; the host cancels those nobody watches any more (after the grace)."""
        await self._end()

    async def _end(self) -> None:
        """Stop this connection's tasks and detach its runs (idempotent)."""
        for task in (self.watchdog, self.writer):
            if task is not None:
                task.cancel()
        if self.session is not None:
            await self.session.close()

    async def _write(self) -> None:
        """The one writer: send what the outbox holds, in order, then close as it says."""
        outbox = self.outbox
        while (data := await outbox.next()) is not None:
            # Under uvicorn's websockets protocol this waits while the socket is full.
            await self.send(text_data=data)
            outbox.sent(data)
        if outbox.close_code is not None:
            await self.close(code=outbox.close_code)

    def _slow_reader(self, dropped: int) -> None:
        """The outbox overflowed: stop writing, close with 4408 (the session detaches itself)."""
        if self.writer is not None:
            self.writer.cancel()
        self._closer = asyncio.ensure_future(self.close(code=SLOW_READER))

    async def receive(self, text_data=None, bytes_data=None):
        """Handle one client frame; whatever happens it gets an answer and the connection stays open."""
        if self.session is None or self.session.closed:
            return  # the connection is ending: nothing more is started or answered
        ref = None
        kind = None
        try:
            if not self.bucket.allow(asyncio.get_running_loop().time()):
                raise ClientError("rate_limited", "too many frames; slow down")
            frame = parse_client_frame(
                text_data,
                max_bytes=self.cfg["MAX_FRAME_BYTES"],
                max_input_chars=self.cfg["MAX_INPUT_CHARS"],
                max_ping_bytes=self.cfg["MAX_PING_BYTES"],
            )
            ref, kind = frame.get("ref"), frame.get("type")
            await self._handle_frame(frame)
        except ClientError as exc:
            if exc.ref is None and ref is not None:
                exc.ref = ref
            metrics.error(exc.code)
            await self.send_json(exc.frame())
        except LAYER_ERRORS as exc:
            # Redis is down: say so and keep the socket; the next frame may find it back.
            logger.warning("client frame failed, layer unavailable: %s", exc)
            error = ClientError(LAYER_UNAVAILABLE, "the message layer is unavailable; retry shortly", ref)
            await self.send_json(error.frame())
        except Exception:
            # A bug: logged once with its traceback, answered, and the connection goes on.
            logger.exception("client frame %s failed unexpectedly", kind or "(unparsed)")
            error = ClientError(INTERNAL, "the frame could not be handled; see the server log", ref)
            await self.send_json(error.frame())

    async def _handle_frame(self, frame: dict) -> None:
        """One checked client frame."""
        kind = frame["type"]
        if kind == RUN_START:
            await self.session.start(
                frame["pipeline"],
                frame["input"],
                frame.get("ref"),
                frame.get("conversation"),
                replaces=frame.get("replaces"),
                after=frame.get("after"),
            )
        elif kind == RUN_CANCEL:
            await self.session.cancel(frame["run_id"])
        elif kind == RUN_RESUME:
            await self.session.resume(frame["run_id"], frame["after_seq"])
        elif kind == PING:
            await self.send_json({**frame, "type": PONG})

    async def send_json(self, data: dict) -> None:
        """Queue one JSON frame for the writer."""
        await self.outbox.send(data)

    # --- channel-layer messages: each goes to the session, in this consumer's one queue ---

    async def run_frames(self, message: dict) -> None:
        """Frames of a run published by its host."""
        if self.session is not None:
            await self.session.handle(message)

    async def run_progress(self, message: dict) -> None:
        """Progress of a run's background tasks (unordered)."""
        if self.session is not None:
            await self.session.handle(message)

    async def run_check(self, message: dict) -> None:
        """The watchdog's poke: check the runs that went quiet."""
        if self.session is not None:
            await self.session.check_quiet(QUIET_CHECK_S)

    def _ensure_watchdog(self) -> None:
        """Make sure a quiet run gets checked while runs are watched."""
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self._watchdog())

    async def _watchdog(self) -> None:
        """While runs are watched, poke this consumer to check the ones that went quiet."""
        while self.session.watching:
            await asyncio.sleep(QUIET_CHECK_S)
            if self.session.quiet(QUIET_CHECK_S):
                try:
                    # Through the consumer's own queue, so the check never races a frame.
                    await self.channel_layer.send(self.channel_name, {"type": "run.check"})
                except LAYER_ERRORS as exc:  # Redis down: try again next time
                    logger.warning("quiet-run check could not be queued: %s", exc)


def _encode(frame: dict) -> str:
    """A frame as the text of one WebSocket message."""
    return json.dumps(frame, ensure_ascii=False)
