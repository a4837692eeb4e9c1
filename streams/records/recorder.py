"""The hot-path side of run records: one RunRecorder per run; synchronous, cheap, no await, no DB.

Every call only appends to memory and, at the run's start, a task's end and the run's end,
wakes the event loop's writer (streams.records.writer), which writes batches from its own
thread. Create recorders on the event loop that runs the run (the writer is per loop). A database that is
down or slow therefore never stalls or fails streaming; see the writer for retries and
`incomplete`.

Hook points (where the lead calls this; times default to `now()`, taken at the call):

1. Host, run start (after the run is accepted, before its tasks start)::

       rec = RunRecorder(run_id, owner=owner, spec=spec, user_input=user_input,
                         conversation=conversation_id)

   and pass `RecordingSink(run.pump, rec)` to `orchestrator.execute` instead of the pump.
   The sink records, per task: `task_started` when the task begins calling its provider,
   `piece` for every provider piece as it is received (the orchestrator calls `sink.delta`
   right after receiving it), and `task_ended` with the stats (text = the pieces joined).
   If the orchestrator is not given the sink, call those three from it at the same places.
2. Orchestrator, when a task is cut short (CancelledError in its stream loop), optionally::

       sink.cut_short(key, stats=partial_stats)   # RecordingSink; or rec.task_ended(..., cancelled=True)

   to keep the provider's usage of a stopped stream (prompt/completion tokens, finish_reason);
   without it the run's end records the task as cancelled with the pieces received so far.
3. Pump publish (the host's `publish` closure), right after a send returned::

       rec.frames(frames)

   with the ordered frames as sent. The run's final frame (run.completed / failed /
   cancelled) ends the record. On the layer-failure path, pass the frames of
   `pump.gate_end(...)` too.
4. Host, in `_main`'s `finally` (a safety net; ignored when the final frame was seen)::

       rec.run_ended("failed", {"code": "internal", "message": "..."})

5. Shutdown, after the runs ended: `await streams.records.writer.close_writer()` (flushes, then
   stops the loop's writer and its thread); tests: the same in close_streams_state.

Memory per run is bounded: the task texts (which the orchestrator holds anyway), at most
STREAMS["RECORDS_MAX_PIECES"] piece entries per task (beyond it, neighbouring pieces are
merged pairwise, so the trace keeps a uniform, coarser resolution and every character), and at
most STREAMS["RECORDS_MAX_FRAMES"] frame entries per run (beyond it, task.delta frames are
counted in `dropped` instead of traced; lifecycle frames are always kept).
"""

import math
import time
from dataclasses import fields
from datetime import UTC, datetime, timedelta

from django.conf import settings

from ..pipelines.specs import PipelineSpec
from . import metrics

__all__ = ["RecordingSink", "RunRecorder", "now", "to_datetime"]

# Wall-clock seconds anchored once to the monotonic clock: trace times never go backwards
# within a process, whatever NTP does to the wall clock meanwhile.
_EPOCH_OFFSET = time.time() - time.monotonic()
_monotonic = time.monotonic
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

END_STATUS = {"run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled"}


def now() -> float:
    """Epoch seconds, monotonic within the process."""
    return _EPOCH_OFFSET + _monotonic()


def to_datetime(ts: float, *, up: bool = False) -> datetime:
    """`ts` as an aware datetime on a whole microsecond, 1 us below (or above, `up`) it.

    The margin makes the stored start strictly earlier (the end strictly later) than any
    trace time recorded in between, whatever float rounding does to either.
    """
    us = math.ceil(ts * 1e6) + 1 if up else math.floor(ts * 1e6) - 1
    return _EPOCH + timedelta(microseconds=us)


def spec_snapshot(spec: PipelineSpec) -> dict:
    """The pipeline as it runs, as JSON-ready data."""
    return {
        "slug": spec.slug,
        "name": spec.name,
        "description": spec.description,
        "tasks": [
            {f.name: (list(v) if isinstance(v := getattr(t, f.name), tuple) else v) for f in fields(t)}
            for t in spec.tasks
        ],
    }


