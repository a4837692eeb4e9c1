"""Conversations: ownership (stranger: unknown_conversation / 404), bounded history, the JSON API."""

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from streams.access.owners import session_owner
from streams.models import Conversation, Run
from streams.pipelines.prompts import render_prompt, uses_history
from streams.records.conversations import UnknownConversation, load_history, open_conversation, start_turn
from streams.records.recorder import RunRecorder, now
from streams.records.writer import flush_all
from tests.support.records import recorded_run, spec_of

pytestmark = pytest.mark.usefixtures("records")

# "echo" answers with its prompt, so an answer is exactly the rendered template.
ECHO = spec_of({"key": "answer", "title": "Answer", "model": "echo", "prompt": "re: {{ input }}"})


async def converse(owner: str, inputs: list[str], spec=ECHO) -> str:
    """Run one turn per input in a new conversation of `owner`; return its id."""
    cid = await open_conversation(owner, None)
    for text in inputs:
        await recorded_run(spec, text, owner=owner, conversation=cid)
    return cid


async def test_a_stranger_cannot_continue_a_conversation():
    """Another owner's id and a made-up one get the same refusal; the owner continues."""
    cid = await converse("user:1", ["hi"])
    assert await flush_all()
    assert await open_conversation("user:1", cid) == cid
    refusals = []
    for owner, conversation in (("user:2", cid), ("user:1", "no-such-conversation"), ("user:2", "x" * 65)):
        with pytest.raises(UnknownConversation) as caught:
            await open_conversation(owner, conversation)
        refusals.append((caught.value.code, caught.value.message))
    assert refusals == [("unknown_conversation", "no such conversation")] * 3


async def test_a_new_conversation_is_its_owners_once_its_first_run_started():
    """The id of a new conversation is usable for its next turn before and after it is written."""
    cid = await open_conversation("session:abc", None)
    await recorded_run(ECHO, "first", owner="session:abc", conversation=cid)
    assert await open_conversation("session:abc", cid) == cid  # from memory or the database
    assert await flush_all()
    assert await open_conversation("session:abc", cid) == cid  # from the database
    with pytest.raises(UnknownConversation):
        await open_conversation("session:other", cid)


async def test_history_is_the_earlier_turns_oldest_first_within_the_bounds(settings):
    """Turn count and character bounds keep the newest whole turns."""
    cid = await converse("user:1", [f"q{i}" for i in range(5)])
    assert await flush_all()
    settings.STREAMS = {**settings.STREAMS, "HISTORY_MAX_TURNS": 3, "HISTORY_MAX_CHARS": 10_000}
    history = await load_history(cid)
    assert history.turns == (("q2", "re: q2"), ("q3", "re: q3"), ("q4", "re: q4"))
    assert (
        history.text
        == "User: q2\nAssistant: re: q2\n\nUser: q3\nAssistant: re: q3\n\nUser: q4\nAssistant: re: q4"
    )
    assert [m["role"] for m in history.messages] == ["user", "assistant"] * 3
    assert history.messages[-1] == {"role": "assistant", "content": "re: q4"}

    settings.STREAMS = {**settings.STREAMS, "HISTORY_MAX_CHARS": 2 * len("q0re: q0")}
    assert (await load_history(cid)).turns == (("q3", "re: q3"), ("q4", "re: q4"))
    settings.STREAMS = {**settings.STREAMS, "HISTORY_MAX_CHARS": 3}
    assert (await load_history(cid)).turns == ()


async def test_the_second_turn_renders_the_first_in_its_prompt():
    """`{{ history }}` of turn 2 holds turn 1's input and answer; a cancelled turn counts with its text."""
    spec = spec_of({"key": "answer", "model": "echo", "prompt": "{{ history }}|{{ input }}"})
    assert uses_history(spec.tasks[0].prompt) and not uses_history("{{ input }} history")
    cid = await converse("user:1", ["first question"], spec)
    turn = await start_turn("user:1", cid)
    assert turn.conversation == cid
    assert turn.history.turns == (("first question", "|first question"),)
    prompt = render_prompt(spec.tasks[0].prompt, "second", {}, history=turn.history.text)
    assert prompt == "User: first question\nAssistant: |first question|second"

    paced = spec_of({"key": "answer", "model": "paced:200:0.005", "system": "P"})
    await recorded_run(paced, "stopped one", owner="user:1", conversation=cid, cancel_after_deltas=2)
    _, (question, partial) = (await load_history(cid)).turns
    assert question == "stopped one" and partial and len(partial) < 200 * 3


