"""SSE access rules over real HTTP (streams.serve, real Redis, a local OpenAI server) and in
process."""

import asyncio
import json
import uuid

import httpx
import pytest
import websockets
from django.test import AsyncClient

from tests.conftest import REDIS_URL, _redis_answers
from tests.support.live import LiveServer, free_port, manage, prepare_database
from tests.support.openai_server import OpenAIServer, Script
from tests.test_sse import END_EVENTS, SSEParser, records_for, server_env

pytestmark = pytest.mark.redis

SCRIPTS = {"quick": Script(tokens=5), "slow": Script(tokens=400, tokens_per_s=50)}
PIPELINES = {
    "pipelines": [
        {"slug": slug, "name": slug, "tasks": [{"key": "task_a", "provider": "openai", "model": slug}]}
        for slug in SCRIPTS
    ]
}


@pytest.fixture(scope="module")
def upstream():
    with OpenAIServer(lambda record: SCRIPTS[(record.body or {}).get("model")]) as server:
        yield server


@pytest.fixture(scope="module")
def env(tmp_path_factory, upstream):
    if not _redis_answers(REDIS_URL):
        pytest.fail(f"Redis does not answer at {REDIS_URL}; run the tests with scripts/test")
    database = prepare_database(tmp_path_factory.mktemp("access-sse"), REDIS_URL, PIPELINES)
    # One run in flight per owner; each test is its own owner (a key or a session).
    return server_env(database, upstream, STREAMS_MAX_RUNS_PER_OWNER="1")


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    log = tmp_path_factory.mktemp("access-sse-logs") / "server.log"
    with LiveServer(env, log_path=log) as live:
        live.log_file = log
        yield live


@pytest.fixture
async def http():
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


def new_key(env) -> str:
    """A key from the command: its last line of output."""
    return manage(env, "create_api_key", f"test {uuid.uuid4().hex[:6]}").strip().splitlines()[-1]


async def events_until_end(response: httpx.Response) -> list:
    parser, events = SSEParser(), []
    async with asyncio.timeout(20):
        async for chunk in response.aiter_raw():
            events += parser.feed(chunk)
            if events and events[-1].event in END_EVENTS:
                return events
    return events


def body(text: str, pipeline: str = "quick") -> bytes:
    return json.dumps({"pipeline": pipeline, "input": text}).encode()


async def test_cross_site_and_non_json_posts_are_refused_and_start_nothing(server, upstream, http):
    text = f"refused {uuid.uuid4().hex}"
    other_port = f"http://127.0.0.1:{free_port()}"
    attempts = [
        ({"Content-Type": "text/plain", "Origin": "https://evil.example"}, 403, "forbidden"),
        ({"Content-Type": "application/json", "Origin": "https://evil.example"}, 403, "forbidden"),
        ({"Content-Type": "application/json", "Origin": other_port}, 403, "forbidden"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403, "forbidden"),
        ({"Content-Type": "text/plain"}, 415, "bad_request"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "bad_request"),
        ({}, 415, "bad_request"),
    ]
    for headers, status, code in attempts:
        response = await http.post(server.url + "/stream", content=body(text), headers=headers)
        assert response.status_code == status, (headers, response.status_code)
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == code
    await asyncio.sleep(0.5)
    assert records_for(upstream, text) == []
    # The page's own origin (scheme, host and port) is fine.
    async with http.stream(
        "POST",
        server.url + "/stream",
        content=body(text),
        headers={"Content-Type": "application/json", "Origin": server.url, "Sec-Fetch-Site": "same-origin"},
    ) as response:
        assert response.status_code == 200
        assert (await events_until_end(response))[-1].event == "run.completed"
    assert len(records_for(upstream, text)) == 1


