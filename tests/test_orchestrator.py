"""The DAG orchestrator on its own, with a recording sink and in-process providers: no Channels, no Redis."""

import asyncio

import pytest

from streams.pipelines.specs import PipelineSpec, TaskSpec
from streams.providers import ProviderError, Usage
from streams.runs.orchestrator import execute
from tests.support.providers import loop_turns


class Sink:
    """Records task events in arrival order."""

    def __init__(self):
        self.events = []

    def started(self, task):
        self.events.append(("started", task))

    def delta(self, task, text):
        self.events.append(("delta", task, text))

    def finished(self, task, *, stats=None, error=None):
        self.events.append(("failed", task, error) if error else ("completed", task, stats))

    def end(self, task):
        return next(e for e in self.events if e[0] in ("failed", "completed") and e[1] == task)


class Buffered:
    """A provider whose chunks are all buffered already: its iterator never suspends."""

    def __init__(self, n):
        self.n = n

    async def stream(self, request):
        for i in range(self.n):
            yield f"{i} "
        yield Usage(prompt_tokens=3, completion_tokens=self.n)


class Sleepy:
    """A provider that never answers."""

    closed = False

    async def stream(self, request):
        try:
            await asyncio.sleep(3600)
            yield "never"
        finally:
            Sleepy.closed = True


class Broken:
    """A provider that fails before its first token."""

    async def stream(self, request):
        raise ProviderError("auth", "bad key")
        yield ""  # pragma: no cover


def spec(*tasks):
    return PipelineSpec("p", tasks=tuple(tasks))


async def test_a_provider_with_thousands_of_buffered_chunks_does_not_starve_the_loop():
    sink = Sink()
    providers = {"buf": Buffered(20_000)}
    async with loop_turns() as turns:
        await execute(
            spec(TaskSpec("a", provider="buf")), "x", sink, default_timeout_s=10, providers=providers.get
        )
    assert turns[0] >= 20_000 // 64 // 2
    assert sink.end("a")[2]["tokens"] == 20_000
    assert sink.end("a")[2]["prompt_tokens"] == 3


async def test_a_task_over_its_timeout_fails_with_timeout_and_its_stream_is_closed():
    sink = Sink()
    Sleepy.closed = False
    providers = {"sleepy": Sleepy()}
    await execute(
        spec(TaskSpec("a", provider="sleepy", timeout_s=0.05)),
        "x",
        sink,
        default_timeout_s=10,
        providers=providers.get,
    )
    assert sink.end("a")[2]["code"] == "timeout"
    assert Sleepy.closed


async def test_provider_errors_keep_their_code_and_dependents_fail_with_dependency_failed():
    sink = Sink()
    providers = {"broken": Broken(), "buf": Buffered(2)}
    await execute(
        spec(
            TaskSpec("a", provider="broken"),
            TaskSpec("b", provider="buf", depends_on=("a",)),
            TaskSpec("c", provider="buf"),
        ),
        "x",
        sink,
        default_timeout_s=10,
        providers=providers.get,
    )
    assert sink.end("a")[2] == {"code": "auth", "message": "bad key"}
    assert sink.end("b")[2]["code"] == "dependency_failed"
    assert sink.end("c")[0] == "completed"


async def test_cancelling_the_run_closes_every_stream_before_execute_returns():
    Sleepy.closed = False
    run = asyncio.create_task(
        execute(
            spec(TaskSpec("a", provider="sleepy")),
            "x",
            Sink(),
            default_timeout_s=10,
            providers={"sleepy": Sleepy()}.get,
        )
    )
    await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert Sleepy.closed
