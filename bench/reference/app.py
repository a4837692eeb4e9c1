"""The original design, as people write it: FastAPI + sse-starlette, one process, no Redis.

    BENCH_VARIANT=sdk|parse OPENAI_BASE_URL=... OPENAI_API_KEY=... \\
        python -m uvicorn bench.reference.app:app --host 127.0.0.1 --port 8200

`POST /stream` with {"pipeline": ..., "input": ...} answers text/event-stream in the seed's
shape (PROTOCOL.md, "Server-Sent Events"): task A is iterated and sent live, one SSE event
per token; B, C and D run at the same time as background asyncio tasks, each putting its
tokens into its own asyncio.Queue, and are flushed in order once A is done, one event per
token again. `GET /health` answers "ok" (the idle-connection figure uses it).

Variants (BENCH_VARIANT):
- `sdk` (default): `AsyncOpenAI` with its default transport, `async for chunk in stream`
  over the SDK's ChatCompletionChunk objects, `chunk.choices[0].delta.content`.
- `parse`: the same architecture, but each upstream call is the app's own OpenAI provider
  (`streams.providers.openai_provider.OpenAIProvider`: the SDK's `post` with its raw-stream header, raw
  body parsed by hand, the SDK's aiohttp transport), so only the architecture differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from openai import AsyncOpenAI
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

VARIANT = os.environ.get("BENCH_VARIANT", "sdk")
TASKS = ("task_a", "task_b", "task_c", "task_d")
MODEL = "bench"

_state: dict = {}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    """One client for the process, closed at shutdown."""
    if VARIANT == "parse":
        from streams.providers.openai_provider import OpenAIProvider

        provider = OpenAIProvider("bench", {"base_url": os.environ.get("OPENAI_BASE_URL")})
        _state["provider"] = provider
        yield
        await provider.aclose()
    else:
        client = AsyncOpenAI()
        _state["client"] = client
        yield
        await client.close()


app = FastAPI(lifespan=lifespan)


class StreamRequest(BaseModel):
    pipeline: str = "bench"
    input: str


async def sdk_stream(key: str, user_input: str) -> AsyncIterator[str]:
    """The tutorial way: the SDK's chunk objects."""
    stream = await _state["client"].chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": f"{key} {user_input}"}],
        stream=True,
    )
    async with stream:
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content


async def parsed_stream(key: str, user_input: str) -> AsyncIterator[str]:
    """The app's provider: the raw body parsed by hand."""
    from streams.providers.base import LLMRequest

    request = LLMRequest(model=MODEL, prompt=f"{key} {user_input}")
    async with contextlib.aclosing(_state["provider"].stream(request)) as stream:
        async for item in stream:
            if type(item) is str:
                yield item


llm_stream = parsed_stream if VARIANT == "parse" else sdk_stream


async def background(key: str, user_input: str, queue: asyncio.Queue) -> None:
    """A held-back task: every token into its queue, then its end."""
    begin = time.monotonic()
    tokens = 0
    try:
        async for text in llm_stream(key, user_input):
            tokens += 1
            await queue.put(("delta", text))
        await queue.put(("completed", {"tokens": tokens, "duration_ms": (time.monotonic() - begin) * 1000}))
    except Exception as exc:
        await queue.put(("failed", {"code": "upstream_error", "message": str(exc)}))


@app.get("/health")
async def health() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.post("/stream")
async def stream(body: StreamRequest) -> EventSourceResponse:
    async def events():
        queues = {key: asyncio.Queue() for key in TASKS[1:]}
        workers = [asyncio.create_task(background(key, body.input, queues[key])) for key in TASKS[1:]]
        seq = 0
        try:
            begin = time.monotonic()
            tokens = 0
            async for text in llm_stream(TASKS[0], body.input):
                seq += 1
                tokens += 1
                yield ServerSentEvent(data=text, event=TASKS[0], id=str(seq))
            seq += 1
            stats = {"tokens": tokens, "duration_ms": (time.monotonic() - begin) * 1000}
            yield ServerSentEvent(
                data=json.dumps({"task": TASKS[0], "stats": stats}), event="task.completed", id=str(seq)
            )
            for key in TASKS[1:]:
                while True:
                    kind, payload = await queues[key].get()
                    seq += 1
                    if kind == "delta":
                        yield ServerSentEvent(data=payload, event=key, id=str(seq))
                        continue
                    data = json.dumps({"task": key, **payload})
                    yield ServerSentEvent(data=data, event=f"task.{kind}", id=str(seq))
                    break
            seq += 1
            yield ServerSentEvent(data="{}", event="run.completed", id=str(seq))
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    return EventSourceResponse(events())
