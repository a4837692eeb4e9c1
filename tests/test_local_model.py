"""Against llama.cpp's real llama-server (4 slots, continuous batching) with SmolLM2-135M.

Greedy decoding (temperature 0, a fixed seed) makes the model a deterministic function of the
request, so a direct call through the official openai SDK, asked alone, is the oracle for what the
app delivers; measured here, the text stays the same when the four slots decode together.
"""

import asyncio
import json
from pathlib import Path

import openai
import pytest
from asgiref.sync import sync_to_async

from streams import providers
from streams.models import TaskRun
from streams.pipelines.files import import_pipelines
from streams.pipelines.prompts import render_prompt
from streams.providers.base import LLMRequest
from streams.providers.openai_provider import build as build_openai
from streams.records.writer import flush_all
from tests.support.llama_server import MODEL_ALIAS, SLOTS
from tests.support.providers import consume
from tests.wsclient import connect, recv, send, start, task_order, texts

pytestmark = [pytest.mark.slow, pytest.mark.local_model]

ROOT = Path(__file__).resolve().parent.parent
SEED = 1234
MAX_TOKENS = 16
QUESTION = "What is the capital of France?"
# A question whose answer runs to max_tokens, so the run lasts several progress intervals.
LONG_QUESTION = "Explain how a bicycle works, step by step."


async def direct(server, system: str, prompt: str, max_tokens: int = MAX_TOKENS) -> tuple[str, list, dict]:
    """Stream one chat completion through the official SDK: its text, every finish_reason, the usage."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    async with openai.AsyncOpenAI(api_key="unused", base_url=server.base_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=MODEL_ALIAS,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0,
            seed=SEED,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, reasons, usage = [], [], {}
        async for chunk in stream:
            for choice in chunk.choices:
                parts.append(choice.delta.content or "")
                if choice.finish_reason:
                    reasons.append(choice.finish_reason)
            if chunk.usage:
                usage = chunk.usage.model_dump()
    return "".join(parts), reasons, usage


def provider_config(server, **extra) -> dict:
    """The app's `openai` kind pointed at the server, sending the same seed as the direct calls."""
    return {
        "kind": "openai",
        "base_url": server.base_url,
        "api_key_env": "LLAMA_TEST_API_KEY",
        "api_key_optional": True,
        # As the `local` provider (LLM_MAX_RETRIES): llama-server can close a kept-alive
        # connection just as the next request goes out; a retry before the first token covers it.
        "max_retries": 2,
        "timeout_s": 60.0,
        "max_concurrency": SLOTS,
        "extra_body": {"seed": SEED},
        **extra,
    }


async def all_frames(comm, timeout: float = 60) -> list[dict]:
    """Every frame, run.progress included, in arrival order, until the run's final frame."""
    frames = []
    while True:
        frames.append(await recv(comm, timeout))
        if frames[-1]["type"] in ("run.completed", "run.failed", "run.cancelled"):
            return frames


def busy_before_last_delta(frames: list[dict], head: str) -> set[str]:
    """The other tasks that run.progress showed with tokens before `head`'s last delta arrived."""
    last = max(i for i, f in enumerate(frames) if f["type"] == "task.delta" and f["task"] == head)
    return {
        key
        for f in frames[:last]
        if f["type"] == "run.progress"
        for key, state in f["tasks"].items()
        if key != head and state["tokens"] > 0
    }


def idle_slots(server) -> int:
    """How many of the server's slots process nothing."""
    return sum(not slot["is_processing"] for slot in server.get("/slots"))


async def test_the_server_has_four_slots_and_a_greedy_stream_repeats_itself(llama_server):
    """/props reports the slots; the oracle is non-empty, finished, counted and repeatable."""
    assert llama_server.get("/props")["total_slots"] == SLOTS
    first, reasons, usage = await direct(llama_server, "Answer in one sentence.", QUESTION)
    second, _, _ = await direct(llama_server, "Answer in one sentence.", QUESTION)
    assert first.strip(), "the model produced no text"
    assert reasons in (["stop"], ["length"])
    assert usage["prompt_tokens"] > 0 and 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert second == first


