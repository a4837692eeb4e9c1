"""Protocol v3, versions of a turn, on both transports with real Redis and a real database:
`replaces` is echoed, a run of another conversation or owner is an unknown_run, history
follows the run's own branch, and the API lists versions and answers ?branch=."""

import json

import pytest
from django.test import AsyncClient
from django.urls import reverse

from streams.records.writer import flush_all
from tests.test_sse import parse_all
from tests.wsclient import connect, recv, send, start, texts, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

# "echo" answers with its prompt: an answer shows exactly the history the task was given.
CHAT = [
    {"key": "a", "provider": "scripted", "model": "echo", "prompt": "{{ history }}|{{ input }}"},
    {"key": "b", "provider": "scripted", "model": "fast:1", "system": "b", "history_messages": True},
]


def said(*turns: tuple[str, str]) -> str:
    """`{{ history }}` of these (input, answer) turns."""
    return "\n\n".join(f"User: {q}\nAssistant: {a}" for q, a in turns)


def asked_with_history(provider) -> list[list[str]]:
    """The user messages that task b (history as chat messages) was given, per run."""
    return [
        [m["content"] for m in call.history if m["role"] == "user"]
        for call in provider.calls
        if call.model == "fast:1"
    ]


@pytest.fixture
async def chat(redis_layer, scripted_provider, make_pipeline):
    return await make_pipeline("chat", CHAT)


async def browser() -> tuple[AsyncClient, tuple[bytes, bytes]]:
    """An HTTP client with a session from the chat page, and the same session as a cookie header."""
    client = AsyncClient()
    await client.get(reverse("chat"))
    return client, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def ws_turn(comm, text: str, **fields) -> tuple[dict, str]:
    """One run.start over the WebSocket: its run.accepted and the text of task a."""
    accepted = await start(comm, "chat", text, **fields)
    frames = await until_run_end(comm)
    assert frames[-1]["type"] == "run.completed", frames[-1]
    return accepted, texts(frames)["a"]


async def api(client: AsyncClient, cid: str, **query) -> tuple[int, dict]:
    response = await client.get(reverse("conversation", args=[cid]), query)
    return response.status_code, response.json()


