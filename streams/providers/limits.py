"""A cap on one provider's requests in flight: the rest queue (in arrival order) instead of being sent.

An upstream with N slots (llama.cpp's llama-server with --parallel N) queues the request
beyond them, which then looks started while it produces nothing, and some single-slot servers
(llama-cpp-python's by default) cancel the answer in progress instead; queueing here keeps
every answer whole and every started task working. The cap holds per event loop, so per
process: N server processes may have N x limit requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from contextlib import AbstractAsyncContextManager


class InFlightCap:
    """At most `limit` requests in flight per event loop (None or 0: no cap)."""

    def __init__(self, limit: int | None):
        """No semaphore yet: each loop gets its own on first use (asyncio primitives are loop-bound)."""
        self.limit = int(limit) if limit else None
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def slot(self) -> AbstractAsyncContextManager:
        """`async with cap.slot():` waits for a free slot and frees it on exit, cancellation included."""
        if self.limit is None:
            return contextlib.nullcontext()
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.limit)
        return semaphore
