"""The records writer: one asyncio task per event loop writes RunRecorders' data in batches.

When: shortly after a run's start, a task's end or a run's end (a short batching window, so
that what happens together shares one transaction; under load batches simply grow), and every
STREAMS["RECORDS_FLUSH_S"] seconds for retries.

Where: one dedicated thread per writer (not the shared sync thread of
database_sync_to_async), so a slow database delays only records, never a request or a run.

When the database fails: a run's pending data is retried at most STREAMS["RECORDS_RETRIES"]
times (with backoff); then its pending pieces and frames are dropped, the run is marked
`incomplete` (one warning line with its run id) and, once the database answers again, its row
gets `incomplete` and its final status. At most STREAMS["RECORDS_MAX_PENDING_RUNS"] ended
runs wait in memory; beyond that the oldest are given up the same way.
"""

import asyncio
import logging
import weakref
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from .recorder import RunRecorder, to_datetime

logger = logging.getLogger(__name__)

__all__ = ["RecordWriter", "close_writer", "flush_all", "get_writer", "pending_recorders"]

# Seconds to wait after a wake-up so that ends arriving together go in one batch.
BATCH_WINDOW_S = 0.05
MAX_BACKOFF_S = 30.0
# Final statuses of given-up runs kept for when the database is back (run_id -> row fields).
MAX_LOST = 10_000


class RecordWriter:
    """Writes the records of one event loop's runs."""

    def __init__(self):
        cfg = settings.STREAMS
        self.flush_s = cfg["RECORDS_FLUSH_S"]
        self.retries = cfg["RECORDS_RETRIES"]
        self.max_pending = cfg["RECORDS_MAX_PENDING_RUNS"]
        self.pending: dict[str, RunRecorder] = {}
        self.lost: OrderedDict[str, dict] = OrderedDict()
        self._failures: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._streak = 0  # failed flushes in a row
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams-records")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="streams-records-writer")

    # --- called from the hot path ---

    def add(self, rec: RunRecorder) -> None:
        """A run started: its row goes out with the next batch (a reload then finds it in flight)."""
        self.pending[rec.run_id] = rec
        if len(self.pending) > self.max_pending:
            self._shed()
        self._wake.set()

    def wake(self) -> None:
        """Something worth writing soon happened (a task's or the run's end)."""
        self._wake.set()

    # --- the writer task ---

    async def _run(self) -> None:
        """Flush on wake-ups and every flush_s; back off while the database fails."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
                await asyncio.sleep(BATCH_WINDOW_S)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                async with self._lock:
                    ok = await self._flush_once()
            except Exception:  # a bug here must not end the writer of every later run
                logger.exception("records: writer failed")
                ok = False
            if not ok:
                await asyncio.sleep(min(self.flush_s * 2 ** min(self._streak, 16), MAX_BACKOFF_S))

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Write everything pending now, retrying without backoff; True when nothing is left.

        A database that hangs is given up on after `timeout_s` (its call goes on in the thread).
        """
        try:
            async with asyncio.timeout(timeout_s), self._lock:
                for _ in range(self.retries + 2):
                    if await self._flush_once() and not self._has_work():
                        return True
        except TimeoutError:
            logger.warning(
                "records: flush timed out after %g s; %d runs not written", timeout_s, len(self.pending)
            )
        return not self._has_work()

    def _has_work(self) -> bool:
        """Whether anything waits to be written."""
        return bool(self.lost) or any(rec.has_pending() for rec in self.pending.values())

    async def _flush_once(self) -> bool:
        """One batch: every pending run's new data in one transaction. False when it failed."""
        from . import store

        batch = [(rec, payload) for rec in list(self.pending.values()) if (payload := take(rec))]
        lost = dict(self.lost)
        if not batch and not lost:
            return True
        using = store.records_db()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, store.write_batch, [p for _, p in batch], lost, using)
        except Exception as exc:
            self._streak += 1
            if self._streak == 1:
                logger.warning("records: database write failed, retrying: %s", exc)
            for rec, payload in batch:
                restore(rec, payload)
                failures = self._failures[rec.run_id] = self._failures.get(rec.run_id, 0) + 1
                if failures > self.retries:
                    self._give_up(rec, exc)
            return False
        if self._streak:
            logger.info("records: database writes work again")
        self._streak = 0
        for run_id in lost:
            self.lost.pop(run_id, None)
        for rec, payload in batch:
            self._failures.pop(rec.run_id, None)
            if payload["run"] is not None and payload["new"]:
                rec.run_written = True
            for row in payload["tasks"]:
                rec.tasks[row["key"]].pieces = ([], [])  # written: the memory goes back
            if payload["trace"] is not None:
                rec.trace = []
            if rec.done:
                self.pending.pop(rec.run_id, None)
        return True

    def _give_up(self, rec: RunRecorder, exc: BaseException | None) -> None:
        """Stop retrying the run's pending data: drop it, mark the run incomplete, say so once."""
        self._failures.pop(rec.run_id, None)
        if not rec.incomplete:
            reason = f"{type(exc).__name__}: {exc}" if exc is not None else "too many runs waiting"
            logger.warning(
                "run %s: records could not be written (%s); the run is marked incomplete",
                rec.run_id,
                reason,
                extra={"run_id": rec.run_id},
            )
        rec.incomplete = True
        for key in rec.tasks_dirty:
            rec.tasks[key].pieces = ([], [])
        rec.trace = []
        if rec.ended_at is not None:
            # Ended: nothing more will come. Keep only its final status for when the database is back.
            self.pending.pop(rec.run_id, None)
            self.lost[rec.run_id] = {
                "status": rec.status,
                "error_code": (rec.error or {}).get("code", ""),
                "error_message": (rec.error or {}).get("message", ""),
                "ended_at": to_datetime(rec.ended_at, up=True),
            }
            while len(self.lost) > MAX_LOST:
                self.lost.popitem(last=False)

    def _shed(self) -> None:
        """Too many runs wait (the database is slow or down): give up the oldest ended ones."""
        excess = len(self.pending) - self.max_pending
        for rec in [r for r in self.pending.values() if r.ended_at is not None][:excess]:
            self._give_up(rec, None)

    async def close(self) -> None:
        """Stop the task and close the thread's database connections."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        from django.db import connections

        try:
            closing = asyncio.get_running_loop().run_in_executor(self._executor, connections.close_all)
            await asyncio.wait_for(closing, 5)
        except TimeoutError:
            logger.warning("records: the writer's thread is stuck in a database call")
        self._executor.shutdown(wait=False)


def take(rec: RunRecorder) -> dict | None:
    """The run's data not yet handed to the writer, as plain rows; resets the run's dirty marks."""
    if not rec.has_pending():
        return None
    ended = rec.ended_at is not None
    first = not rec.run_written
    payload = {
        "run_id": rec.run_id,
        # The stored start in epoch seconds: trace times are stored relative to it.
        "t0": to_datetime(rec.started_at).timestamp(),
        "run": None,
        "new": first,
        "conversation": None,
        "tasks": [],
        "delivered": [],
        "trace": None,
    }
    if rec.run_dirty or first:
        payload["run"] = run_row(rec, full=first)
        if first and rec.conversation:
            payload["conversation"] = {
                "id": rec.conversation,
                "owner": rec.owner,
                "title": " ".join(rec.input[:400].split())[:200],
                "created": to_datetime(rec.started_at),
            }
        rec.run_dirty = False
    keys, rec.tasks_dirty = rec.tasks_dirty, []
    payload["tasks"] = [task_row(rec, key) for key in keys]
    if ended and rec.delivered_dirty:
        written = set(keys)
        payload["delivered"] = [(k, t.delivered) for k, t in rec.tasks.items() if k not in written]
        rec.delivered_dirty = False
    if ended and payload["run"] is not None:
        payload["trace"] = {"frames": rec.trace, "dropped": rec.dropped}
    return payload


def restore(rec: RunRecorder, payload: dict) -> None:
    """A batch failed: mark its data as still to write."""
    if payload["run"] is not None:
        rec.run_dirty = True
    rec.tasks_dirty[:0] = [row["key"] for row in payload["tasks"]]
    if payload["delivered"]:
        rec.delivered_dirty = True


def run_row(rec: RunRecorder, *, full: bool) -> dict:
    """The Run row's fields (the immutable ones only for its first write)."""
    row = {
        "run_id": rec.run_id,
        "status": rec.status,
        "error_code": (rec.error or {}).get("code", ""),
        "error_message": (rec.error or {}).get("message", ""),
        "ended_at": to_datetime(rec.ended_at, up=True) if rec.ended_at is not None else None,
        "incomplete": rec.incomplete,
    }
    if full:
        row.update(
            conversation=rec.conversation,
            parent=rec.parent,
            owner=rec.owner,
            pipeline=rec.pipeline,
            pipeline_snapshot=rec.snapshot,
            input=rec.input,
            started_at=to_datetime(rec.started_at),
        )
    return row


