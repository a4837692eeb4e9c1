"""Shared harness for provider tests: fast provider configs, a stream consumed as the core does."""

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field

from streams.providers.base import LLMRequest, ProviderError, Usage


def fast_config(base_url: str | None, key_env: str, **config) -> dict:
    """A provider config pointed at a local server, with small timeouts and no retries."""
    return {
        "base_url": base_url,
        "api_key_env": key_env,
        "max_retries": 0,
        "retry_backoff_s": 0.01,
        "timeout_s": 2.0,
        "connect_timeout_s": 2.0,
        **config,
    }


@contextlib.asynccontextmanager
async def provider_factory(build, name: str, key_env: str):
    """A factory of providers pointed at a URL with fast test settings; closes them on exit."""
    built = []

    def factory(base_url: str | None, **config):
        provider = build(name, fast_config(base_url, key_env, **config))
        built.append(provider)
        return provider

    try:
        yield factory
    finally:
        for provider in built:
            await provider.aclose()


@dataclass
class Outcome:
    """What a consumer saw: text pieces, the usage, the error."""

    texts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    error: ProviderError | None = None

    @property
    def text(self) -> str:
        """All text, joined."""
        return "".join(self.texts)


async def consume(provider, request: LLMRequest) -> Outcome:
    """Consume a stream as the orchestrator does, checking the interface's promises."""
    out = Outcome()
    try:
        async with contextlib.aclosing(provider.stream(request)) as stream:
            async for item in stream:
                if isinstance(item, Usage):
                    assert out.usage is None, "at most one Usage"
                    out.usage = item
                else:
                    assert isinstance(item, str) and item, "text pieces are non-empty strings"
                    assert out.usage is None, "Usage comes last"
                    out.texts.append(item)
    except ProviderError as exc:
        out.error = exc
    return out


def closed_port() -> int:
    """A local port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def cancel_mid_stream(server, provider, request: LLMRequest, after: int = 3):
    """Consume until `after` pieces arrived, cancel the consumer; the server's record and the cancel time."""
    received: list = []

    async def consume():
        async with contextlib.aclosing(provider.stream(request)) as stream:
            async for item in stream:
                received.append(item)

    task = asyncio.create_task(consume())
    await server.wait_for(lambda: len(received) >= after)
    cancelled_at = time.monotonic()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
    record = server.requests[0]
    await server.wait_for(lambda: record.closed_at is not None, timeout=1.0)
    return record, cancelled_at


@contextlib.asynccontextmanager
async def loop_turns():
    """Count the turns another task gets on the loop meanwhile (a starved loop gives few)."""
    turns = [0]

    async def ticker():
        while True:
            turns[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        yield turns
    finally:
        task.cancel()
