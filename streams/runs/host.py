"""Runs hosted by this process: start, cancel (from any instance), and the resume grace period."""

import asyncio
import logging
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from .. import logs
from ..access.quotas import Slot
from ..pipelines.specs import PipelineSpec
from ..protocol import INTERNAL, LAYER_UNAVAILABLE, Frame
from ..records.conversations import History
from ..records.recorder import RecordingSink, RunRecorder
from ..store import LAYER_ERRORS
from ..store.publisher import RunPublisher, control_group
from ..store.runlog import get_run_log
from ..telemetry import live as tracing
from . import orchestrator
from .pump import RunPump

logger = logging.getLogger(__name__)


class LocalWatcher(Protocol):
    """A client of this process watching a run hosted here: it gets the run's frames directly.

    Both calls are synchronous and must never wait (a slow reader's outbox caps and closes it),
    so one watcher cannot hold up the run's sender or the others.
    """

    def run_frames(self, run_id: str, frames: list[Frame]) -> None:
        """Ordered frames of the run, each seq once, in seq order."""

    def run_progress(self, frame: Frame) -> None:
        """An unordered run.progress frame."""


@dataclass
class HostedRun:
    """A run whose tasks execute in this process."""

    run_id: str
    spec: PipelineSpec
    pump: RunPump
    recorder: RunRecorder
    history: History = field(default_factory=History)  # the conversation's earlier turns
    watchers: int = 1
    task: asyncio.Task | None = None
    exec_task: asyncio.Task | None = None
    grace: asyncio.TimerHandle | None = None
    # Called with the final frames when the layer failed and they cannot travel through it.
    on_layer_failure: set[Callable[[list[Frame]], None]] = field(default_factory=set)
    # The run's slot in its owner's quota of runs in flight, released when the run ends.
    quota: Slot | None = None
    # Clients of this process that get the frames from here, not through the channel layer.
    local: set[LocalWatcher] = field(default_factory=set)
    # Its frames into the log and to its group (it may be riding out a Redis outage).
    publisher: RunPublisher | None = None

    def deliver(self, frames: list[Frame]) -> None:
        """Hand ordered frames to the local watchers (before the layer: a Redis outage spares them)."""
        for watcher in list(self.local):
            try:
                watcher.run_frames(self.run_id, frames)
            except Exception:  # a bug in one client must not fail the run for the others
                logger.exception("run %s: local delivery failed", self.run_id)


