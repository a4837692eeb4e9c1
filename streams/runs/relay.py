"""Relays one run's ordered frames to one client: each seq exactly once, gaps filled from the log."""

import logging
import time
from collections.abc import Awaitable, Callable

from ..protocol import END_TYPES, Frame
from ..store.runlog import get_run_log

logger = logging.getLogger(__name__)

# Frames read from the log at a time by a replay: a resume of a long run never holds its
# whole log, and stops reading once the connection ends (a slow reader's outbox overflowed).
REPLAY_PAGE = 200


class RunRelay:
    """What one client has been sent of one run, and the sending of the rest in order."""

    def __init__(
        self,
        run_id: str,
        after_seq: int,
        send: Callable[[Frame], Awaitable[None]],
        stopped: Callable[[], bool] | None = None,
        send_now: Callable[[Frame], None] | None = None,
    ):
        self.run_id = run_id
        # The send that never waits (an outbox's put), for frames handed over in-process.
        self._send_now = send_now
        self._stopped = stopped or (lambda: False)
        self.last = after_seq
        self.ended = False
        self._send = send
        self.touched = time.monotonic()  # when frames of the run last came in

    def quiet_for(self) -> float:
        """Seconds since frames of the run last came in."""
        return time.monotonic() - self.touched

    async def push(self, frames: list[Frame]) -> None:
        """Send the frames this client has not had, in seq order; stop after the run's end."""
        self.touched = time.monotonic()
        for frame in frames:
            if self.ended:
                return
            seq = frame["seq"]
            if seq <= self.last:
                continue  # already sent (a replay overlapped the live stream)
            if seq > self.last + 1:
                await self._repair(seq)
            await self._deliver(frame)

    def push_now(self, frames: list[Frame]) -> None:
        """Send frames handed over in-process by the run's host, without waiting.

        The host hands over every frame in seq order, so there is no gap to repair here.
        """
        self.touched = time.monotonic()
        for frame in frames:
            if self.ended:
                return
            seq = frame["seq"]
            if seq <= self.last:
                continue
            if seq > self.last + 1:  # a bug: sent on anyway, the client sees the gap and resumes
                logger.error("run %s: frames after %s skipped in-process", self.run_id, self.last)
            self._send_now(frame)
            self._sent(frame)

    async def replay(self) -> None:
        """Send what the run's log holds after the last seq sent, a page at a time."""
        log = get_run_log()
        while not self.ended and not self._stopped():
            frames = await log.read(self.run_id, self.last, limit=REPLAY_PAGE)
            await self.push(frames)
            if len(frames) < REPLAY_PAGE:
                return

    async def _repair(self, upto: int) -> None:
        """A message was lost (pub/sub reconnect) or overtaken: fill seq last+1..upto-1 from the log."""
        for old in await get_run_log().read(self.run_id, self.last, limit=upto - self.last - 1):
            if old["seq"] >= upto:
                break
            await self._deliver(old)
        if self.last + 1 != upto:
            logger.error(
                "run %s: frames %s..%s are missing from the log",
                self.run_id,
                self.last + 1,
                upto - 1,
                extra={"run_id": self.run_id},
            )

    async def _deliver(self, frame: Frame) -> None:
        """Send one frame and remember it."""
        await self._send(frame)
        self._sent(frame)

    def _sent(self, frame: Frame) -> None:
        """Remember that `frame` was sent."""
        self.last = frame["seq"]
        if frame["type"] in END_TYPES:
            self.ended = True
