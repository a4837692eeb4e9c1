"""The ordering gate: a pure state machine from task events (any interleaving) to ordered frames."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Frame = dict[str, Any]

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
    """What the gate knows of one task."""

    held: list[TaskEvent] = field(default_factory=list)
    started: bool = False
    finished: bool = False


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

    def is_live(self, task: str) -> bool:
        """Whether an event of `task` would be sent at once."""
        return task == self.head

    def feed(self, event: TaskEvent) -> list[Frame]:
        """Take one event; return the frames that are now deliverable, in order."""
        lane = self._lanes.get(event.task)
        if lane is None:
            raise GateError(f"unknown task {event.task!r}")
        if self.ended:
            raise GateError("the run has ended")
        self._check(lane, event)
        if event.task != self.head:
            lane.held.append(event)
            return []
        out: list[Frame] = []
        self._emit(event, out)
        self._advance(out)
        return out

    def feed_all(self, events: Iterable[TaskEvent]) -> list[Frame]:
        """Feed several events; return all frames they release."""
        out: list[Frame] = []
        for event in events:
            out.extend(self.feed(event))
        return out

    def cancel(self) -> list[Frame]:
        """End the run early: close every unfinished task as failed("cancelled"), then run.cancelled."""
        if self.ended:
            return []
        out: list[Frame] = []
        for key in self.order[self._head :]:
            lane = self._lanes[key]
            lane.held.clear()  # held text of a cancelled run is dropped, never half-flushed
            if not lane.started:
                self._frame(out, "task.started", task=key)
            if not lane.finished:
                error = {"code": "cancelled", "message": "the run was cancelled"}
                self._frame(out, "task.failed", task=key, error=error)
        self._head = len(self.order)
        self._end(out, "run.cancelled")
        return out

    def abort(self, code: str, message: str) -> list[Frame]:
        """End the run early because of an infrastructure failure: fail what is open, then run.failed."""
        if self.ended:
            return []
        out: list[Frame] = []
        error = {"code": code, "message": message}
        for key in self.order[self._head :]:
            lane = self._lanes[key]
            lane.held.clear()
            if not lane.started:
                self._frame(out, "task.started", task=key)
            if not lane.finished:
                self.failed.append(key)
                self._frame(out, "task.failed", task=key, error=error)
        self._head = len(self.order)
        self._end(out, "run.failed", error=error)
        return out

    def _check(self, lane: _Lane, event: TaskEvent) -> None:
        """Refuse events that break the task's own started / delta* / end order."""
        # The gate tracks order at arrival, held or not, so the check is the same for both.
        arrived_started = lane.started or any(e.kind == STARTED for e in lane.held)
        arrived_finished = lane.finished or any(e.kind in FINISHES for e in lane.held)
        if event.kind == STARTED:
            if arrived_started:
                raise GateError(f"task {event.task!r} started twice")
        elif event.kind in (DELTA, *FINISHES):
            if not arrived_started:
                raise GateError(f"task {event.task!r}: {event.kind} before started")
            if arrived_finished:
                raise GateError(f"task {event.task!r}: {event.kind} after its end")
        else:
            raise GateError(f"unknown event kind {event.kind!r}")

    def _emit(self, event: TaskEvent, out: list[Frame]) -> None:
        """Turn one event of the head task into its frame."""
        lane = self._lanes[event.task]
        if event.kind == STARTED:
            lane.started = True
            self._frame(out, "task.started", task=event.task)
        elif event.kind == DELTA:
            if event.text:
                self._frame(out, "task.delta", task=event.task, text=event.text)
        elif event.kind == COMPLETED:
            lane.finished = True
            self._frame(out, "task.completed", task=event.task, stats=event.stats or {})
        else:
            lane.finished = True
            self.failed.append(event.task)
            self._frame(out, "task.failed", task=event.task, error=event.error or {})

    def _advance(self, out: list[Frame]) -> None:
        """While the head is finished, move to the next task and flush what it holds."""
        while self.head is not None and self._lanes[self.head].finished:
            self._head += 1
            nxt = self.head
            if nxt is None:
                break
            lane = self._lanes[nxt]
            held, lane.held = lane.held, []
            for event in held:
                self._emit(event, out)
        if self.head is None and not self.ended:
            if self.failed:
                error = {"code": "tasks_failed", "message": "failed: " + ", ".join(self.failed)}
                self._end(out, "run.failed", error=error)
            else:
                self._end(out, "run.completed")

    def _end(self, out: list[Frame], kind: str, **fields: Any) -> None:
        """Emit the run's one final frame."""
        self.ended = True
        self._frame(out, kind, **fields)

    def _frame(self, out: list[Frame], kind: str, **fields: Any) -> None:
        """Append one ordered frame with the next seq."""
        self.seq += 1
        out.append({"type": kind, "run_id": self.run_id, "seq": self.seq, **fields})
