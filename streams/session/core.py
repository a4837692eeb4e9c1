"""The session core: one client's runs, whatever the transport.

A transport (the WebSocket consumer, an SSE response) parses its own input, then asks its
`RunSession` to start, resume or cancel a run, feeds it the channel-layer messages it
receives, and writes the frames the session hands to its `send`. Everything else lives here
once: input checks, pipeline lookup, ownership, group membership, the relay of each run, the
quiet-run check and its recovery, the layer-failure hand-over and the cleanup on close.
"""

import asyncio
import contextvars
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings

from ..access.quotas import ResumeCounter, Slot, get_quotas
from ..pipelines.catalog import aload_spec
from ..pipelines.specs import PipelineSpec
from ..protocol import (
    END_TYPES,
    RUN_ACCEPTED,
    SHUTTING_DOWN,
    TOO_MANY_RUNS,
    UNKNOWN_PIPELINE,
    UNKNOWN_RUN,
    ClientError,
    Frame,
)
from ..records.conversations import Turn, start_turn
from ..runs.host import get_host
from ..runs.recovery import end_if_orphaned
from ..runs.relay import RunRelay
from ..store import LAYER_ERRORS
from ..store.publisher import run_group
from ..store.runlog import get_run_log, owned_meta
from . import shutdown
from .inputs import check_input
from .outbox import Outbox

logger = logging.getLogger(__name__)

# Cleanup on close must not hang on a dead Redis (daphne kills the app 10 s after disconnect).
CLOSE_TIMEOUT_S = 5.0
# A run quiet for this long gets its log checked: the pub/sub layer can lose a message
# (even the final one) while it reconnects, and no later frame would reveal the gap.
QUIET_CHECK_S = 5.0

Send = Callable[[Frame], Awaitable[None]]


@dataclass(frozen=True)
class StartPlan:
    """A checked run.start: what will run, under which id, and its run.accepted frame."""

    run_id: str
    spec: PipelineSpec
    user_input: str
    turn: Turn  # the conversation it continues (or opens) and the history before it
    accepted: Frame
    quota: Slot | None = None  # its slot among its owner's runs in flight


