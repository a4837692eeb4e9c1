"""The ordering gate: a pure state machine from task events (any interleaving) to ordered frames.

The gate is the one place that holds back text: the head task is live, every later task's
events are kept (its text joined) until every task before it has ended, then flushed. Each
call's frames are one batch (one send): consecutive deltas of one task within it are joined
into one frame, so the same events give the same frames however they interleave.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..protocol import (
    CANCELLED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    TASK_COMPLETED,
    TASK_DELTA,
    TASK_FAILED,
    TASK_STARTED,
    TASKS_FAILED,
    Frame,
)

STARTED, DELTA, COMPLETED, FAILED = "started", "delta", "completed", "failed"
FINISHES = (COMPLETED, FAILED)


@dataclass(frozen=True)
class TaskEvent:
    """One event of one task: started, delta (text), completed (stats) or failed (error)."""

    task: str
    kind: str
    text: str = ""
    stats: dict | None = None
    error: dict | None = None


class GateError(ValueError):
    """An event broke a task's own order (e.g. a delta before started, or after the end)."""


@dataclass
class _Lane:
    """What the gate knows of one task: what arrived, what was sent, what is held."""

    arrived_started: bool = False
    arrived_end: bool = False
    sent_started: bool = False
    sent_end: bool = False
    held_text: list[str] = field(default_factory=list)
    held_end: TaskEvent | None = None


# A frame being built: (type, fields); a delta's text is a list of parts until numbered.
_Staged = tuple[str, dict[str, Any]]


class Gate:
    """Sends the head task live, holds the others, flushes them in delivery order."""

    def __init__(self, run_id: str, order: Sequence[str]):
        if len(set(order)) != len(order) or not order:
            raise ValueError("delivery order must be a non-empty list of distinct keys")
        self.run_id = run_id
        self.order = tuple(order)
        self._lanes = {key: _Lane() for key in self.order}
        self._head = 0  # index of the first task whose frames are not all sent
        self.seq = 0
        self.failed: list[str] = []
        self.ended = False

    @property
    def head(self) -> str | None:
        """The task that is live now (None once every task is delivered)."""
        return self.order[self._head] if self._head < len(self.order) else None

    def feed(self, event: TaskEvent) -> list[Frame]:
        """Take one event; return the frames that are now deliverable, in order."""
        return self.feed_all((event,))

    def feed_all(self, events: Iterable[TaskEvent]) -> list[Frame]:
        """Feed several events; return all frames they release, as one batch."""
        out: list[_Staged] = []
        for event in events:
            self._feed(event, out)
        return self._number(out)

    def cancel(self) -> list[Frame]:
        """End the run early: close every unfinished task as failed("cancelled"), then run.cancelled."""
        error = {"code": CANCELLED, "message": "the run was cancelled"}
        return self._end_early(RUN_CANCELLED, error, count_failed=False)

    def abort(self, code: str, message: str) -> list[Frame]:
        """End the run early because of an infrastructure failure: fail what is open, then run.failed."""
        return self._end_early(RUN_FAILED, {"code": code, "message": message}, count_failed=True)

    def _end_early(self, kind: str, error: dict, count_failed: bool) -> list[Frame]:
        """Fail every task not yet ended (held text is dropped, never half-flushed), then end the run."""
        if self.ended:
            return []
        out: list[_Staged] = []
        for key in self.order[self._head :]:
            lane = self._lanes[key]
            lane.held_text.clear()
            lane.held_end = None
            if not lane.sent_started:
                out.append((TASK_STARTED, {"task": key}))
            if not lane.sent_end:
                if count_failed:
                    self.failed.append(key)
                out.append((TASK_FAILED, {"task": key, "error": error}))
        self._head = len(self.order)
        self.ended = True
        out.append((kind, {"error": error} if count_failed else {}))
        return self._number(out)

    def _feed(self, event: TaskEvent, out: list[_Staged]) -> None:
        """Check one event, then send it (head) or hold it."""
        lane = self._lanes.get(event.task)
        if lane is None:
            raise GateError(f"unknown task {event.task!r}")
        if self.ended:
            raise GateError("the run has ended")
        self._check(lane, event)
        if event.task != self.head:
            if event.kind == DELTA:
                if event.text:
                    lane.held_text.append(event.text)
            elif event.kind in FINISHES:
                lane.held_end = event
            return
        self._emit(lane, event, out)
        self._advance(out)

    @staticmethod
    def _check(lane: _Lane, event: TaskEvent) -> None:
        """Refuse events that break the task's own started / delta* / end order."""
        if event.kind == STARTED:
            if lane.arrived_started:
                raise GateError(f"task {event.task!r} started twice")
            lane.arrived_started = True
        elif event.kind in (DELTA, *FINISHES):
            if not lane.arrived_started:
                raise GateError(f"task {event.task!r}: {event.kind} before started")
            if lane.arrived_end:
                raise GateError(f"task {event.task!r}: {event.kind} after its end")
            lane.arrived_end = event.kind in FINISHES
        else:
            raise GateError(f"unknown event kind {event.kind!r}")

    def _emit(self, lane: _Lane, event: TaskEvent, out: list[_Staged]) -> None:
        """Turn one event of the head task into its frame."""
        if event.kind == STARTED:
            lane.sent_started = True
            out.append((TASK_STARTED, {"task": event.task}))
        elif event.kind == DELTA:
            if event.text:
                _delta(out, event.task, [event.text])
        elif event.kind == COMPLETED:
            lane.sent_end = True
            out.append((TASK_COMPLETED, {"task": event.task, "stats": event.stats or {}}))
        else:
            lane.sent_end = True
            self.failed.append(event.task)
            out.append((TASK_FAILED, {"task": event.task, "error": event.error or {}}))

    def _advance(self, out: list[_Staged]) -> None:
        """While the head is finished, move to the next task and flush what it holds."""
        while (head := self.head) is not None and self._lanes[head].sent_end:
            self._head += 1
            nxt = self.head
            if nxt is None:
                break
            lane = self._lanes[nxt]
            if lane.arrived_started:
                self._emit(lane, TaskEvent(nxt, STARTED), out)
            if lane.held_text:
                _delta(out, nxt, lane.held_text)
                lane.held_text = []
            if lane.held_end is not None:
                end, lane.held_end = lane.held_end, None
                self._emit(lane, end, out)
        if self.head is None and not self.ended:
            self.ended = True
            if self.failed:
                error = {"code": TASKS_FAILED, "message": "failed: " + ", ".join(self.failed)}
                out.append((RUN_FAILED, {"error": error}))
            else:
                out.append((RUN_COMPLETED, {}))

    def _number(self, out: list[_Staged]) -> list[Frame]:
        """Give the batch's frames their seq (and deltas their joined text)."""
        frames = []
        for kind, fields in out:
            self.seq += 1
            if kind == TASK_DELTA:
                fields = {"task": fields["task"], "text": "".join(fields["text"])}
            frames.append({"type": kind, "run_id": self.run_id, "seq": self.seq, **fields})
        return frames


def _delta(out: list[_Staged], task: str, parts: list[str]) -> None:
    """Add text to the batch, joined with the previous frame when it is a delta of the same task."""
    if out and out[-1][0] == TASK_DELTA and out[-1][1]["task"] == task:
        out[-1][1]["text"].extend(parts)
    else:
        out.append((TASK_DELTA, {"task": task, "text": list(parts)}))
