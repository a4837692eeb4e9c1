"""The SSE transport read as a plain HTTP client reads it: a real server (streams.serve), real
Redis, a local OpenAI server."""

import asyncio
import codecs
import itertools
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.sse import encode_event, encode_frame
from tests.conftest import REDIS_URL, _redis_answers
from tests.support.live import LiveServer, app_env, prepare_database
from tests.support.openai_server import OpenAIServer, RequestRecord, Script

pytestmark = pytest.mark.redis

HEARTBEAT_S = 0.2
END_EVENTS = {"run.completed", "run.failed", "run.cancelled"}
# Texts whose line breaks, blank lines, spaces and non-ASCII characters SSE must carry exactly.
EXACT_A = [
    "Hello",
    " world\n",
    "\n",
    "  indented: yes\n",
    "é→😀",
    "\n\n",
    "data: not a field\n",
    ": nor a comment",
]
EXACT_B = ["line one\n", "line two\n"]
EXACT_C = ["\n", "id: 7\nevent: x", " ", "\n"]
# Every model name of the pipelines below, and how the local OpenAI server answers it.
SCRIPTS = {
    "exact-a": Script(chunks=EXACT_A, tokens_per_s=40),
    "exact-b": Script(chunks=EXACT_B),
    "exact-c": Script(chunks=EXACT_C),
    "crlf": Script(chunks=["one\r\n", "two\rthree", "\r\n"]),
    "slow": Script(chunks=["late", " answer"], ttft_s=1.0),
    "long": Script(tokens=400, tokens_per_s=40),
    "resumable": Script(tokens=40, tokens_per_s=40),
}


def tasks(*models: str) -> list[dict]:
    """Independent openai tasks task_a, task_b, ... with the given models; the prompt is the input."""
    return [
        {"key": f"task_{chr(ord('a') + i)}", "title": model, "provider": "openai", "model": model}
        for i, model in enumerate(models)
    ]


PIPELINES = {
    "pipelines": [
        {"slug": "exact", "name": "Exact", "tasks": tasks("exact-a", "exact-b", "exact-c")},
        {"slug": "crlf", "name": "CRLF", "tasks": tasks("crlf")},
        {"slug": "slow", "name": "Slow", "tasks": tasks("slow")},
        {"slug": "long", "name": "Long", "tasks": tasks("long", "long", "long", "long")},
        {"slug": "resumable", "name": "Resumable", "tasks": tasks("resumable", "resumable", "resumable")},
    ]
}


# --- a standard SSE parser (WHATWG HTML, "Interpreting an event stream") --------------------


@dataclass
class Event:
    """One dispatched event, with the id field it carried (None: it had none)."""

    event: str
    data: str
    id: str | None
    at: float = 0.0

    @property
    def json(self) -> dict:
        """The data as JSON."""
        return json.loads(self.data)


