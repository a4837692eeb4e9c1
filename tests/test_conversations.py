"""Conversations through the WebSocket: the second turn reaches the provider with the first in it."""

import pytest

from streams.records.writer import flush_all
from tests.support.scripted import ScriptedProvider
from tests.wsclient import connect, recv, send, start, texts, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True)]


async def turn(comm, pipeline: str, text: str, conversation: str | None = None) -> tuple[dict, list[dict]]:
    """One run.start and its frames."""
    extra = {"conversation": conversation} if conversation else {}
    accepted = await start(comm, pipeline, text, **extra)
    return accepted, await until_run_end(comm)


async def test_the_second_turn_reaches_the_provider_with_the_first_turn_as_text_and_as_messages(
    memory_layer, scripted_provider, make_pipeline, records
):
    await make_pipeline(
        "chat",
        [
            {"key": "a", "provider": "scripted", "model": "echo", "prompt": "{{ history }}|{{ input }}"},
            {"key": "b", "provider": "scripted", "model": "fast:2", "system": "b", "history_messages": True},
        ],
    )
    comm = await connect()
    first, frames = await turn(comm, "chat", "What is 2+2?")
    assert frames[-1]["type"] == "run.completed"
    assert first["conversation"]
    first_answer = texts(frames)["a"]
    assert first_answer == "|What is 2+2?"  # no history yet
    await flush_all()

    second, frames = await turn(comm, "chat", "And 3+3?", first["conversation"])
    assert second["conversation"] == first["conversation"]
    assert second["run_id"] != first["run_id"]
    assert texts(frames)["a"] == f"User: What is 2+2?\nAssistant: {first_answer}|And 3+3?"
    b_calls = [c for c in scripted_provider.calls if c.model == "fast:2"]
    assert [c.history for c in b_calls] == [
        (),
        ({"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": first_answer}),
    ]
    assert texts(frames)["b"] == "".join(ScriptedProvider.tokens("fast:2", "b"))
    await comm.disconnect()


async def test_a_stranger_cannot_continue_a_conversation(
    memory_layer, scripted_provider, make_pipeline, records
):
    await make_pipeline("chat", [{"key": "a", "provider": "scripted", "model": "fast:2"}])
    owner = await connect()
    accepted, _ = await turn(owner, "chat", "mine")
    await flush_all()
    stranger = await connect()  # another connection without a session: another owner
    await send(
        stranger,
        {
            "type": "run.start",
            "pipeline": "chat",
            "input": "x",
            "conversation": accepted["conversation"],
            "ref": "r1",
        },
    )
    error = await recv(stranger)
    assert (error["type"], error["code"], error["ref"]) == ("error", "unknown_conversation", "r1")
    # The connection is still usable, and a new conversation is somebody else's.
    other, frames = await turn(stranger, "chat", "new")
    assert other["conversation"] != accepted["conversation"] and frames[-1]["type"] == "run.completed"
    await owner.disconnect()
    await stranger.disconnect()


async def test_a_task_whose_provider_fails_before_its_first_token_is_served_by_its_fallback(
    memory_layer, scripted_provider, make_pipeline, records
):
    await make_pipeline(
        "fb",
        [
            {
                "key": "a",
                "provider": "scripted",
                "model": "fail:0",
                "system": "a",
                "fallbacks": [["scripted", "fast:3"]],
            }
        ],
    )
    comm = await connect()
    _, frames = await turn(comm, "fb", "hi")
    await comm.disconnect()
    assert frames[-1]["type"] == "run.completed"
    assert texts(frames)["a"] == "".join(ScriptedProvider.tokens("fast:3", "a"))
    stats = next(f["stats"] for f in frames if f["type"] == "task.completed")
    assert (stats["provider"], stats["model"], stats["fallbacks_tried"]) == ("scripted", "fast:3", 1)
