"""Runs a pipeline's tasks as a DAG: one coroutine per task, started when its dependencies are done."""

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Protocol

from .. import logs
from ..pipelines.prompts import render_prompt
from ..pipelines.specs import PipelineSpec, TaskSpec
from ..protocol import TOO_LARGE
from ..providers import LLMRequest, Provider, ProviderError, Usage, get_provider
from ..providers.fallback import stream_with_fallbacks
from ..records import metrics
from ..records.conversations import History

logger = logging.getLogger(__name__)

YIELD_EVERY = 64


class Sink(Protocol):
    """Where task events go (a RunPump)."""

    def started(self, task: str) -> None: ...
    def delta(self, task: str, text: str) -> None: ...
    def finished(self, task: str, *, stats: dict | None = None, error: dict | None = None) -> None: ...


class TaskFailed(Exception):
    """A task ended with an error that goes to the client as task.failed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


async def execute(
    spec: PipelineSpec,
    user_input: str,
    sink: Sink,
    *,
    default_timeout_s: float,
    providers: Callable[[str], Provider] = get_provider,
    history: History | None = None,
    max_task_bytes: int | None = None,
) -> dict[str, str]:
    """Run every task of `spec`; return the outputs of the tasks that completed.

    `history` is the conversation's earlier turns: as text for `{{ history }}`, and as chat
    messages before the prompt of a task set to receive them (`history_messages`). A task whose
    text passes `max_task_bytes` (UTF-8) fails with `too_large`; the others go on.
    """
    history = history or History()
    outputs: dict[str, str] = {}
    done: dict[str, asyncio.Future[bool]] = {
        t.key: asyncio.get_running_loop().create_future() for t in spec.tasks
    }

    async def run_task(task: TaskSpec) -> None:
        logs.TASK.set(task.key)  # this coroutine's own context: its log lines name the task
        ok = True
        for dep in task.depends_on:
            ok = await done[dep] and ok
        sink.started(task.key)
        try:
            if not ok:
                failed = [d for d in task.depends_on if not done[d].result()]
                raise TaskFailed("dependency_failed", "upstream task failed: " + ", ".join(failed))
            context = {
                "input": user_input,
                "outputs": {k: outputs[k] for k in task.depends_on},
                "history": history.text,
            }
            turns = tuple(history.messages) if task.history_messages else ()
            text, stats = await _stream_task(
                task, context, turns, sink, default_timeout_s, providers, max_task_bytes
            )
        except TaskFailed as exc:
            logger.warning("task failed: %s: %s", exc.code, exc.message)
            sink.finished(task.key, error={"code": exc.code, "message": exc.message})
            done[task.key].set_result(False)
        else:
            outputs[task.key] = text
            sink.finished(task.key, stats=stats)
            done[task.key].set_result(True)

    # A TaskGroup cancels and awaits every task when the run is cancelled, so every
    # provider stream is closed (aclosing) before execute() returns.
    async with asyncio.TaskGroup() as group:
        for task in spec.tasks:
            group.create_task(run_task(task), name=f"task:{task.key}")
    return outputs


async def _stream_task(
    task: TaskSpec,
    context: dict,
    turns: tuple[dict, ...],
    sink: Sink,
    default_timeout_s: float,
    providers: Callable[[str], Provider],
    max_task_bytes: int | None = None,
) -> tuple[str, dict]:
    """Call the task's provider and pass its text on; return the text and the task's stats."""
    begin = time.monotonic()
    try:
        request = LLMRequest(
            model=task.model,
            prompt=render_prompt(task.prompt, **context),
            system=render_prompt(task.system, **context) if task.system else "",
            max_tokens=task.max_tokens,
            temperature=task.temperature,
            history=turns,
        )
    except Exception as exc:  # a template that validated but failed on this input
        logger.warning("task %s: prompt rendering failed: %s", task.key, exc)
        raise TaskFailed("bad_template", f"the prompt could not be rendered: {exc}") from None
    parts: list[str] = []
    usage: Usage | None = None
    first: float | None = None
    timeout_s = task.timeout_s or default_timeout_s
    size = 0  # UTF-8 bytes of the task's text so far
    limit = max_task_bytes or float("inf")
    try:
        async with asyncio.timeout(timeout_s):
            # Fallbacks wrap the stream only where configured: it costs a generator hop a piece.
            if task.fallbacks:
                routed = stream_with_fallbacks(
                    (task.provider, task.model), task.fallbacks, request, providers
                )
            else:
                routed = providers(task.provider).stream(request)
            with metrics.upstream(task.provider):
                async with aclosing(routed) as stream:
                    async for piece in stream:
                        if isinstance(piece, Usage):
                            usage = piece
                            continue
                        if not piece:
                            continue
                        if first is None:
                            first = time.monotonic()
                        # isascii() is O(1) in CPython: only non-ASCII text gets encoded to count.
                        size += len(piece) if piece.isascii() else len(piece.encode())
                        if size > limit:
                            # Leaving the `async with` closes the upstream stream.
                            raise TaskFailed(TOO_LARGE, f"the task's output passed {max_task_bytes} bytes")
                        parts.append(piece)
                        sink.delta(task.key, piece)
                        if len(parts) % YIELD_EVERY == 0:
                            # A provider replaying buffered data never suspends on its own and
                            # would starve every other connection of this event loop.
                            await asyncio.sleep(0)
    except asyncio.CancelledError:
        # The run was cancelled mid-stream: what the task produced so far is still on record.
        cut_short = getattr(sink, "cut_short", None)
        if cut_short is not None:
            cut_short(task.key, stats=_stats(begin, first, parts, usage))
        raise
    except TaskFailed:
        raise
    except TimeoutError:
        raise TaskFailed("timeout", f"the task took longer than {timeout_s:g} s") from None
    except ProviderError as exc:
        raise TaskFailed(exc.code, exc.message) from None
    except Exception:
        logger.exception("task %s: provider %s failed", task.key, task.provider)
        raise TaskFailed("internal", "the task failed unexpectedly; see the server log") from None
    stats = _stats(begin, first, parts, usage)
    if task.fallbacks:
        stats.update(routed.stats())  # the route that served: provider, model, fallbacks_tried
    return "".join(parts), stats


def _stats(begin: float, first: float | None, parts: list[str], usage: Usage | None) -> dict:
    """A task's stats: tokens (the provider's count when it gave one), time to first token, duration."""
    stats = {
        "tokens": usage.completion_tokens if usage and usage.completion_tokens is not None else len(parts),
        "ttft_ms": round((first - begin) * 1000, 1) if first is not None else None,
        "duration_ms": round((time.monotonic() - begin) * 1000, 1),
    }
    if usage is not None:
        stats["prompt_tokens"] = usage.prompt_tokens
        stats["completion_tokens"] = usage.completion_tokens
        if usage.finish_reason:
            stats["finish_reason"] = usage.finish_reason
    return stats