async def test_a_key_needs_no_origin_and_a_wrong_key_gets_401(server, env, http):
    key = new_key(env)
    async with http.stream(
        "POST",
        server.url + "/stream",
        json={"pipeline": "quick", "input": "k"},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.status_code == 200
        events = await events_until_end(response)
    assert events[-1].event == "run.completed"
    # A run started with the key is the key's: it resumes with the key and with nothing else.
    run_id = events[0].json["run_id"]
    resumed = await http.get(f"{server.url}/stream/{run_id}", headers={"Authorization": f"Bearer {key}"})
    assert resumed.status_code == 200 and "run.completed" in resumed.text
    assert (await http.get(f"{server.url}/stream/{run_id}")).status_code == 404
    for wrong in (key[:-3] + "abc", "nonsense", "strm_"):
        response = await http.post(
            server.url + "/stream",
            json={"pipeline": "quick", "input": "k"},
            headers={"Authorization": f"Bearer {wrong}"},
        )
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "unauthorized"
    assert key[18:] not in server.log_file.read_text()


async def session(http, server) -> dict[str, str]:
    """A fresh session from the chat page: an owner of its own (key and user ids repeat across test
    databases, while the quota counts in Redis may outlive one for a lease)."""
    response = await http.get(server.url + "/", headers={"Cookie": ""})
    return {"Cookie": f"sessionid={response.cookies['sessionid']}"}


async def test_past_the_owner_cap_the_answer_is_429_with_retry_after_until_a_run_ends(server, http):
    headers = await session(http, server)
    first = await http.send(
        http.build_request(
            "POST", server.url + "/stream", json={"pipeline": "slow", "input": "1"}, headers=headers
        ),
        stream=True,
    )
    assert first.status_code == 200
    chunks = first.aiter_raw()  # kept: an iterator dropped half-read closes the response
    await anext(chunks)  # run.accepted: the run is in flight
    refused = await http.post(
        server.url + "/stream", json={"pipeline": "quick", "input": "2"}, headers=headers
    )
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "too_many_runs"
    # Someone else is not affected.
    other = await http.post(
        server.url + "/stream", json={"pipeline": "quick", "input": "3"}, headers=await session(http, server)
    )
    assert other.status_code == 200
    # Closing the stream cancels the run, and its end frees the slot.
    await first.aclose()
    for _ in range(50):
        again = await http.post(
            server.url + "/stream", json={"pipeline": "quick", "input": "4"}, headers=headers
        )
        if again.status_code != 429:
            break
        await asyncio.sleep(0.1)
    assert again.status_code == 200 and "run.completed" in again.text


async def test_a_websocket_with_a_key_needs_no_origin_and_another_port_is_refused(server, env):
    key = new_key(env)
    async with websockets.connect(
        server.ws_url, additional_headers={"Authorization": f"Bearer {key}"}
    ) as sock:
        await sock.send(json.dumps({"type": "ping", "n": 1}))
        assert json.loads(await sock.recv()) == {"type": "pong", "n": 1}
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(server.ws_url, origin=f"http://127.0.0.1:{free_port()}")
    assert info.value.response.status_code == 403
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(server.ws_url, additional_headers={"Authorization": "Bearer strm_wrong"})


# --- in process ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_runs_per_minute_answer_429_with_the_time_until_the_window_has_room(
    memory_layer, scripted_provider, make_pipeline, settings
):
    settings.STREAMS = {**settings.STREAMS, "MAX_RUNS_PER_OWNER": 0, "MAX_RUNS_PER_MINUTE": 1}
    slug = await make_pipeline("one", [{"key": "a", "provider": "scripted", "model": "fast:2"}])
    client = AsyncClient()
    data = {"pipeline": slug, "input": "x"}
    first = await client.post("/stream", data, content_type="application/json")
    assert first.status_code == 200
    second = await client.post("/stream", data, content_type="application/json")
    assert second.status_code == 429
    assert 50 <= int(second["Retry-After"]) <= 60
    assert json.loads(second.content)["error"]["code"] == "rate_limited"