def task_row(rec: RunRecorder, key: str) -> dict:
    """A TaskRun row's fields."""
    t = rec.tasks[key]
    stats, error = t.stats, t.error or {}
    return {
        "key": key,
        "title": t.title,
        "position": t.position,
        "provider": t.provider,
        "model": t.model,
        "status": t.status,
        "text": t.text or "",
        "delivered_chars": t.delivered,
        "started_at": to_datetime(t.started_at) if t.started_at is not None else None,
        "ended_at": to_datetime(t.ended_at, up=True) if t.ended_at is not None else None,
        "ttft_ms": rec.ttft_ms(t),
        "duration_ms": rec.duration_ms(t),
        "prompt_tokens": stats.get("prompt_tokens"),
        "completion_tokens": stats.get("completion_tokens"),
        "finish_reason": stats.get("finish_reason") or "",
        "error_code": error.get("code", ""),
        "error_message": error.get("message", ""),
        "pieces": t.pieces or ([], []),  # made [[at, text], ...] in the writer's thread
    }


_writers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_writer() -> RecordWriter:
    """The writer of the running event loop (created, with its task, on first use)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = RecordWriter()
    return writer


def pending_recorders() -> list[RunRecorder]:
    """This loop's runs whose records are not all written yet (for history and ownership)."""
    writer = _writers.get(asyncio.get_running_loop())
    return list(writer.pending.values()) if writer is not None else []


async def flush_all(timeout_s: float = 10.0) -> bool:
    """Write everything this loop's runs recorded (shutdown, tests); True when all was written."""
    writer = _writers.get(asyncio.get_running_loop())
    return True if writer is None else await writer.flush(timeout_s)


async def close_writer(timeout_s: float = 10.0) -> None:
    """Flush, then stop this loop's writer (shutdown, tests)."""
    writer = _writers.pop(asyncio.get_running_loop(), None)
    if writer is not None:
        try:
            await writer.flush(timeout_s)
        finally:
            await writer.close()