class _Task:
    """What the recorder knows of one task."""

    __slots__ = (
        "delivered",
        "ended_at",
        "error",
        "key",
        "model",
        "pieces",
        "position",
        "provider",
        "skip",
        "started_at",
        "stats",
        "status",
        "stride",
        "text",
        "texts",
        "times",
        "title",
    )

    def __init__(self, spec, position: int):
        self.key, self.title, self.position = spec.key, spec.title, position
        self.provider, self.model = spec.provider, spec.model
        self.status = "pending"
        self.text: str | None = None
        self.stats: dict = {}
        self.error: dict | None = None
        # The trace's pieces as two flat lists (floats and strings are not tracked by the
        # garbage collector; a list per piece would be, and would cost a GC pass per few hundred).
        self.times: list[float] = []
        self.texts: list[str] = []
        self.stride = 1  # provider pieces per entry (doubles at each merge)
        self.skip = 0  # pieces still to merge into the last entry
        # (times, texts) as they were at the task's end; what the writer writes.
        self.pieces: tuple[list[float], list[str]] | None = None
        self.delivered = 0  # characters sent to the client in task.delta frames
        self.started_at: float | None = None
        self.ended_at: float | None = None

    @property
    def first_at(self) -> float | None:
        """When the first piece arrived (merges keep the first time of each entry)."""
        times = self.pieces[0] if self.pieces is not None else self.times
        return times[0] if times else None

    @property
    def count(self) -> int:
        """Provider pieces received."""
        texts = self.pieces[1] if self.pieces is not None else self.texts
        return (len(texts) - 1) * self.stride + self.stride - self.skip if texts else 0

    def joined(self) -> str:
        """The text received so far."""
        return "".join(self.pieces[1] if self.pieces is not None else self.texts)

    def freeze(self) -> None:
        """The task ended: keep its pieces for the writer; later pieces go to lists nobody reads."""
        self.pieces = (self.times, self.texts)
        self.times, self.texts = [], []