async def test_ws_a_new_version_is_echoed_and_each_turn_sees_only_its_own_branch(chat, scripted_provider):
    client, cookie = await browser()
    comm = await connect([cookie])
    one, a1 = await ws_turn(comm, "Q1")
    cid = one["conversation"]
    assert (one["replaces"], one["after"], a1) == (None, None, "|Q1")
    two, a2 = await ws_turn(comm, "Q2", conversation=cid)
    assert (two["replaces"], two["after"]) == (None, one["run_id"])

    # Edit Q2: a new version of turn 2; the version it replaces is not in its history.
    edit, ae = await ws_turn(comm, "Q2 edited", conversation=cid, replaces=two["run_id"])
    assert (edit["replaces"], edit["after"]) == (two["run_id"], one["run_id"])
    assert ae == said(("Q1", a1)) + "|Q2 edited"
    # The next turn follows the current branch: Q1, then the edited Q2, not the first Q2.
    three, a3 = await ws_turn(comm, "Q3", conversation=cid)
    assert three["after"] == edit["run_id"]
    assert a3 == said(("Q1", a1), ("Q2 edited", ae)) + "|Q3"
    # A message sent while the first version is shown continues that version's branch.
    old, ao = await ws_turn(comm, "Q3 again", conversation=cid, after=two["run_id"])
    assert (old["replaces"], old["after"]) == (None, two["run_id"])
    assert ao == said(("Q1", a1), ("Q2", a2)) + "|Q3 again"
    # Regenerate (same input, replaces): a third version of turn 3 of that branch.
    regen, ar = await ws_turn(comm, "Q3 again", conversation=cid, replaces=old["run_id"])
    assert (regen["replaces"], regen["after"], ar) == (old["run_id"], two["run_id"], ao)
    # History as chat messages follows the branch in the same way.
    assert asked_with_history(scripted_provider) == [
        [],
        ["Q1"],
        ["Q1"],
        ["Q1", "Q2 edited"],
        ["Q1", "Q2"],
        ["Q1", "Q2"],
    ]
    await comm.disconnect()

    assert await flush_all()
    runs = {"one": one, "two": two, "edit": edit, "three": three, "old": old, "regen": regen}
    ids = {name: accepted["run_id"] for name, accepted in runs.items()}
    status, body = await api(client, cid)
    assert status == 200
    # The current branch runs through the newest run (the regenerated one).
    assert [t["run_id"] for t in body["turns"]] == [ids["one"], ids["two"], ids["regen"]]
    assert [t["versions"] for t in body["turns"]] == [
        [ids["one"]],
        [ids["two"], ids["edit"]],
        [ids["old"], ids["regen"]],
    ]
    assert [t["input"] for t in body["turns"]] == ["Q1", "Q2", "Q3 again"]
    assert body["turns"][2]["tasks"][0]["text"] == ar

    status, body = await api(client, cid, branch=ids["edit"])
    assert status == 200
    assert [t["run_id"] for t in body["turns"]] == [ids["one"], ids["edit"], ids["three"]]
    assert [t["versions"] for t in body["turns"]] == [[ids["one"]], [ids["two"], ids["edit"]], [ids["three"]]]
    assert body["turns"][2]["tasks"][0]["text"] == a3
    # Through the older version of the last turn; through the first turn: its newest descendant.
    assert [t["run_id"] for t in (await api(client, cid, branch=ids["old"]))[1]["turns"]][-1] == ids["old"]
    assert [t["run_id"] for t in (await api(client, cid, branch=ids["one"]))[1]["turns"]][-1] == ids["regen"]


async def test_api_a_branch_that_is_not_a_run_of_the_conversation_is_unknown_run(chat):
    client, cookie = await browser()
    comm = await connect([cookie])
    mine, _ = await ws_turn(comm, "mine")
    other, _ = await ws_turn(comm, "another conversation")
    await comm.disconnect()
    assert await flush_all()
    for branch in (other["run_id"], "0" * 32, "../x"):
        status, body = await api(client, mine["conversation"], branch=branch)
        assert (status, body["error"]["code"]) == (404, "unknown_run"), branch
    # A stranger still learns nothing about the conversation itself.
    stranger, _ = await browser()
    assert (await stranger.get(reverse("conversation", args=[mine["conversation"]]))).status_code == 404


async def test_ws_replaces_or_after_naming_another_conversations_or_owners_run_is_unknown_run(chat):
    owner = await connect()
    mine, _ = await ws_turn(owner, "mine")
    elsewhere, _ = await ws_turn(owner, "another conversation of mine")
    stranger = await connect()  # another connection without a session: another owner
    theirs, _ = await ws_turn(stranger, "theirs")
    cases = [
        (owner, mine["conversation"], "replaces", elsewhere["run_id"]),
        (owner, mine["conversation"], "after", elsewhere["run_id"]),
        (stranger, theirs["conversation"], "replaces", mine["run_id"]),
        (stranger, theirs["conversation"], "after", mine["run_id"]),
    ]
    for i, (comm, cid, field, run_id) in enumerate(cases):
        frame = {"type": "run.start", "pipeline": "chat", "input": "x", "conversation": cid, "ref": f"r{i}"}
        await send(comm, {**frame, field: run_id})
        error = await recv(comm)
        assert (error["type"], error["code"], error["ref"]) == ("error", "unknown_run", f"r{i}"), error
        assert run_id in error["message"] and "conversation" in error["message"]
    # Both connections are kept, and their conversations go on.
    for comm, cid in ((owner, mine["conversation"]), (stranger, theirs["conversation"])):
        accepted, _ = await ws_turn(comm, "still here", conversation=cid)
        assert accepted["conversation"] == cid
        await comm.disconnect()