async def test_the_provider_streams_exactly_what_a_direct_call_gets_with_its_usage(llama_server):
    """streams.providers' openai kind, same request: the same bytes, and llama-server's usage."""
    provider = build_openai("llama", provider_config(llama_server))
    request = LLMRequest(
        model=MODEL_ALIAS,
        system="Answer briefly.",
        prompt="Name three colours.",
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    try:
        out = await consume(provider, request)
    finally:
        await provider.aclose()
    expected, _, usage = await direct(llama_server, request.system, request.prompt)
    assert out.error is None, out.error
    assert out.text == expected and expected.strip()
    # Cut by max_tokens: `length`, and the server's own counts.
    assert out.usage.finish_reason == "length"
    assert out.usage.completion_tokens == MAX_TOKENS == usage["completion_tokens"]
    assert out.usage.prompt_tokens == usage["prompt_tokens"] > 0


FOUR_PROMPTS = [
    ("Answer in one sentence.", QUESTION),
    ("You rephrase questions.", f"Rephrase this question: {QUESTION}"),
    ("You extract keywords.", f"Give three keywords for: {QUESTION}"),
    ("You summarise questions.", f"Summarise in one line: {QUESTION}"),
]


async def test_four_streams_at_once_each_give_what_it_gives_asked_alone(llama_server):
    """Four provider streams share the four slots: each completes, with a reason and its greedy text."""
    provider = build_openai("llama", provider_config(llama_server))
    requests = [
        LLMRequest(model=MODEL_ALIAS, system=s, prompt=p, max_tokens=32, temperature=0)
        for s, p in FOUR_PROMPTS
    ]
    try:
        outs = await asyncio.gather(*(consume(provider, r) for r in requests))
    finally:
        await provider.aclose()
    for request, out in zip(requests, outs, strict=True):
        assert out.error is None, out.error
        assert out.text.strip() and out.usage.finish_reason in ("stop", "length"), out
        alone, _, _ = await direct(llama_server, request.system, request.prompt, max_tokens=32)
        assert out.text == alone, request.prompt


LLAMA_TASKS = [
    {"key": "task_a", "system": "Answer in one sentence.", "prompt": "{{ input }}"},
    {"key": "task_b", "system": "You summarise questions.", "prompt": "Summarise in five words: {{ input }}"},
    {"key": "task_c", "system": "You extract keywords.", "prompt": "Three keywords for: {{ input }}"},
    {
        "key": "task_d",
        "system": "You suggest follow-up questions.",
        "prompt": "Question: {{ input }}\nAnswer: {{ outputs.task_a }}\nAsk one follow-up question.",
        "depends_on": ["task_a"],
    },
]


@pytest.mark.django_db(transaction=True)
async def test_a_pipeline_run_delivers_each_task_byte_exact_in_order_with_usage_recorded(
    llama_server, redis_layer, make_pipeline, settings, records
):
    """Three tasks at once, one after A, through consumer, orchestrator and Redis: the model's text,
    llama-server's token counts in the stats and in the records."""
    settings.STREAMS_PROVIDERS = {**settings.STREAMS_PROVIDERS, "llama": provider_config(llama_server)}
    providers.reset()
    await make_pipeline(
        "llama_p",
        [
            {**task, "provider": "llama", "model": MODEL_ALIAS, "max_tokens": MAX_TOKENS, "temperature": 0}
            for task in LLAMA_TASKS
        ],
    )
    comm = await connect()
    accepted = await start(comm, "llama_p", text=QUESTION)
    frames = [f for f in await all_frames(comm) if f["type"] != "run.progress"]
    await comm.disconnect()
    await providers.aclose_all()
    await flush_all()

    assert frames[-1]["type"] == "run.completed", frames[-1]
    keys = [task["key"] for task in LLAMA_TASKS]
    assert task_order(frames) == keys
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    completed = {f["task"]: f["stats"] for f in frames if f["type"] == "task.completed"}
    assert list(completed) == keys
    got = texts(frames)
    rows = {
        row.key: row for row in await sync_to_async(list)(TaskRun.objects.filter(run_id=accepted["run_id"]))
    }
    for task in LLAMA_TASKS:
        key = task["key"]
        upstream = {k: got[k] for k in task.get("depends_on", [])}
        prompt = render_prompt(task["prompt"], QUESTION, upstream)
        expected, reasons, usage = await direct(llama_server, task["system"], prompt)
        assert got.get(key, "").strip(), f"{key} delivered no text"
        assert got[key] == expected, key
        stats = completed[key]
        assert stats["finish_reason"] == reasons[-1], key
        assert (stats["prompt_tokens"], stats["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        ), key
        assert stats["tokens"] == usage["completion_tokens"], key
        row = rows[key]
        assert (row.status, row.text, row.finish_reason) == ("completed", got[key], reasons[-1]), key
        assert (row.prompt_tokens, row.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )


@pytest.mark.django_db(transaction=True)
async def test_the_shipped_demo_local_pipeline_runs_its_background_tasks_while_a_streams(
    llama_server, memory_layer, settings
):
    """pipelines/demo-local.json on the `local` provider from settings: the background tasks have
    tokens before A's last delta, and every task completes with text and a finish_reason."""
    local = settings.STREAMS_PROVIDERS["local"]
    assert local["max_concurrency"] == SLOTS
    settings.STREAMS_PROVIDERS = {
        **settings.STREAMS_PROVIDERS,
        "local": {**local, "base_url": llama_server.base_url},
    }
    settings.STREAMS = {**settings.STREAMS, "PROGRESS_INTERVAL_S": 0.2}
    providers.reset()
    data = json.loads((ROOT / "pipelines" / "demo-local.json").read_text(encoding="utf-8"))
    await sync_to_async(import_pipelines)(data)
    tasks = data["pipelines"][0]["tasks"]
    independent = [t["key"] for t in tasks[1:] if not t["depends_on"]]
    assert len(independent) >= 3 and any(t["depends_on"] == ["task_a"] for t in tasks)

    comm = await connect()
    await start(comm, "demo-local", text=LONG_QUESTION)
    frames = await all_frames(comm)
    await comm.disconnect()
    await providers.aclose_all()

    assert frames[-1]["type"] == "run.completed", frames[-1]
    keys = [t["key"] for t in tasks]
    ordered = [f for f in frames if f["type"] != "run.progress"]
    assert task_order(ordered) == keys
    busy = busy_before_last_delta(frames, "task_a")
    assert len(busy & set(independent)) >= 2, busy
    got = texts(ordered)
    completed = {f["task"]: f["stats"] for f in ordered if f["type"] == "task.completed"}
    assert list(completed) == keys
    for key in keys:
        assert got.get(key, "").strip(), f"{key} delivered no text"
        assert completed[key]["finish_reason"] in ("stop", "length"), (key, completed[key])


STORY_TASKS = [
    {
        "key": f"task_{k}",
        "system": "You are a storyteller.",
        "prompt": f"Write a long story about a {animal}.",
    }
    for k, animal in zip("abcd", ("dragon", "cat", "whale", "fox"), strict=True)
]


@pytest.mark.django_db(transaction=True)
async def test_cancelling_a_run_frees_the_slots_for_the_next_run(
    llama_server, memory_layer, make_pipeline, settings
):
    """Four long answers fill the four slots; run.cancel closes them, and the next run's four tasks
    all produce tokens before its first task ends (none waits behind an abandoned answer)."""
    settings.STREAMS_PROVIDERS = {**settings.STREAMS_PROVIDERS, "llama": provider_config(llama_server)}
    settings.STREAMS = {**settings.STREAMS, "PROGRESS_INTERVAL_S": 0.2}
    providers.reset()
    base = {"provider": "llama", "model": MODEL_ALIAS, "temperature": 0}
    await make_pipeline("stories", [{**t, **base, "max_tokens": 1000} for t in STORY_TASKS])
    await make_pipeline("short", [{**t, **base, "max_tokens": 48} for t in STORY_TASKS])
    comm = await connect()
    accepted = await start(comm, "stories", text="go")
    # Until every task has tokens: all four slots are generating.
    while True:
        frame = await recv(comm, timeout=60)
        assert frame["type"] not in ("run.completed", "run.failed"), frame
        if frame["type"] == "run.progress" and all(s["tokens"] > 0 for s in frame["tasks"].values()):
            break
    assert idle_slots(llama_server) == 0
    await send(comm, {"type": "run.cancel", "run_id": accepted["run_id"]})
    frames = await all_frames(comm)
    assert frames[-1]["type"] == "run.cancelled", frames[-1]
    # The server notices a closed stream at its next token: within a few tokens' time.
    for _ in range(100):
        if idle_slots(llama_server) == SLOTS:
            break
        await asyncio.sleep(0.1)
    assert idle_slots(llama_server) == SLOTS, llama_server.get("/slots")

    await start(comm, "short", text="go")
    frames = await all_frames(comm)
    await comm.disconnect()
    await providers.aclose_all()
    assert frames[-1]["type"] == "run.completed", frames[-1]
    assert busy_before_last_delta(frames, "task_a") == {"task_b", "task_c", "task_d"}
    stats = {f["task"]: f["stats"] for f in frames if f["type"] == "task.completed"}
    # 48 tokens of a long story: each cut by max_tokens, reported as `length`.
    assert {key: s["finish_reason"] for key, s in stats.items()} == {t["key"]: "length" for t in STORY_TASKS}
    assert all(s["completion_tokens"] == 48 for s in stats.values()), stats