class RunRecorder:
    """Collects one run's record and trace in memory; the loop's writer writes them."""

    def __init__(
        self,
        run_id: str,
        *,
        owner: str,
        spec: PipelineSpec,
        user_input: str,
        conversation: str | None = None,
        parent: str = "",
        started_at: float | None = None,
        writer=None,
    ):
        cfg = settings.STREAMS
        self.run_id = run_id
        self.owner = owner
        self.conversation = conversation
        self.parent = parent  # the run it follows in its conversation ("": the first turn)
        self.pipeline = spec.slug
        self.snapshot = spec_snapshot(spec)
        self.input = user_input
        self.started_at = started_at if started_at is not None else now()
        self.ended_at: float | None = None
        self.status = "running"
        self.error: dict | None = None
        self.incomplete = False
        self.tasks = {t.key: _Task(t, i) for i, t in enumerate(spec.tasks)}
        self.trace: list[tuple] = []  # (seq, type, task, sent_at)
        self.dropped = 0
        self._max_pieces = max(2, cfg["RECORDS_MAX_PIECES"] // 2 * 2)  # even: merged in pairs
        self._max_frames = cfg["RECORDS_MAX_FRAMES"]
        # What the writer has still to write (it reads and resets these, see take()).
        self.run_dirty = True
        self.tasks_dirty: list[str] = []
        self.delivered_dirty = False
        self.run_written = False
        if writer is None:
            from .writer import get_writer

            writer = get_writer()
        self._writer = writer
        writer.add(self)
        metrics.run_started()

    # --- hot path ---

    def task_started(self, task: str, at: float | None = None) -> None:
        """The task began calling its provider."""
        t = self.tasks[task]
        if t.started_at is None:
            t.started_at = now() if at is None else at

    def piece(self, task: str, text: str, at: float | None = None) -> None:
        """One provider piece of `task`, received at `at`."""
        t = self.tasks[task]
        if t.skip:  # merged into the last entry (beyond the cap)
            t.skip -= 1
            t.texts[-1] += text
            return
        t.times.append(_EPOCH_OFFSET + _monotonic() if at is None else at)
        texts = t.texts
        texts.append(text)
        t.skip = t.stride - 1
        if len(texts) >= self._max_pieces:
            # Pairwise: each entry keeps its first piece's time, so resolution stays uniform;
            # the last entry, one piece so far, is now owed `skip` more of the doubled stride.
            t.times = t.times[::2]
            t.texts = [a + b for a, b in zip(texts[::2], texts[1::2], strict=True)]
            t.stride *= 2

    def frames(self, frames: list[dict], at: float | None = None) -> None:
        """Ordered frames that were just sent, in order; the run's final frame ends the record."""
        if self.ended_at is not None:
            return
        if at is None:
            at = _EPOCH_OFFSET + _monotonic()
        trace = self.trace
        room = self._max_frames - len(trace)
        end = None
        for frame in frames:
            kind = frame["type"]
            task = frame.get("task")
            if kind == "task.delta":
                t = self.tasks.get(task)
                if t is not None:
                    t.delivered += len(frame["text"])
                    self.delivered_dirty = True
                if room <= 0:
                    self.dropped += 1
                    continue
            elif kind in END_STATUS:
                end = frame
            trace.append((frame["seq"], kind, task, at))
            room -= 1
        if end is not None:
            self.run_ended(END_STATUS[end["type"]], end.get("error"), at=at)

    def task_ended(
        self,
        task: str,
        *,
        text: str | None = None,
        stats: dict | None = None,
        error: dict | None = None,
        cancelled: bool = False,
        at: float | None = None,
    ) -> None:
        """The task ended: completed (stats), failed (error) or cut short (cancelled)."""
        t = self.tasks[task]
        if t.ended_at is not None:
            return
        t.ended_at = now() if at is None else at
        t.freeze()
        t.text = text if text is not None else t.joined()
        t.stats = stats or {}
        t.error = error
        t.status = "failed" if error else "cancelled" if cancelled else "completed"
        if t.started_at is None:
            duration = t.stats.get("duration_ms")
            t.started_at = t.ended_at - duration / 1000 if duration else (t.first_at or t.ended_at)
        metrics.task_ended(
            t.provider,
            t.status,
            ttft_ms=self.ttft_ms(t),
            duration_ms=self.duration_ms(t),
            tokens=t.stats.get("completion_tokens") or t.stats.get("tokens") or t.count,
            error_code=error.get("code") if error else None,
        )
        self.tasks_dirty.append(task)
        self._writer.wake()

    def run_ended(self, status: str, error: dict | None = None, at: float | None = None) -> None:
        """The run ended; tasks still open are recorded as cut short, with their text so far."""
        if self.ended_at is not None:
            return
        at = now() if at is None else at
        for t in self.tasks.values():
            if t.ended_at is None:
                cut = error if status == "failed" and error else None
                self.task_ended(t.key, error=cut, cancelled=cut is None, at=at)
        self.ended_at = at
        self.status = status
        self.error = error
        self.run_dirty = True
        metrics.run_ended(status)
        self._writer.wake()

    # --- read side, for the writer and for history of runs not written yet ---

    @staticmethod
    def ttft_ms(t: _Task) -> float | None:
        """The task's time to first token: its stats' when given, else measured here."""
        if t.stats.get("ttft_ms") is not None:
            return t.stats["ttft_ms"]
        if t.first_at is None or t.started_at is None:
            return None
        return round((t.first_at - t.started_at) * 1000, 1)

    @staticmethod
    def duration_ms(t: _Task) -> float | None:
        """The task's duration: its stats' when given, else measured here."""
        if t.stats.get("duration_ms") is not None:
            return t.stats["duration_ms"]
        if t.ended_at is None or t.started_at is None:
            return None
        return round((t.ended_at - t.started_at) * 1000, 1)

    def has_pending(self) -> bool:
        """Whether the writer has something of this run to write."""
        if not self.run_written or self.run_dirty or self.tasks_dirty:
            return True
        return self.ended_at is not None and self.delivered_dirty

    @property
    def done(self) -> bool:
        """Ended and fully written."""
        return self.ended_at is not None and not self.has_pending()

    def delivered_text(self, key: str) -> str:
        """What the client received of the task's text."""
        t = self.tasks[key]
        text = t.text if t.text is not None else t.joined()
        return text[: t.delivered]


class RecordingSink:
    """The orchestrator's sink that records each event, then passes it on (to the pump)."""

    __slots__ = ("_rec", "_sink")

    def __init__(self, sink, recorder: RunRecorder):
        self._sink = sink
        self._rec = recorder

    def started(self, task: str) -> None:
        """The task began."""
        self._rec.task_started(task)
        self._sink.started(task)

    def delta(self, task: str, text: str) -> None:
        """A provider piece, recorded with its receive time."""
        self._rec.piece(task, text)
        self._sink.delta(task, text)

    def finished(self, task: str, *, stats: dict | None = None, error: dict | None = None) -> None:
        """The task ended."""
        self._rec.task_ended(task, stats=stats, error=error)
        self._sink.finished(task, stats=stats, error=error)

    def cut_short(self, task: str, *, stats: dict | None = None) -> None:
        """The task was cancelled mid-stream: record it with what the provider reported (not sent)."""
        self._rec.task_ended(task, stats=stats, cancelled=True)