class RunSession:
    """The runs one client watches: start, resume, cancel, relay, quiet check, cleanup."""

    def __init__(
        self,
        owner: str,
        send: Send,
        *,
        layer=None,
        channel: str | None = None,
        max_runs: int | None = None,
        quota_owner: str | None = None,
        max_resumes: int = 0,
        echo_ref: bool = True,
        progress: bool = True,
        on_watch: Callable[[], None] | None = None,
        outbox: Outbox | None = None,
    ):
        self.owner = owner
        self.layer = layer
        self.channel = channel  # the transport's channel-layer channel (set before joining)
        self.watching: dict[str, RunRelay] = {}
        self.started: set[str] = set()  # runs this session started and that are not over
        # Runs this session counts as a watcher of at their host (started or attached): the
        # ones to detach on close. A start cut short may or may not have started its run, so
        # it counts (a detach of a run that does not exist is harmless); an attach counts
        # only once done, as a detach too many could cancel someone else's run.
        self.attached: set[str] = set()
        self._send = send
        self._max_runs = max_runs
        # Who the quotas count (streams/access/quotas.py): the owner, or the client's address
        # for a connection that has neither user, key nor session. None: not counted.
        self.quota_owner = quota_owner
        self._resumes = ResumeCounter(max_resumes)
        self._echo_ref = echo_ref
        self._progress = progress
        self._on_watch = on_watch
        # The connection's unsent frames (when the transport has one): a slow reader's
        # overflow detaches this session, and a shutdown finishes it (session/shutdown.py).
        self.outbox = outbox
        self._closing: asyncio.Task | None = None
        if outbox is not None:
            outbox.on_overflow.append(self._slow_reader)
            shutdown.register(self)

    # --- starting, resuming, cancelling -------------------------------------------------------

    async def prepare(
        self,
        pipeline: str,
        user_input: str,
        ref: str | None = None,
        conversation: str | None = None,
        *,
        replaces: str | None = None,
        after: str | None = None,
    ) -> StartPlan:
        """Check a run.start (limits, input, pipeline, conversation, the run it replaces or
        follows) without starting anything."""
        if shutdown.draining():
            raise ClientError(SHUTTING_DOWN, "the server is shutting down; start the run elsewhere", ref)
        if self._max_runs is not None and len(self.started) >= self._max_runs:
            raise ClientError(TOO_MANY_RUNS, "too many runs in flight on this connection", ref)
        check_input(user_input, settings.STREAMS["MAX_INPUT_CHARS"], ref)
        spec = await aload_spec(pipeline)
        if spec is None or not spec.tasks:
            raise ClientError(UNKNOWN_PIPELINE, f"no runnable pipeline {pipeline!r}", ref)
        turn = await start_turn(self.owner, conversation, ref, replaces=replaces, after=after)
        run_id = uuid.uuid4().hex
        accepted: Frame = {
            "type": RUN_ACCEPTED,
            "run_id": run_id,
            "pipeline": spec.slug,
            "conversation": turn.conversation,
            # v3: the run this one is a new version of (or None), and the run it follows in
            # its conversation (None for a first turn): its place among the versions.
            "replaces": turn.replaces,
            "after": turn.parent or None,
            "tasks": [{"key": t.key, "title": t.title} for t in spec.tasks],
        }
        if self._echo_ref:
            accepted["ref"] = ref
        # Last, once every check passed: a refused start holds no slot.
        quota = None
        if self.quota_owner is not None:
            quota = await get_quotas().start_run(self.quota_owner, run_id)
        return StartPlan(run_id, spec, user_input, turn, accepted, quota)

    async def launch(self, plan: StartPlan, *, announce: bool = True, on_layer_failure=None) -> None:
        """Join the run's group, announce it (run.accepted), then start it on this process's host."""
        run_id = plan.run_id
        try:
            if run_id not in self.watching:
                # Join the group first: no frame of the run may be published before we listen.
                await self.join(run_id)
                self.watch(run_id, 0)
            self.started.add(run_id)
            self.attached.add(run_id)
            if announce:
                await self._send(plan.accepted)
            begin = get_host().start(
                run_id,
                plan.spec,
                plan.user_input,
                self.owner,
                on_layer_failure=on_layer_failure or self.layer_failed,
                conversation=plan.turn.conversation,
                parent=plan.turn.parent,
                history=plan.turn.history,
                quota=plan.quota,
            )
            # The run belongs to the host, not to this client: its tasks start in an empty
            # context, so they never use (or revive) a request's sync thread.
            await asyncio.create_task(begin, context=contextvars.Context())
        except Exception:
            # Not started (e.g. Redis down): it must not count as in flight, nor hold its quota
            # slot. A start cut short by a closing client stays watched, so close() detaches it.
            self._forget(run_id)
            if plan.quota is not None:
                plan.quota.release_soon()
            raise

    async def start(
        self,
        pipeline: str,
        user_input: str,
        ref: str | None = None,
        conversation: str | None = None,
        *,
        replaces: str | None = None,
        after: str | None = None,
    ) -> str:
        """Check and start a run; return its id."""
        plan = await self.prepare(pipeline, user_input, ref, conversation, replaces=replaces, after=after)
        await self.launch(plan)
        return plan.run_id

    async def check_owner(self, run_id: str) -> dict:
        """The run's metadata; a run that does not exist or is someone else's gets the same answer."""
        meta = await owned_meta(run_id, self.owner)
        if meta is None:
            raise ClientError(UNKNOWN_RUN, f"no run {run_id!r}")
        return meta

    async def resume(self, run_id: str, after_seq: int) -> None:
        """Re-send the run's frames after `after_seq`, then continue live."""
        await self.check_owner(run_id)
        self._resumes.count(run_id)
        if run_id not in self.watching:
            await self.attach(run_id)
        # Subscribed first, then the log: what is published meanwhile is either in the
        # log or arrives later and is recognised by its seq.
        self.watch(run_id, after_seq)
        await self.relay(run_id, None)

    async def cancel(self, run_id: str) -> None:
        """Cancel a run this client owns, on whichever instance hosts it."""
        await self.check_owner(run_id)
        await get_host().cancel(run_id)
        if await end_if_orphaned(run_id):  # nobody hosts it any more: end it here
            await self.relay(run_id, None)

    async def has_end(self, run_id: str, after_seq: int) -> bool:
        """Whether a client that has every frame up to `after_seq` already has the run's last one."""
        if after_seq <= 0:
            return False
        log = get_run_log()
        rest = await log.read(run_id, after_seq - 1, limit=1)
        if not rest:  # the client claims to be past the log's end: was that the run's end?
            rest = (await log.read(run_id, 0))[-1:]
        return bool(rest) and rest[0]["seq"] <= after_seq and rest[0]["type"] in END_TYPES

    # --- watching -----------------------------------------------------------------------------

    async def attach(self, run_id: str) -> None:
        """Listen to the run and count as its watcher (a resume)."""
        await self.join(run_id)
        await get_host().attach(run_id)
        self.attached.add(run_id)

    async def join(self, run_id: str) -> None:
        """Listen to the run's group on the transport's channel."""
        await self.layer.group_add(run_group(run_id), self.channel)

    def watch(self, run_id: str, after_seq: int) -> RunRelay:
        """Relay the run to this client from after `after_seq` on."""
        stopped = (lambda: self.outbox.closed) if self.outbox is not None else None
        relay = self.watching[run_id] = RunRelay(run_id, after_seq, self._send, stopped=stopped)
        if self._on_watch is not None:
            self._on_watch()
        return relay

    async def handle(self, message: dict) -> None:
        """A channel-layer message for this client: a run's frames or its progress."""
        kind = message.get("type")
        if kind == "run.frames":
            frames = message["frames"]
            if frames:
                await self.relay(frames[0]["run_id"], frames)
        elif kind == "run.progress" and self._progress:
            frame = message["frame"]
            if frame["run_id"] in self.watching:
                await self._send(frame)

    async def relay(self, run_id: str, frames: list[Frame] | None) -> None:
        """Send frames through the run's relay (None: replay the log); forget the run at its end."""
        relay = self.watching.get(run_id)
        if relay is None:
            return
        await (relay.replay() if frames is None else relay.push(frames))
        if relay.ended:
            await self._finished(run_id)

    def quiet(self, quiet_s: float) -> bool:
        """Whether a watched run has been quiet for `quiet_s`."""
        return any(r.quiet_for() >= quiet_s for r in self.watching.values())

    async def check_quiet(self, quiet_s: float) -> None:
        """Send what the log holds beyond the last seq of every quiet run; end runs whose host is gone."""
        for run_id, relay in list(self.watching.items()):
            if relay.quiet_for() < quiet_s:
                continue
            try:
                await self.relay(run_id, None)
                if not relay.ended and await end_if_orphaned(run_id):
                    await self.relay(run_id, None)
            except LAYER_ERRORS as exc:
                # The layer may come back; the next check may succeed.
                logger.warning("run %s: log check failed: %s", run_id, exc, extra={"run_id": run_id})

    async def _finished(self, run_id: str) -> None:
        """The run's final frame was sent: stop listening to it."""
        self._forget(run_id)
        await self.layer.group_discard(run_group(run_id), self.channel)

    def layer_failed(self, frames: list[Frame]) -> None:
        """The host's hand-over when the layer is down: the run's frames, sent without the layer."""
        if frames:
            task = asyncio.ensure_future(self._send_direct(frames[0]["run_id"], frames))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_direct(self, run_id: str, frames: list[Frame]) -> None:
        """Send what this client has not seen, without touching the layer or the log."""
        relay = self.watching.get(run_id)
        self._forget(run_id)
        if relay is not None:
            await relay.push(frames)

    def _forget(self, run_id: str) -> None:
        """The run is over for this client (ended, or never started)."""
        self.watching.pop(run_id, None)
        self.started.discard(run_id)
        self.attached.discard(run_id)

    # --- closing ------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection ends (its outbox takes nothing more): ignore its client frames."""
        return self.outbox is not None and self.outbox.closed

    def _slow_reader(self, dropped: int) -> None:
        """The client read too slowly: its runs are detached now, as if it had closed."""
        logger.warning(
            "slow reader: %d bytes unsent (over %d), closing the connection and detaching runs %s",
            dropped,
            self.outbox.max_bytes,
            list(self.watching),
        )
        self._closing = asyncio.ensure_future(self.close())

    async def close(self) -> None:
        """Stop watching every run: detach (the host cancels a run nobody watches), leave, settle."""
        shutdown.unregister(self)
        watching, attached = list(self.watching), list(self.attached)
        self.watching, self.attached = {}, set()
        if not watching and not attached:
            return
        host = get_host()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                for run_id in attached:
                    # Detach first, so that upstream streams close as early as possible.
                    await host.detach(run_id)
                for run_id in watching if self.channel is not None else ():
                    await self.layer.group_discard(run_group(run_id), self.channel)
                # Nothing of a cancelled run may outlive the client: wait for local ones.
                await host.settle(attached)
        except Exception:
            logger.warning("cleanup of runs %s on close failed", watching, exc_info=True)
