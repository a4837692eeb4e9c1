"""The ordering gate: a pure state machine from task events (any interleaving) to ordered frames.

The gate is the one place that holds back text: the head task is live, every later task's
events are kept (its text joined) until every task before it has ended, then flushed. Each
call's frames are one batch (one send): consecutive deltas of one task within it are joined
into one frame, so the same events give the same frames however they interleave.

Two bounds, both applied where frames get their seq so that they stay deterministic: a
delta's text is cut into frames of at most `max_delta_chars` characters, and the frames'
JSON (as the run log stores it) never passes `max_log_bytes`: the frame that would pass it
is not sent, the open tasks fail and the run ends with `too_large` (room for those closing
frames is kept free).
"""

import json
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
    TOO_LARGE,
    Frame,
)

STARTED, DELTA, COMPLETED, FAILED = "started", "delta", "completed", "failed"
# The log budget keeps room for the frames that end a run early, with messages this long.
CLOSING_MESSAGE_CHARS = 200
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

    def __init__(
        self,
        run_id: str,
        order: Sequence[str],
        *,
        max_delta_chars: int | None = None,
        max_log_bytes: int | None = None,
    ):
        if len(set(order)) != len(order) or not order:
            raise ValueError("delivery order must be a non-empty list of distinct keys")
        if max_delta_chars is not None and max_delta_chars < 1:
            raise ValueError("max_delta_chars must be at least 1")
        self.run_id = run_id
        self.order = tuple(order)
        self._lanes = {key: _Lane() for key in self.order}
        self._head = 0  # index of the first task whose frames are not all sent
        self.seq = 0
        self.failed: list[str] = []
        self.ended = False
        self.max_delta_chars = max_delta_chars
        self.max_log_bytes = max_log_bytes
        self.log_bytes = 0  # JSON bytes of every frame numbered so far
        # Tasks whose started / end frame has been numbered (what a cut must still close).
        self._numbered_started: set[str] = set()
        self._numbered_end: set[str] = set()
        self._delta_base: dict[str, int] = {}
        self._budget = None if max_log_bytes is None else max_log_bytes - self._closing_reserve()

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
        # Closing frames always fit: the budget keeps room for them.
        return self._number(out, closing=True)

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

    def _number(self, out: list[_Staged], closing: bool = False) -> list[Frame]:
        """Give the batch's frames their seq (a delta's joined text cut to size), within the log budget."""
        frames: list[Frame] = []
        for kind, fields in out:
            if kind != TASK_DELTA:
                frame = {"type": kind, "run_id": self.run_id, "seq": self.seq + 1, **fields}
                if not self._add(frames, frame, closing):
                    return self._cut(frames)
                continue
            text = "".join(fields["text"])
            step = self.max_delta_chars or len(text)
            for start in range(0, len(text), step):
                frame = {
                    "type": TASK_DELTA,
                    "run_id": self.run_id,
                    "seq": self.seq + 1,
                    "task": fields["task"],
                    "text": text[start : start + step],
                }
                if not self._add(frames, frame):
                    return self._cut(frames)
        return frames

    def _add(self, frames: list[Frame], frame: Frame, closing: bool = False) -> bool:
        """Number the frame into `frames`, unless it would pass the log budget."""
        if self._budget is not None:
            size = self._size(frame)
            if self.log_bytes + size > self._budget and not closing:
                return False
            self.log_bytes += size
        self.seq = frame["seq"]
        frames.append(frame)
        if frame["type"] == TASK_STARTED:
            self._numbered_started.add(frame["task"])
        elif frame["type"] in (TASK_COMPLETED, TASK_FAILED):
            self._numbered_end.add(frame["task"])
        return True

    def _cut(self, frames: list[Frame]) -> list[Frame]:
        """The log budget is spent: close every task not closed yet, then end the run (too_large)."""
        error = {"code": TOO_LARGE, "message": f"the run's output passed {self.max_log_bytes} bytes"}
        for frame in self._closing(error):
            self.log_bytes += self._size(frame)
            frames.append(frame)
        for lane in self._lanes.values():
            lane.held_text, lane.held_end = [], None
        self._head = len(self.order)
        self.ended = True
        return frames

    def _closing(self, error: dict) -> list[Frame]:
        """The frames that close the run after a cut: started/failed per open task, then run.failed."""
        out: list[Frame] = []

        def add(kind: str, **fields) -> None:
            self.seq += 1
            out.append({"type": kind, "run_id": self.run_id, "seq": self.seq, **fields})

        for key in self.order:
            if key in self._numbered_end:
                continue
            if key not in self._numbered_started:
                add(TASK_STARTED, task=key)
            if key not in self.failed:
                self.failed.append(key)
            add(TASK_FAILED, task=key, error=error)
        add(RUN_FAILED, error=error)
        return out

    def _closing_reserve(self) -> int:
        """Bytes closing frames can take at most: every task open, a 12-digit seq, the longest
        code and a message of up to CLOSING_MESSAGE_CHARS (the core's own are shorter)."""
        error = {"code": "x" * 32, "message": "x" * CLOSING_MESSAGE_CHARS}
        seq = 10**12 - 1
        frames = [{"type": RUN_FAILED, "run_id": self.run_id, "seq": seq, "error": error}]
        for key in self.order:
            frames.append({"type": TASK_STARTED, "run_id": self.run_id, "seq": seq, "task": key})
            frames.append(
                {"type": TASK_FAILED, "run_id": self.run_id, "seq": seq, "task": key, "error": error}
            )
        return sum(frame_bytes(f) for f in frames)

    def _size(self, frame: Frame) -> int:
        """frame_bytes(frame), without encoding anything but a delta's text (one per send)."""
        if frame["type"] != TASK_DELTA:
            return frame_bytes(frame)
        task = frame["task"]
        base = self._delta_base.get(task)
        if base is None:
            empty = {"type": TASK_DELTA, "run_id": self.run_id, "seq": 0, "task": task, "text": ""}
            base = self._delta_base[task] = frame_bytes(empty) - len('0""')
        return base + len(str(frame["seq"])) + len(json.dumps(frame["text"]))


def frame_bytes(frame: Frame) -> int:
    """Size of the frame as the run log stores it (json.dumps with its defaults)."""
    return len(json.dumps(frame))


def _delta(out: list[_Staged], task: str, parts: list[str]) -> None:
    """Add text to the batch, joined with the previous frame when it is a delta of the same task."""
    if out and out[-1][0] == TASK_DELTA and out[-1][1]["task"] == task:
        out[-1][1]["text"].extend(parts)
    else:
        out.append((TASK_DELTA, {"task": task, "text": list(parts)}))
