"""Ending runs whose host is gone: replay the log into a fresh gate, then fail what is still open."""

import logging

from ..protocol import HOST_LOST, TASK_COMPLETED, TASK_DELTA, TASK_FAILED, TASK_STARTED, Frame
from ..store.runlog import get_run_log
from .gate import COMPLETED, DELTA, FAILED, STARTED, Gate, GateError, TaskEvent

logger = logging.getLogger(__name__)

_EVENT_KINDS = {
    TASK_STARTED: STARTED,
    TASK_DELTA: DELTA,
    TASK_COMPLETED: COMPLETED,
    TASK_FAILED: FAILED,
}


def events_of(frames: list[Frame]) -> list[TaskEvent]:
    """The task events that produced these ordered frames."""
    return [
        TaskEvent(f["task"], _EVENT_KINDS[f["type"]], f.get("text", ""), f.get("stats"), f.get("error"))
        for f in frames
        if f["type"] in _EVENT_KINDS
    ]


def closing_frames(
    run_id: str, order: list[str], logged: list[Frame], code: str, message: str
) -> list[Frame]:
    """The frames that end a run after `logged`, continuing its seq; [] if it has ended."""
    gate = Gate(run_id, order)
    try:
        # The gate is deterministic: the same events give the same frames and seq again,
        # fed one by one as they were sent (one batch would join consecutive deltas).
        replayed = [frame for event in events_of(logged) for frame in gate.feed(event)]
    except GateError:
        return []  # not a log this gate could have written: leave it alone
    if gate.ended or replayed != logged:
        return []
    return gate.abort(code, message)


async def end_if_orphaned(run_id: str) -> bool:
    """If the run's host stopped beating, end the run in its log; True when this call ended it."""
    log = get_run_log()
    meta = await log.get_meta(run_id)
    if meta is None or await log.host_alive(meta.get("host"), run_id):
        return False
    logged = await log.read(run_id, 0)
    if logged and logged[0]["seq"] != 1:
        return False  # trimmed: the run cannot be replayed, so it cannot be ended cleanly
    message = "the server running this run stopped"
    frames = closing_frames(run_id, meta["tasks"], logged, HOST_LOST, message)
    if not frames:
        return False
    ended = await log.append_after(run_id, logged[-1]["seq"] if logged else 0, frames)
    if ended:
        logger.warning("run %s: its host %s is gone; ended it as failed", run_id, meta.get("host"))
    return ended