async def sse_turn(client: AsyncClient, text: str, **fields) -> tuple[dict, str]:
    """POST /stream in process: its run.accepted and the text of task a."""
    response = await client.post(
        "/stream", {"pipeline": "chat", "input": text, **fields}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    events = parse_all(b"".join([chunk async for chunk in response.streaming_content]))
    assert events[0].event == "run.accepted" and events[-1].event == "run.completed", events[-1]
    return events[0].json, "".join(e.data for e in events if e.event == "a")


async def sse_refusal(client: AsyncClient, **fields) -> tuple[int, dict]:
    response = await client.post(
        "/stream", {"pipeline": "chat", "input": "x", **fields}, content_type="application/json"
    )
    return response.status_code, json.loads(response.content)["error"]


async def test_sse_replaces_is_echoed_history_follows_the_branch_and_foreign_runs_are_unknown(chat):
    client, _ = await browser()
    one, a1 = await sse_turn(client, "Q1")
    cid = one["conversation"]
    two, a2 = await sse_turn(client, "Q2", conversation=cid)
    edit, ae = await sse_turn(client, "Q2 edited", conversation=cid, replaces=two["run_id"])
    assert (edit["replaces"], edit["after"]) == (two["run_id"], one["run_id"])
    assert ae == said(("Q1", a1)) + "|Q2 edited"
    _, a3 = await sse_turn(client, "Q3", conversation=cid)
    assert a3 == said(("Q1", a1), ("Q2 edited", ae)) + "|Q3"
    old, ao = await sse_turn(client, "Q3 again", conversation=cid, after=two["run_id"])
    assert old["after"] == two["run_id"] and ao == said(("Q1", a1), ("Q2", a2)) + "|Q3 again"

    other, _ = await sse_turn(client, "another conversation")
    stranger, _ = await browser()
    theirs, _ = await sse_turn(stranger, "theirs")
    for who, cid_, fields in (
        (client, cid, {"replaces": other["run_id"]}),
        (client, cid, {"after": other["run_id"]}),
        (stranger, theirs["conversation"], {"replaces": two["run_id"]}),
        (stranger, theirs["conversation"], {"after": two["run_id"]}),
    ):
        status, error = await sse_refusal(who, conversation=cid_, **fields)
        assert (status, error["code"]) == (404, "unknown_run"), fields
    assert await sse_refusal(client, replaces=two["run_id"]) == (
        400,
        {"code": "bad_request", "message": "run.start: replaces needs conversation"},
    )
    assert (await sse_refusal(client, conversation=cid, replaces="a", after="b"))[1]["code"] == "bad_request"
    # Refused starts cost nothing: the conversation goes on.
    again, _ = await sse_turn(client, "Q4", conversation=cid)
    assert again["after"] == old["run_id"]


def test_the_migration_makes_each_recorded_conversation_one_branch(transactional_db):
    """Runs recorded before versions existed follow one another in their conversation."""
    from datetime import UTC, datetime, timedelta

    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("streams", "0006_api_keys")])
    apps = executor.loader.project_state([("streams", "0006_api_keys")]).apps
    Conversation, Run = apps.get_model("streams", "Conversation"), apps.get_model("streams", "Run")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for cid, runs in (("c1", ["r1", "r2", "r3"]), ("c2", ["s1", "s2"])):
        Conversation.objects.create(id=cid, owner="user:1")
        for i, run_id in enumerate(reversed(runs)):  # written out of order on purpose
            started = t0 + timedelta(seconds=len(runs) - i)
            Run.objects.create(run_id=run_id, conversation_id=cid, owner="user:1", started_at=started)
    Run.objects.create(run_id="alone", owner="user:1", started_at=t0)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    from streams.models import Run as Current

    parents = dict(Current.objects.values_list("run_id", "parent"))
    assert parents == {"r1": "", "r2": "r1", "r3": "r2", "s1": "", "s2": "s1", "alone": ""}