@dataclass
class SSEParser:
    """Feeds bytes, returns events and comments as a browser's EventSource would see them."""

    comments: list[tuple[float, str]] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")()
    )
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None

    def feed(self, chunk: bytes, at: float = 0.0, final: bool = False) -> list[Event]:
        """Events completed by this chunk."""
        self._buffer += self._decoder.decode(chunk, final)
        events: list[Event] = []
        while True:
            match = re.search(r"\r\n|\r|\n", self._buffer)
            # A CR at the end may be the first half of a CRLF: wait for the next chunk.
            if match is None or (match.group() == "\r" and match.end() == len(self._buffer) and not final):
                return events
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            self._line(line, at, events)

    def _line(self, line: str, at: float, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append(Event(self._event or "message", "\n".join(self._data), self._id, at))
            self._data, self._event, self._id = [], "", None
            return
        if line.startswith(":"):
            self.comments.append((at, line[1:].strip()))
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value


def parse_all(raw: bytes) -> list[Event]:
    """Every event of a complete stream."""
    return SSEParser().feed(raw, final=True)


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream():
    """The local OpenAI-compatible server, answering each model per SCRIPTS."""
    with OpenAIServer(lambda record: SCRIPTS[(record.body or {}).get("model")]) as server:
        yield server


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """A migrated database with PIPELINES, shared by the servers of this module."""
    if not _redis_answers(REDIS_URL):
        pytest.fail(f"Redis does not answer at {REDIS_URL}; run the tests with scripts/test")
    return prepare_database(tmp_path_factory.mktemp("sse"), REDIS_URL, PIPELINES)


def server_env(database: str, upstream: OpenAIServer, **extra: str) -> dict[str, str]:
    """The app's environment: the local OpenAI server, a fast heartbeat, no retries."""
    return app_env(
        database,
        REDIS_URL,
        OPENAI_BASE_URL=upstream.base_url,
        OPENAI_API_KEY="test",
        LLM_MAX_RETRIES="0",
        STREAMS_SSE_HEARTBEAT_S=str(HEARTBEAT_S),
        **extra,
    )


@pytest.fixture(scope="module")
def server(database, upstream, tmp_path_factory):
    """The app with the default resume grace of 0: closing a stream cancels its run at once."""
    log = tmp_path_factory.mktemp("sse-logs") / "server.log"
    with LiveServer(server_env(database, upstream), log_path=log) as live:
        yield live


@pytest.fixture(scope="module")
def graceful(database, upstream, tmp_path_factory):
    """A second instance whose runs outlive a closed stream for 10 s, waiting to be resumed."""
    log = tmp_path_factory.mktemp("sse-logs") / "graceful.log"
    with LiveServer(server_env(database, upstream, STREAMS_RESUME_GRACE_S="10"), log_path=log) as live:
        yield live


@pytest.fixture
async def client():
    """An HTTP client with bounded timeouts."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as http:
        yield http


async def session_cookie(http: httpx.AsyncClient, server: LiveServer) -> dict[str, str]:
    """A fresh session from the chat page, as a Cookie header."""
    response = await http.get(server.url + "/", headers={"Cookie": ""})
    response.raise_for_status()
    return {"Cookie": f"sessionid={response.cookies['sessionid']}"}


class Stream:
    """An open SSE response read event by event."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self.parser = SSEParser()
        self._chunks = response.aiter_raw()
        self._pending: list[Event] = []

    async def next(self, timeout: float = 10.0) -> Event:
        """The next event."""
        async with asyncio.timeout(timeout):
            while not self._pending:
                chunk = await anext(self._chunks)
                self._pending += self.parser.feed(chunk, time.monotonic())
        return self._pending.pop(0)

    async def until_end(self, timeout: float = 20.0) -> list[Event]:
        """Events up to the run's final one."""
        events = []
        async with asyncio.timeout(timeout):
            while not events or events[-1].event not in END_EVENTS:
                events.append(await self.next(timeout))
        return events


async def open_stream(http: httpx.AsyncClient, method: str, url: str, **kwargs) -> Stream:
    """Send the request and return the open stream (the caller closes its response)."""
    response = await http.send(http.build_request(method, url, **kwargs), stream=True)
    assert response.status_code == 200, (response.status_code, await response.aread())
    return Stream(response)


async def start(http: httpx.AsyncClient, server: LiveServer, pipeline: str, text: str, **kwargs) -> Stream:
    """POST /stream."""
    return await open_stream(
        http, "POST", server.url + "/stream", json={"pipeline": pipeline, "input": text}, **kwargs
    )


def ordered(events: list[Event]) -> list[Event]:
    """The events that carry a seq (everything but run.accepted)."""
    return [e for e in events if e.id is not None]


def texts(events: list[Event]) -> dict[str, str]:
    """Each task's text: the data of the events named after it, concatenated."""
    out: dict[str, str] = {}
    for e in events:
        if e.event.startswith("task_"):
            out[e.event] = out.get(e.event, "") + e.data
    return out


def records_for(upstream: OpenAIServer, text: str) -> list[RequestRecord]:
    """The upstream requests of one run, recognised by its unique input."""
    return [r for r in upstream.requests if r.prompt == text]


def sent_by_upstream(upstream: OpenAIServer, text: str, models: dict[str, str]) -> dict[str, str]:
    """What the upstream server sent for each task of a run (task key -> text)."""
    by_model = {}
    for record in records_for(upstream, text):
        by_model.setdefault(record.body["model"], []).append(record.text_sent)
    return {key: by_model[model].pop(0) for key, model in models.items()}


def unique(label: str) -> str:
    """An input no other test uses, so the upstream's records of a run can be told apart."""
    return f"{label} {uuid.uuid4().hex}"


# --- encoding (pure) -------------------------------------------------------------------------


@given(st.text())
def test_any_text_round_trips_through_a_standard_parser_with_cr_read_as_lf(text):
    events = parse_all(encode_event("task_a", text, 3))
    assert len(events) == 1
    assert events[0].event == "task_a" and events[0].id == "3"
    # SSE cannot carry CR: CRLF and a lone CR become LF; nothing else changes.
    assert events[0].data == re.sub(r"\r\n|\r", "\n", text)


def test_lifecycle_frames_are_one_line_of_json_named_after_their_type():
    frame = {
        "type": "task.failed",
        "run_id": "r",
        "seq": 9,
        "task": "task_t",
        "error": {"code": "x", "message": "a\nb"},
    }
    raw = encode_frame(frame)
    assert raw.count(b"\n") == 4  # id, event, data, blank line
    (event,) = parse_all(raw)
    assert (event.event, event.id, event.json) == ("task.failed", "9", frame)


# --- the endpoint ----------------------------------------------------------------------------


async def test_post_streams_every_task_in_delivery_order_with_gap_free_ids_and_exact_text(
    server, upstream, client
):
    text = unique("exact")
    stream = await start(client, server, "exact", text)
    try:
        headers = stream.response.headers
        accepted = await stream.next()
        events = await stream.until_end()
    finally:
        await stream.response.aclose()

    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert accepted.event == "run.accepted" and accepted.id is None
    assert accepted.json["run_id"] == headers["x-run-id"]
    assert [t["key"] for t in accepted.json["tasks"]] == ["task_a", "task_b", "task_c"]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    names = [e.event for e in events]
    # Every frame of a task comes before any frame of the next: one block per task, in order.
    owners = [e.event if e.event.startswith("task_") else e.json.get("task") for e in events]
    blocks = [key for i, key in enumerate(owners) if key and (i == 0 or owners[i - 1] != key)]
    assert blocks == ["task_a", "task_b", "task_c"]
    lifecycle = [(e.event, e.json["task"]) for e in events if e.event.startswith("task.")]
    assert lifecycle == [
        (kind, key) for key in ("task_a", "task_b", "task_c") for kind in ("task.started", "task.completed")
    ]
    assert names[-1] == "run.completed" and events[-1].json["run_id"] == headers["x-run-id"]
    expected = sent_by_upstream(
        upstream, text, {"task_a": "exact-a", "task_b": "exact-b", "task_c": "exact-c"}
    )
    assert expected == {"task_a": "".join(EXACT_A), "task_b": "".join(EXACT_B), "task_c": "".join(EXACT_C)}
    assert texts(events) == expected


async def test_carriage_returns_arrive_as_line_feeds_and_nothing_else_is_lost(server, upstream, client):
    text = unique("crlf")
    stream = await start(client, server, "crlf", text)
    try:
        events = await stream.until_end()
    finally:
        await stream.response.aclose()
    assert events[-1].event == "run.completed"
    assert texts(events) == {"task_a": "one\ntwo\nthree\n"}


async def test_pings_keep_the_stream_alive_while_the_provider_is_slow_to_start(server, upstream, client):
    stream = await start(client, server, "slow", unique("slow"))
    try:
        accepted = await stream.next()
        events = await stream.until_end()
    finally:
        await stream.response.aclose()

    first_delta = next(e for e in events if e.event == "task_a")
    pings = [at for at, text in stream.parser.comments if text == "ping" and at < first_delta.at]
    # The provider is silent for 1 s: a ping at least every 0.2 s, allowing for scheduling.
    assert len(pings) >= 3, pings
    quiet = [accepted.at, *pings, first_delta.at]
    assert max(b - a for a, b in itertools.pairwise(quiet)) < HEARTBEAT_S + 0.15
    assert texts(events) == {"task_a": "late answer"}


async def test_closing_the_response_closes_every_upstream_stream_within_200ms(server, upstream, client):
    text = unique("long")
    stream = await start(client, server, "long", text)
    try:
        while (await stream.next()).event != "task_a":
            pass
        # All four tasks are streaming from the upstream server (three of them held back).
        records = await upstream.wait_for(lambda: len(r := records_for(upstream, text)) == 4 and r, timeout=5)
        assert all(r.closed_at is None for r in records)
    finally:
        closed_at = time.monotonic()
        await stream.response.aclose()
    await upstream.wait_for(lambda: all(r.closed_at is not None for r in records), timeout=2)
    assert all(r.client_closed for r in records)
    assert max(r.closed_at for r in records) - closed_at < 0.2
    assert all(r.tokens_sent < 400 for r in records)


def thread_count(pid: int) -> int | None:
    """How many threads a process has (Linux /proc), None where that cannot be read."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return None
    line = next(line for line in status.read_text().splitlines() if line.startswith("Threads:"))
    return int(line.split()[1])


async def test_open_streams_hold_no_thread_each(server, client):
    if thread_count(server.proc.pid) is None:
        pytest.skip("counts threads through /proc (Linux)")
    before = thread_count(server.proc.pid)
    # The demo pipeline's simulated tasks use no network, hence no resolver threads.
    streams = [await start(client, server, "demo", unique("threads")) for _ in range(10)]
    try:
        for stream in streams:
            assert (await stream.next()).event == "run.accepted"
            assert (await stream.next()).event == "task.started"
        during = thread_count(server.proc.pid)
    finally:
        for stream in streams:
            await stream.response.aclose()
    assert during <= before + 2, (before, during)


async def test_resume_with_last_event_id_on_another_instance_gives_exactly_the_rest(
    server, graceful, upstream, client
):
    cookie = await session_cookie(client, graceful)
    text = unique("resume")
    stream = await start(client, graceful, "resumable", text, headers=cookie)
    try:
        run_id = (await stream.next()).json["run_id"]
        seen = [await stream.next() for _ in range(6)]
    finally:
        await stream.response.aclose()
    assert [int(e.id) for e in seen] == list(range(1, 7))

    resumed = await open_stream(
        client, "GET", f"{server.url}/stream/{run_id}", headers={**cookie, "Last-Event-ID": seen[-1].id}
    )
    try:
        rest = await resumed.until_end()
    finally:
        await resumed.response.aclose()

    events = seen + rest
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    # The grace period kept the run going: it completed, and every task's text is whole.
    assert events[-1].event == "run.completed"
    models = {"task_a": "resumable", "task_b": "resumable", "task_c": "resumable"}
    assert sorted(texts(events).values()) == sorted(sent_by_upstream(upstream, text, models).values())
    assert all(len(t.split()) == 40 for t in texts(events).values())

    # A finished run: without Last-Event-ID the whole run again, from the log; after its end, 204.
    replay = await open_stream(client, "GET", f"{graceful.url}/stream/{run_id}", headers=cookie)
    try:
        again = await replay.until_end()
    finally:
        await replay.response.aclose()
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in events]
    done = await client.get(
        f"{server.url}/stream/{run_id}", headers={**cookie, "Last-Event-ID": events[-1].id}
    )
    assert done.status_code == 204


async def test_a_run_of_another_session_or_of_no_session_is_an_unknown_run(graceful, client):
    owner = await session_cookie(client, graceful)
    stream = await start(client, graceful, "resumable", unique("foreign"), headers=owner)
    try:
        run_id = (await stream.next()).json["run_id"]
        stranger = await session_cookie(client, graceful)
        for headers in (stranger, {"Cookie": ""}):
            answer = await client.get(f"{graceful.url}/stream/{run_id}", headers=headers)
            assert answer.status_code == 404
            assert answer.json()["error"]["code"] == "unknown_run"
        # The owner's stream goes on regardless.
        assert (await stream.until_end())[-1].event == "run.completed"
    finally:
        await stream.response.aclose()


BIG = "x" * 70_000  # over STREAMS_MAX_FRAME_BYTES (64 KiB)


@pytest.mark.parametrize(
    ("method", "path", "content", "headers", "status", "code"),
    [
        ("POST", "/stream", b"not json", {}, 400, "bad_request"),
        ("POST", "/stream", b"\xff\xfe", {}, 400, "bad_request"),
        ("POST", "/stream", b"[1, 2]", {}, 400, "bad_request"),
        ("POST", "/stream", b'{"input": "hi"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "exact"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": 1, "input": "hi"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "exact", "input": ["hi"]}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "exact", "input": "  "}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "nope", "input": "hi"}', {}, 404, "unknown_pipeline"),
        ("POST", "/stream", json.dumps({"pipeline": "exact", "input": BIG}).encode(), {}, 413, "too_large"),
        (
            "POST",
            "/stream",
            json.dumps({"pipeline": "exact", "input": "é" * 32_001}).encode(),
            {},
            413,
            "too_large",
        ),
        ("GET", "/stream", b"", {}, 405, "bad_request"),
        ("GET", "/stream/0123456789abcdef0123456789abcdef", b"", {}, 404, "unknown_run"),
        ("GET", "/stream/" + "r" * 300, b"", {}, 404, "unknown_run"),
        ("GET", "/stream/abc", b"", {"Last-Event-ID": "-1"}, 400, "bad_request"),
        ("GET", "/stream/abc", b"", {"Last-Event-ID": "seven"}, 400, "bad_request"),
        # int() refuses more than 4,300 digits: this must be a 400, before anything else.
        ("GET", "/stream/abc", b"", {"Last-Event-ID": "9" * 5000}, 400, "bad_request"),
        (
            "GET",
            "/stream/0123456789abcdef0123456789abcdef",
            b"",
            {"Last-Event-ID": "9" * 20},
            400,
            "bad_request",
        ),
        # A lone surrogate, percent-encoded as UTF-8 would (invalid) and as text.
        ("GET", "/stream/%ED%A0%80", b"", {}, 404, "unknown_run"),
        ("GET", "/stream/r%00n", b"", {}, 404, "unknown_run"),
        ("GET", "/stream/%F0%9F%98%80", b"", {}, 404, "unknown_run"),
        ("POST", "/stream", b'{"pipeline": "exact", "input": "\\ud800"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "\\udfff", "input": "hi"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "exact", "input": "hi", "x": "\\ud83d"}', {}, 400, "bad_request"),
        ("POST", "/stream", b"[" * 20_000 + b"]" * 20_000, {}, 400, "bad_request"),
        (
            "POST",
            "/stream",
            b'{"pipeline": "exact", "input": "hi", "x": ' + b"[" * 40 + b"]" * 40 + b"}",
            {},
            400,
            "bad_request",
        ),
        ("POST", "/stream", b'{"pipeline": "exact", "input": NaN}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "exact", "input": "a\\u0000b"}', {}, 400, "bad_request"),
        ("POST", "/stream", b'{"pipeline": "no such/slug", "input": "hi"}', {}, 404, "unknown_pipeline"),
        (
            "POST",
            "/stream",
            b'{"pipeline": "exact", "input": "hi", "conversation": "0123456789abcdef0123456789abcdef"}',
            {},
            404,
            "unknown_conversation",
        ),
        ("POST", "/stream", b'{"pipeline": "p", "input": "x", "conversation": 7}', {}, 400, "bad_request"),
        (
            "POST",
            "/stream",
            b'{"pipeline": "exact", "input": "hi"}',
            {"Content-Type": "text/plain"},
            415,
            "bad_request",
        ),
        ("POST", "/stream/abc", b"", {}, 405, "bad_request"),
    ],
)
async def test_a_bad_request_gets_its_status_and_error_code(
    server, client, method, path, content, headers, status, code
):
    if method == "POST":
        headers = {"Content-Type": "application/json", **headers}
    response = await client.request(method, server.url + path, content=content, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/stream"), ("GET", "/stream/abc")])
async def test_without_a_login_when_anonymous_use_is_off_the_answer_is_unauthorized(settings, method, path):
    from django.test import AsyncClient

    settings.STREAMS = {**settings.STREAMS, "ALLOW_ANONYMOUS": False}
    body = {"pipeline": "demo", "input": "hi"}
    response = await (
        AsyncClient().post(path, body, content_type="application/json")
        if method == "POST"
        else AsyncClient().get(path)
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


# --- the stream's own logic, in process (memory layer and log) -------------------------------


def run_frames(run_id: str, end: bool = True) -> list[dict]:
    """A one-task run's ordered frames: started, two deltas, completed and (end) run.completed."""
    frames = [
        {"type": "task.started", "task": "task_t"},
        {"type": "task.delta", "task": "task_t", "text": "one\n"},
        {"type": "task.delta", "task": "task_t", "text": "two"},
        {
            "type": "task.completed",
            "task": "task_t",
            "stats": {"tokens": 2, "ttft_ms": 1.0, "duration_ms": 2.0},
        },
    ]
    if end:
        frames.append({"type": "run.completed"})
    return [{**f, "run_id": run_id, "seq": seq} for seq, f in enumerate(frames, 1)]


async def drain(events, timeout: float = 5.0) -> list[Event]:
    """Everything a stream generator yields until it ends."""
    raw = b""
    async with asyncio.timeout(timeout):
        async for chunk in events:
            raw += chunk
    return parse_all(raw)


@pytest.fixture
def logged_run(memory_layer, settings):
    """A run whose complete log is stored, and a fast heartbeat."""
    from streams.store.runlog import get_run_log

    settings.STREAMS = {**settings.STREAMS, "SSE_HEARTBEAT_S": 0.05}

    async def make(end: bool = True) -> tuple[str, list[dict]]:
        run_id = uuid.uuid4().hex
        frames = run_frames(run_id, end)
        await get_run_log().create(run_id, {"owner": "x", "pipeline": "p", "tasks": ["task_t"]})
        await get_run_log().append(run_id, frames)
        return run_id, frames

    return make


async def test_frames_the_layer_lost_are_filled_from_the_log_before_the_next_one(logged_run):
    from channels.layers import get_channel_layer

    from streams.sse import RunEventStream
    from streams.store.publisher import run_group

    run_id, frames = await logged_run()
    stream = RunEventStream(run_id, 0)

    async def begin():
        # Only the last frame travels through the layer; 1..4 were "lost".
        await get_channel_layer().group_send(run_group(run_id), {"type": "run.frames", "frames": frames[-1:]})

    events = await drain(stream.events(b"", begin, resume=False))
    assert [int(e.id) for e in events] == [1, 2, 3, 4, 5]
    assert texts(events) == {"task_t": "one\ntwo"}
    assert get_channel_layer().groups.get(run_group(run_id)) in (None, {})


async def test_a_lost_final_message_is_found_in_the_log_at_the_next_heartbeat(logged_run):
    from streams.sse import RunEventStream

    run_id, _ = await logged_run()
    stream = RunEventStream(run_id, 2)

    async def begin():
        pass  # nothing is ever published: only the heartbeat's look at the log can end this

    events = await drain(stream.events(b"", begin, resume=False))
    assert [int(e.id) for e in events] == [3, 4, 5] and events[-1].event == "run.completed"


async def test_when_the_layer_fails_the_frames_handed_over_by_the_host_end_the_stream(logged_run):
    from streams.sse import RunEventStream

    run_id, frames = await logged_run()
    stream = RunEventStream(run_id, 0)

    async def begin():
        stream.layer_failed(frames)

    events = await drain(stream.events(b"", begin, resume=False))
    assert [int(e.id) for e in events] == [1, 2, 3, 4, 5]

    run_id, frames = await logged_run(end=False)
    stream = RunEventStream(run_id, 0)

    async def begin_unfinished():
        stream.layer_failed(frames[:2])

    events = await drain(stream.events(b"", begin_unfinished, resume=False))
    # Without the run's end the stream says why it stops; the client may resume later.
    assert [e.event for e in events] == ["task.started", "task_t", "error"]
    assert events[-1].json["code"] == "layer_unavailable"