class RunHost:
    """The runs of one event loop, and the control channel that reaches them from other instances."""

    def __init__(self):
        self.layer = get_channel_layer()
        self.runs: dict[str, HostedRun] = {}
        self._control_channel: str | None = None
        self._control_task: asyncio.Task | None = None
        self._control_lock = asyncio.Lock()
        # Other instances end this host's runs when it stops beating (streams/recovery.py).
        self.host_id = uuid.uuid4().hex
        self._heartbeat_task: asyncio.Task | None = None

    async def start(
        self,
        run_id: str,
        spec: PipelineSpec,
        user_input: str,
        owner: str,
        on_layer_failure: Callable[[list[Frame]], None] | None = None,
        *,
        conversation: str | None = None,
        parent: str = "",
        history: History | None = None,
        quota: Slot | None = None,
        watcher: LocalWatcher | None = None,
    ) -> None:
        """Record the run, then start its tasks and its sender; `quota` is released at its end.

        `watcher` (the starting client, when it is in this process) gets every frame from here.
        """
        cfg = settings.STREAMS
        meta = {"owner": owner, "pipeline": spec.slug, "tasks": list(spec.order), "host": self.host_id}
        await get_run_log().create(run_id, meta)
        await self._listen(run_id)
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = asyncio.create_task(self._heartbeat(cfg["HOST_HEARTBEAT_S"]))

        publisher = RunPublisher(run_id, self.layer, meta)
        # The run's record and trace (written off the hot path by streams/records/writer.py).
        recorder = RunRecorder(
            run_id, owner=owner, spec=spec, user_input=user_input, conversation=conversation, parent=parent
        )

        local: set[LocalWatcher] = {watcher} if watcher is not None else set()

        async def publish(frames: list[Frame]) -> None:
            run.deliver(frames)
            await publisher.frames(frames)
            recorder.frames(frames)  # as sent: after the send returned

        async def progress(frame: Frame) -> None:
            for each in list(local):
                each.run_progress(frame)
            await publisher.progress(frame)

        pump = RunPump(
            run_id,
            spec.order,
            publish,
            progress,
            progress_interval_s=cfg["PROGRESS_INTERVAL_S"],
            coalesce_window_s=cfg["COALESCE_WINDOW_S"],
            max_delta_chars=cfg["MAX_DELTA_CHARS"] or None,
            max_log_bytes=cfg["MAX_RUN_LOG_BYTES"] or None,
        )
        # Through a Redis outage the publisher re-appends what the log lacks from these.
        publisher.history = pump.history
        run = HostedRun(
            run_id, spec, pump, recorder, history or History(), quota=quota, local=local, publisher=publisher
        )
        if on_layer_failure is not None:
            run.on_layer_failure.add(on_layer_failure)
        self.runs[run_id] = run
        run.task = asyncio.create_task(self._main(run, user_input), name=f"run:{run_id}")
        logger.info(
            "run started: pipeline %s, %d tasks", spec.slug, len(spec.tasks), extra={"run_id": run_id}
        )

    async def _main(self, run: HostedRun, user_input: str) -> None:
        """Drive one run to its end, whatever ends it."""
        logs.RUN_ID.set(run.run_id)  # this task's own context, inherited by the run's tasks
        exec_task = asyncio.create_task(
            orchestrator.execute(
                run.spec,
                user_input,
                RecordingSink(run.pump, run.recorder),
                default_timeout_s=settings.STREAMS["TASK_TIMEOUT_S"],
                history=run.history,
                max_task_bytes=settings.STREAMS["MAX_TASK_BYTES"] or None,
            )
        )
        run.exec_task = exec_task
        pump_task = asyncio.create_task(run.pump.run())
        try:
            await asyncio.wait({exec_task, pump_task}, return_when=asyncio.FIRST_COMPLETED)
            if pump_task.done() and pump_task.exception() is not None:
                await self._send_failed(run, exec_task, pump_task.exception())
                return
            if pump_task.done():
                # The gate ended the run early (its log passed its bound): stop its tasks.
                exec_task.cancel()
            try:
                await exec_task
            except asyncio.CancelledError:
                run.pump.cancel()
            except Exception as exc:  # execute() handles task errors; this is a bug
                logger.exception("run %s: orchestrator failed", run.run_id)
                run.pump.abort(INTERNAL, f"the run failed unexpectedly: {type(exc).__name__}")
            await pump_task
        except asyncio.CancelledError:
            # The host itself is going away (shutdown): stop everything, wait for it.
            for t in (exec_task, pump_task):
                t.cancel()
            await asyncio.gather(exec_task, pump_task, return_exceptions=True)
            raise
        except Exception as exc:
            await self._send_failed(run, exec_task, exc)
        finally:
            history = run.pump.history
            logger.info("run ended: %s", history[-1]["type"] if history else "without frames")
            # A safety net: ignored when the run's final frame reached the recorder.
            run.recorder.run_ended(
                "failed", {"code": INTERNAL, "message": "the run ended without its last frame"}
            )
            tracing.run_ended(run.recorder)  # the run's trace, from what the recorder holds
            self._forget(run)

    async def _send_failed(self, run: HostedRun, exec_task: asyncio.Task, exc: BaseException) -> None:
        """Sending failed: stop the tasks and hand the run's frames to local clients directly.

        Only a Redis or OS error is the layer being unavailable; anything else is a bug,
        reported as `internal` (and logged with its traceback) so it cannot pass for an outage.
        """
        if isinstance(exc, LAYER_ERRORS):
            logger.error("run %s: channel layer unavailable: %s", run.run_id, exc)
            code, message = LAYER_UNAVAILABLE, "the message layer (Redis) is unavailable"
        else:
            logger.error("run %s: sending failed unexpectedly", run.run_id, exc_info=exc)
            code, message = INTERNAL, "the run failed unexpectedly; see the server log"
        exec_task.cancel()
        await asyncio.gather(exec_task, return_exceptions=True)
        run.recorder.frames(run.pump.gate_end("abort", code, message))
        # Every frame of the run: each local client skips what it already has.
        run.deliver(run.pump.history)
        for callback in list(run.on_layer_failure):
            callback(run.pump.history)

    def _forget(self, run: HostedRun) -> None:
        """Drop a finished run and its control subscription."""
        if run.grace is not None:
            run.grace.cancel()
        if run.quota is not None:
            run.quota.release_soon()
        if run.publisher is not None:
            run.publisher.stop()
        self.runs.pop(run.run_id, None)
        if self._control_channel is not None:
            task = asyncio.ensure_future(
                self.layer.group_discard(control_group(run.run_id), self._control_channel)
            )
            task.add_done_callback(_log_failure)

    async def settle(self, run_ids, timeout_s: float | None = None) -> None:
        """Wait until those of `run_ids` hosted here that nobody watches have ended."""
        tasks = [
            run.task
            for run_id in run_ids
            if (run := self.runs.get(run_id)) is not None and run.watchers == 0 and run.grace is None
        ]
        if tasks:
            await asyncio.wait([t for t in tasks if t is not None], timeout=timeout_s)

    def unwatch(self, run_id: str, watcher: LocalWatcher) -> None:
        """The local watcher wants no more of the run's frames (it has the end, or it closed)."""
        run = self.runs.get(run_id)
        if run is not None:
            run.local.discard(watcher)

    # --- control: cancel, attach, detach; local calls and messages from other instances ---

    async def cancel(self, run_id: str) -> None:
        """Cancel a run wherever it is hosted."""
        if run_id in self.runs:
            self._cancel_local(run_id)
        else:
            await self._send_control(run_id, "cancel")

    async def attach(self, run_id: str) -> None:
        """A connection started watching the run (a resume)."""
        if run_id in self.runs:
            self._attach_local(run_id)
        else:
            await self._send_control(run_id, "attach")

    async def detach(self, run_id: str) -> None:
        """A watching connection closed; the run is cancelled once nobody watches (after the grace)."""
        if run_id in self.runs:
            self._detach_local(run_id)
        else:
            await self._send_control(run_id, "detach")

    async def _send_control(self, run_id: str, action: str) -> None:
        """Ask the instance that hosts the run to apply `action`."""
        message = {"type": "run.control", "action": action, "run_id": run_id}
        await self.layer.group_send(control_group(run_id), message)

    def end_runs(self, code: str, message: str) -> None:
        """End every run hosted here as failed with `code` (shutdown), through its pump."""
        for run in list(self.runs.values()):
            # The pump's first ending wins: the cancel that follows only stops the tasks.
            run.pump.abort(code, message)
            if run.exec_task is not None:
                run.exec_task.cancel()

    def _cancel_local(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None and run.exec_task is not None:
            logger.info("run %s: cancelled", run_id)
            run.exec_task.cancel()

    def _attach_local(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is not None:
            run.watchers += 1
            if run.grace is not None:
                run.grace.cancel()
                run.grace = None

    def _detach_local(self, run_id: str) -> None:
        run = self.runs.get(run_id)
        if run is None:
            return
        run.watchers = max(run.watchers - 1, 0)
        if run.watchers:
            return
        grace = settings.STREAMS["RESUME_GRACE_S"]
        if grace <= 0:
            self._cancel_local(run_id)
        elif run.grace is None:
            run.grace = asyncio.get_running_loop().call_later(grace, self._cancel_local, run_id)

    async def _listen(self, run_id: str) -> None:
        """Subscribe this host's control channel to the run's control group."""
        async with self._control_lock:
            if self._control_channel is None:
                self._control_channel = await self.layer.new_channel("streams.host.")
                self._control_task = asyncio.create_task(self._control_loop(self._control_channel))
        await self.layer.group_add(control_group(run_id), self._control_channel)

    async def _heartbeat(self, interval_s: float) -> None:
        """While this host has runs, tell Redis it is alive."""
        while self.runs:
            await asyncio.sleep(interval_s)
            try:
                await get_run_log().heartbeat(self.host_id)
            except Exception as exc:  # Redis down: the runs fail on their own sends
                logger.warning("host heartbeat failed: %s", exc)

    async def _control_loop(self, channel: str) -> None:
        """Apply control messages sent to runs hosted here."""
        actions = {"cancel": self._cancel_local, "attach": self._attach_local, "detach": self._detach_local}
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("control channel receive failed; retrying")
                await asyncio.sleep(1)
                continue
            action = actions.get(message.get("action"))
            run_id = message.get("run_id")
            if action is not None and run_id:
                action(run_id)


def _log_failure(task: asyncio.Future) -> None:
    """Log a background cleanup that failed."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning("background cleanup failed: %s", task.exception())


_hosts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def get_host() -> RunHost:
    """The host of the running event loop."""
    loop = asyncio.get_running_loop()
    host = _hosts.get(loop)
    if host is None:
        host = _hosts[loop] = RunHost()
    return host


def current_host() -> RunHost | None:
    """The running loop's host, if it has one (never creates one)."""
    return _hosts.get(asyncio.get_running_loop())


async def close_host() -> None:
    """Cancel the running loop's runs and control reader (shutdown and tests)."""
    host = _hosts.pop(asyncio.get_running_loop(), None)
    if host is None:
        return
    tasks = [run.task for run in host.runs.values() if run.task is not None]
    tasks += [t for t in (host._control_task, host._heartbeat_task) if t is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
