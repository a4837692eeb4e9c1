"""Draining this process before it stops: refuse new runs, let runs in flight finish, end the
rest as run.failed (shutdown), and close every connection once its client has its runs' ends.

The transports' sessions register here (those with an outbox); the servers' hooks that call
drain() are in streams/serving.py (daphne) and streams/serve.py (uvicorn).
"""

import asyncio
import logging
import weakref

from ..protocol import SHUTDOWN
from ..runs.host import current_host
from .outbox import GOING_AWAY

logger = logging.getLogger(__name__)

# How long the runs ended at the drain's end may take to publish their last frames, and
# how long a connection then has to relay them (they travel through the channel layer)
# and to close.
END_TIMEOUT_S = 5.0
LINGER_S = 2.0
POLL_S = 0.05

_sessions: weakref.WeakSet = weakref.WeakSet()
_draining = False  # no new runs
_drain_started = False
_drained: asyncio.Event | None = None  # set once the drain is over


def register(session) -> None:
    """A connection's session, to be finished when the process drains."""
    _sessions.add(session)


def unregister(session) -> None:
    """The connection is over."""
    _sessions.discard(session)


def draining() -> bool:
    """Whether this process is draining: no new runs."""
    return _draining


def begin() -> None:
    """Refuse new runs from now on (synchronous: a server's shutdown hook calls it first)."""
    global _draining, _drained
    if not _draining:
        _draining = True
        _drained = asyncio.Event()


async def wait_drained() -> None:
    """Until the drain is over (at once when none began)."""
    if _drained is not None:
        await _drained.wait()


def reset() -> None:
    """Forget the drain (tests run several in one process)."""
    global _draining, _drain_started, _drained
    _draining = _drain_started = False
    _drained = None
    _sessions.clear()


def _finish_idle() -> None:
    """Close every connection that watches no run any more (1001: going away)."""
    for session in list(_sessions):
        if not session.watching and session.outbox is not None:
            session.outbox.finish(GOING_AWAY)


async def _until(done, timeout_s: float) -> bool:
    """Poll `done()` (finishing idle connections meanwhile) until it is true or time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        _finish_idle()
        if done():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)


async def drain(drain_s: float) -> None:
    """Drain this event loop's runs and connections (see the module docstring); once."""
    global _drain_started
    if _drain_started:
        await wait_drained()
        return
    _drain_started = True
    begin()
    try:
        await _drain(drain_s)
    finally:
        _drained.set()


async def _drain(drain_s: float) -> None:
    host = current_host()
    runs = host.runs if host is not None else {}
    logger.info(
        "draining: %d runs in flight, %d connections; up to %.0f s", len(runs), len(_sessions), drain_s
    )
    if not await _until(lambda: not runs, drain_s):
        logger.warning("draining: ending %d runs that did not finish in time: %s", len(runs), list(runs))
        host.end_runs(SHUTDOWN, "the server shut down before the run finished; start it again")
        await _until(lambda: not runs, END_TIMEOUT_S)
    # Runs hosted elsewhere keep their watchers here for at most this long.
    await _until(lambda: not any(s.watching for s in _sessions), LINGER_S)
    for session in list(_sessions):
        if session.outbox is not None:
            session.outbox.finish(GOING_AWAY)
    if not await _until(lambda: not _sessions, LINGER_S):
        logger.warning("draining: %d connections did not close in time", len(_sessions))
    logger.info("drained")