async def test_history_includes_turns_the_writer_could_not_write_yet(database_down):
    """The runs of this process count at once, even while the records database is down."""
    database_down(True)
    cid = await converse("user:7", ["remember me"])
    turn = await start_turn("user:7", cid)
    assert turn.history.turns == (("remember me", "re: remember me"),)
    database_down(False)


async def test_the_owner_reads_the_conversation_and_a_stranger_gets_404(async_client, client):
    """GET /api/conversations/<id>: the PROTOCOL.md shape for the owner, 404 for anyone else."""
    await async_client.get(reverse("chat"))  # the chat page gives the visitor a session
    owner = session_owner(async_client.cookies["sessionid"].value)
    cid = await converse(owner, ["one", "two"])
    assert await flush_all()

    response = await async_client.get(reverse("conversation", args=[cid]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "turns"} and body["id"] == cid
    assert [t["input"] for t in body["turns"]] == ["one", "two"]
    for turn in body["turns"]:
        assert set(turn) == {"run_id", "pipeline", "input", "status", "tasks", "versions"}
        assert turn["versions"] == [turn["run_id"]]  # never replaced: one version
        assert turn["status"] == "completed" and turn["pipeline"] == "rec"
        assert turn["tasks"] == [
            {
                "key": "answer",
                "title": "Answer",
                "status": "completed",
                "text": "re: " + turn["input"],
                "finish_reason": None,
                "error": None,
            }
        ]

    listing = (await async_client.get(reverse("conversations"))).json()["conversations"]
    assert [(c["id"], c["title"]) for c in listing] == [(cid, "one")]

    stranger = await database_sync_to_async(client.get)(reverse("conversation", args=[cid]))
    assert stranger.status_code == 404
    others = await database_sync_to_async(client.get)(reverse("conversations"))
    assert others.json() == {"conversations": []}


async def test_the_api_gives_a_length_cut_and_a_failed_tasks_error(async_client):
    """A reloaded chat page shows what the live one did: finish_reason and the error of a failure."""
    await async_client.get(reverse("chat"))
    owner = session_owner(async_client.cookies["sessionid"].value)
    spec = spec_of(
        {"key": "cut", "title": "Cut", "model": "cut:3"},
        {"key": "bad", "title": "Bad", "model": "fail:2"},
    )
    cid = await converse(owner, ["go"], spec)
    assert await flush_all()

    (turn,) = (await async_client.get(reverse("conversation", args=[cid]))).json()["turns"]
    cut, bad = turn["tasks"]
    assert (cut["status"], cut["finish_reason"], cut["error"]) == ("completed", "length", None)
    assert cut["text"] == "0 1 2 "
    assert (bad["status"], bad["finish_reason"]) == ("failed", None)
    assert bad["error"] == {"code": "upstream_error", "message": "scripted failure"}


async def test_a_conversation_was_last_used_when_its_latest_run_started():
    """`updated` follows the newest run's start, and a row written late never moves it back."""
    cid = await converse("user:1", ["first"])
    assert await flush_all()
    late = await recorded_run(ECHO, "second", owner="user:1", conversation=cid)
    assert await flush_all()
    get = database_sync_to_async(lambda: Conversation.objects.get(pk=cid).updated)
    newest = await database_sync_to_async(lambda: Run.objects.get(pk=late[0].run_id).started_at)()
    assert await get() == newest
    # A run that started earlier but is written now (another instance's, say) leaves it alone.
    older = RunRecorder(
        "older-run", owner="user:1", spec=ECHO, user_input="x", conversation=cid, started_at=now() - 60
    )
    older.run_ended("completed")
    assert await flush_all()
    assert await get() == newest
