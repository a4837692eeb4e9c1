"""The app as the servers run it: a graceful shutdown under daphne and uvicorn.

On SIGTERM the process drains (streams/session/shutdown.py: no new runs, runs in flight get
STREAMS_DRAIN_S, the rest end as run.failed `shutdown`, sockets close with 1001), then closes
its provider clients and its run host.

- daphne: Twisted fires the reactor's "before shutdown" triggers and waits for the Deferreds
  they return; ours returns the drain. daphne's own trigger cancels every application at
  once in the same phase, so `ServedApp` holds that cancel off until the drain is over.
- uvicorn: its shutdown closes every WebSocket with 1012 before the lifespan shutdown, so
  `python -m streams.serve` (streams/serve.py) drains first; a plain `uvicorn` only gets
  the lifespan part (close providers and host after the connections are gone).
"""

import asyncio
import logging
import sys

from django.conf import settings

from . import compat
from .providers import aclose_all
from .runs.host import close_host
from .session import shutdown

logger = logging.getLogger(__name__)

_done: asyncio.Event | None = None


async def shutdown_app() -> None:
    """Drain, then close the provider clients and this loop's run host (once; later calls wait)."""
    global _done
    if _done is not None:
        await _done.wait()
        return
    _done = asyncio.Event()
    try:
        await shutdown.drain(settings.STREAMS["DRAIN_S"])
        await aclose_all()
        await close_host()
    except Exception:
        logger.exception("shutdown failed")
    finally:
        _done.set()


def reset() -> None:
    """Forget a shutdown (tests run several in one process)."""
    global _done
    _done = None
    shutdown.reset()


def _running_reactor():
    """The Twisted reactor if it is what serves this process (daphne), else None.

    daphne installs its asyncio reactor on import, and the app imports daphne (INSTALLED_APPS)
    under any server: only a running reactor means daphne serves us.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    return reactor if reactor is not None and getattr(reactor, "running", False) else None


class ServedApp:
    """The ASGI app with a lifespan handler and, under daphne, the drain on SIGTERM."""

    def __init__(self, app):
        self.app = app
        self._trigger_installed = False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if _running_reactor() is None:
            return await self.app(scope, receive, send)
        if not self._trigger_installed:
            self._install_trigger()
        return await self._held(scope, receive, send)

    def _install_trigger(self) -> None:
        """Make Twisted's shutdown wait for the drain."""
        from twisted.internet import defer

        compat.daphne_close_going_away()

        def before_shutdown():
            logger.info("reactor shutdown (daphne): draining first")
            # At once: daphne's own trigger (before or after this one) has scheduled a cancel
            # of every application, which _held() must find the drain begun when it lands.
            shutdown.begin()
            return defer.Deferred.fromFuture(asyncio.ensure_future(shutdown_app()))

        _running_reactor().addSystemEventTrigger("before", "shutdown", before_shutdown)
        self._trigger_installed = True

    async def _held(self, scope, receive, send):
        """Run the app in its own task, so that daphne's cancel at shutdown waits for the drain."""
        task = asyncio.ensure_future(self.app(scope, receive, send))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # The cancel lands after every "before shutdown" trigger was called, so the
            # drain has begun if this is the shutdown.
            if task.done() or not shutdown.draining():
                task.cancel()
                raise
        drained = asyncio.ensure_future(shutdown.wait_drained())
        await asyncio.wait({task, drained}, return_when=asyncio.FIRST_COMPLETED)
        drained.cancel()
        if not task.done():  # the drain is over and this app still runs: now it goes
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _lifespan(self, receive, send) -> None:
        """ASGI lifespan (uvicorn): nothing to start; at shutdown, drain if nobody did, then close."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown_app()
                await send({"type": "lifespan.shutdown.complete"})
                return
