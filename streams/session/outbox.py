"""A connection's unsent frames: encoded at once, counted in bytes, capped, taken by one writer.

The session puts frames without ever waiting (a slow client must not hold up the channel
layer's messages of its runs, which would queue without bound in the layer instead); one
writer (the WebSocket consumer's writer task, or the SSE response's generator) takes them
out and awaits the transport. What is taken counts as unsent until the transport's send has
returned, so a send that blocks (uvicorn's websockets protocol awaits the socket) keeps the
count up. Past `max_bytes` unsent the client reads too slowly: what is queued is dropped and
`on_overflow` runs (the session detaches, the transport closes: WebSocket 4408).

daphne's ASGI send never waits (Twisted buffers whatever is written), so under daphne this
count stays near zero and the socket's buffer grows instead: docs/deployment.md.
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from ..protocol import Frame

T = TypeVar("T", str, bytes)

# Close code for a client whose unsent data passed the cap (PROTOCOL.md v2).
SLOW_READER = 4408
# Close code for a server going away (shutdown).
GOING_AWAY = 1001
# Close code for a connection ended by a bug on the server.
INTERNAL_ERROR = 1011


def size_of(data: str | bytes) -> int:
    """UTF-8 bytes of `data` (isascii() is O(1) in CPython: only non-ASCII text is encoded)."""
    if isinstance(data, bytes) or data.isascii():
        return len(data)
    return len(data.encode())


class Outbox(Generic[T]):
    """What one connection has yet to send, and how it ends (a close code, or overflow)."""

    def __init__(self, encode: Callable[[Frame], T], *, max_bytes: int = 0):
        self._encode = encode
        self.max_bytes = max_bytes  # 0: no cap
        self.unsent = 0
        self.closed = False  # nothing more is queued
        self.overflowed = False
        self.close_code: int | None = None  # how the writer closes the transport after the last item
        self.on_overflow: list[Callable[[int], None]] = []  # called with the bytes dropped
        self.last_put = time.monotonic()  # when something was last queued (SSE heartbeats)
        self._items: deque[T] = deque()
        self._wake = asyncio.Event()

    async def send(self, frame: Frame) -> None:
        """The session's send: encode and queue; never waits."""
        self.send_now(frame)

    def send_now(self, frame: Frame) -> None:
        """`send` for synchronous callers (a run's frames handed over in-process)."""
        self.put(self._encode(frame))

    def put(self, data: T) -> None:
        """Queue encoded data (dropped once closed); past the cap, overflow."""
        if self.closed:
            return
        self._items.append(data)
        self.last_put = time.monotonic()
        self.unsent += size_of(data)
        self._wake.set()
        if self.max_bytes and self.unsent > self.max_bytes:
            self._overflow()

    def finish(self, code: int | None = None) -> None:
        """Queue nothing more: the writer sends what is queued, then closes the transport with `code`."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self._wake.set()

    def _overflow(self) -> None:
        """The client reads too slowly: drop what waits, end the connection."""
        queued = self.unsent
        self.closed = self.overflowed = True
        self.close_code = SLOW_READER
        self._items.clear()
        self.unsent = 0
        self._wake.set()
        for callback in self.on_overflow:
            callback(queued)

    async def next(self, join: bool = False) -> T | None:
        """The next item (`join`: everything queued, as one), or None once finished and empty.

        The caller calls sent(item) once the transport's send has returned.
        """
        while not self._items:
            if self.closed:
                return None
            self._wake.clear()
            await self._wake.wait()
        if not join or len(self._items) == 1:
            return self._items.popleft()
        items = list(self._items)
        self._items.clear()
        return items[0][:0].join(items)

    def sent(self, data: T) -> None:
        """The transport took `data`."""
        if not self.overflowed:
            self.unsent = max(self.unsent - size_of(data), 0)
