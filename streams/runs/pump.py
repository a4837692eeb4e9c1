"""Coalesces one run's task events and publishes the gate's frames, one send at a time.

Task coroutines report events synchronously (a token never waits for a send); what arrives
while a send is in flight waits here, merged per task, and goes to the gate with the next
drain. Held-back text is the gate's business: the pump feeds it every task's events.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..protocol import RUN_PROGRESS, Frame
from .gate import COMPLETED, DELTA, FAILED, STARTED, Gate, TaskEvent

logger = logging.getLogger(__name__)

Publish = Callable[[list[Frame]], Awaitable[None]]
Progress = Callable[[dict], Awaitable[None]]


@dataclass
class _Pending:
    """Events of one task that arrived since the last drain (merged), and its progress."""

    started: bool = False
    text: list[str] = field(default_factory=list)
    end: TaskEvent | None = None
    # For run.progress: what the task is doing, whether fed to the gate or not.
    state: str = "waiting"
    tokens: int = 0


class RunPump:
    """The one sender of a run: task coroutines report events; `run()` turns them into sends."""

    def __init__(
        self,
        run_id: str,
        order: list[str] | tuple[str, ...],
        publish: Publish,
        progress: Progress | None = None,
        *,
        progress_interval_s: float = 0.5,
        coalesce_window_s: float = 0.0,
        max_delta_chars: int | None = None,
        max_log_bytes: int | None = None,
    ):
        self.gate = Gate(run_id, order, max_delta_chars=max_delta_chars, max_log_bytes=max_log_bytes)
        self._pending = {key: _Pending() for key in order}
        self._publish = publish
        self._progress = progress
        self._progress_interval_s = progress_interval_s
        self._window_s = coalesce_window_s
        self._sent_at = -float("inf")
        self._wake = asyncio.Event()
        self._ending: tuple[str, str, str] | None = None  # ("cancel"|"abort", code, message)
        self._last_progress: dict | None = None
        self._progress_at = 0.0
        # Every ordered frame, so that local clients can be told the end when the layer fails.
        self.history: list[Frame] = []

    # --- called by task coroutines: synchronous, so a token never waits on a send ---

    def started(self, task: str) -> None:
        """The task began calling its provider."""
        p = self._pending[task]
        p.started, p.state = True, "running"
        self._wake.set()

    def delta(self, task: str, text: str) -> None:
        """The task produced text."""
        p = self._pending[task]
        p.text.append(text)
        p.tokens += 1
        # Held-back text waits for its turn anyway: only the live task's text (and a task's
        # first token, for run.progress) wakes the sender; the progress timer does the rest.
        if task == self.gate.head or p.tokens == 1:
            self._wake.set()

    def finished(self, task: str, *, stats: dict | None = None, error: dict | None = None) -> None:
        """The task ended: completed with stats, or failed with an error."""
        p = self._pending[task]
        if error is None:
            p.end, p.state = TaskEvent(task, COMPLETED, stats=stats or {}), "done"
        else:
            p.end, p.state = TaskEvent(task, FAILED, error=error), "failed"
        self._wake.set()

    def cancel(self) -> None:
        """End the run as cancelled at the next send (task coroutines must be stopped first)."""
        self._ending = self._ending or ("cancel", "cancelled", "the run was cancelled")
        self._wake.set()

    def abort(self, code: str, message: str) -> None:
        """End the run as failed at the next send."""
        self._ending = self._ending or ("abort", code, message)
        self._wake.set()

    def gate_end(self, kind: str, code: str, message: str) -> list[Frame]:
        """End the run in the gate now ("cancel" or "abort"); the frames are also kept in history."""
        out = self.gate.cancel() if kind == "cancel" else self.gate.abort(code, message)
        self.history.extend(out)
        return out

    # --- the sender ---

    async def run(self) -> None:
        """Send until the gate has emitted the run's final frame."""
        loop = asyncio.get_running_loop()
        while not self.gate.ended:
            await self._wait()
            # At most one send per window: what arrives meanwhile joins the next one. A send
            # after a quiet window (a run's first token) goes out at once.
            wait = self._sent_at + self._window_s - loop.time()
            if wait > 0 and self._ending is None:
                await asyncio.sleep(wait)
            frames = self.drain()
            if frames:
                self._sent_at = loop.time()
                await self._publish(frames)
            await self._maybe_progress()

    async def _wait(self) -> None:
        """Wait for new events, waking for progress reports while tasks work in the background."""
        # Tasks after the live one exist unless the head is the last task (or the run is over).
        background = self.gate.head not in (None, self.gate.order[-1])
        if self._progress is None or not background:
            await self._wake.wait()
        else:
            try:
                async with asyncio.timeout(self._progress_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()

    def drain(self) -> list[Frame]:
        """Feed the gate every task's events since the last drain; return the frames to send."""
        if self._ending is not None:
            kind, code, message = self._ending
            return self.gate_end(kind, code, message)
        events: list[TaskEvent] = []
        for key in self.gate.order:
            events.extend(self._take(key))
        out = self.gate.feed_all(events) if events else []
        self.history.extend(out)
        return out

    def _take(self, task: str) -> list[TaskEvent]:
        """Move the task's pending events out, merged into at most started, delta, end."""
        p = self._pending[task]
        events = []
        if p.started:
            p.started = False
            events.append(TaskEvent(task, STARTED))
        if p.text:
            text = "".join(p.text)
            p.text.clear()
            events.append(TaskEvent(task, DELTA, text=text))
        if p.end is not None:
            events.append(p.end)
            p.end = None
        return events

    def _background(self) -> dict:
        """Progress of the tasks that are not live."""
        head = self.gate.head
        if head is None:
            return {}
        later = self.gate.order[self.gate.order.index(head) + 1 :]
        return {k: {"state": self._pending[k].state, "tokens": self._pending[k].tokens} for k in later}

    async def _maybe_progress(self) -> None:
        """Report background progress when it changed, at most once per interval."""
        if self._progress is None or self.gate.ended:
            return
        now = asyncio.get_running_loop().time()
        if now - self._progress_at < self._progress_interval_s:
            return
        tasks = self._background()
        if tasks and tasks != self._last_progress and any(t["state"] != "waiting" for t in tasks.values()):
            self._last_progress, self._progress_at = tasks, now
            try:
                await self._progress({"type": RUN_PROGRESS, "run_id": self.gate.run_id, "tasks": tasks})
            except Exception as exc:  # progress is optional: a lost report must not fail the run
                logger.warning("run %s: progress report failed: %s", self.gate.run_id, exc)
