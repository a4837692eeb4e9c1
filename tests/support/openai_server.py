"""A local OpenAI-compatible chat.completions streaming server for tests and the benchmark.

Runs on 127.0.0.1 with an ephemeral port in a background thread with its own event loop:

    with OpenAIServer(Script(text="Hello", tokens_per_s=30)) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="k")
        ...
        assert srv.requests[0].client_closed

Every request gets a `Script` (one for all, a list consumed in order whose last entry repeats,
or a callable of the `RequestRecord`). Times in records are `time.monotonic()`, the clock
asyncio's loop.time() uses, so tests can compare them with their own loop's clock.

Standalone: `python -m tests.support.openai_server --port 8100 --tokens-per-s 30 --tokens 60`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The same vocabulary as the simulated provider, so test and demo texts look alike.
from streams.providers.simulated import WORDS
from tests.support import framing

logger = logging.getLogger(__name__)

# Pre-encoded event lists per (model, pieces, options); bounded so odd tests cannot grow it forever.
_CACHE_LIMIT = 256


@dataclass
class Script:
    """How the server answers one request; the defaults stream 16 generated words at once."""

    # Exact text to stream, split into word pieces (each word with its trailing whitespace).
    text: str | None = None
    # Exact pieces to stream, one SSE event each (wins over `text`); a piece that is not a
    # string is sent as that JSON value (a broken upstream).
    chunks: Sequence[Any] | None = None
    # With neither text nor chunks: stream the last user message back, word by word.
    echo: bool = False
    # With neither text, chunks nor echo: this many words derived from the prompt.
    tokens: int = 16
    # Pace in tokens per second; 0 writes every token at once ("no delay" mode).
    tokens_per_s: float = 0.0
    # Delay before the response headers (time to first byte).
    ttfb_s: float = 0.0
    # Delay between the headers (and the role chunk) and the first token.
    ttft_s: float = 0.0
    # Anything but 200 answers with a provider-style error JSON body instead of a stream.
    status: int = 200
    # Error type/code and message for an error body or an in-stream error.
    error_type: str | None = None
    error_message: str | None = None
    # `retry-after-ms` header on error responses (the SDKs honour it; keeps retries fast in tests).
    retry_after_ms: float | None = None
    # After K tokens: close the connection (abort=True sends RST instead of FIN).
    disconnect_after: int | None = None
    abort: bool = False
    # After K tokens: a chunk that is not valid JSON, then the end of the body.
    malformed_after: int | None = None
    # After K tokens: an error object inside the stream (HTTP status stays 200), then the end.
    error_after: int | None = None
    # After K tokens: send nothing more and keep the connection open (read timeouts).
    stall_after: int | None = None
    # Final usage chunk: None follows the request's stream_options.include_usage.
    usage: bool | None = None
    # Send the closing `data: [DONE]` (Anthropic: message_stop).
    done: bool = True
    # Split every event into separate writes of this many bytes, `fragment_delay_s` apart,
    # so that the client sees SSE lines and UTF-8 sequences cut in the middle.
    fragment_bytes: int | None = None
    fragment_delay_s: float = 0.002
    # JSON with \\uXXXX escapes instead of raw UTF-8.
    ensure_ascii: bool = False
    # Why the answer ended, in OpenAI's words (the Anthropic server maps it to its stop_reason);
    # None: no finish_reason at all, as llama.cpp ends an answer it interrupted.
    finish_reason: str | None = "stop"
    # Odd but legal framing (tests/support/framing.py): line ends "\n", "\r\n" or "\r";
    # comment and ignorable field lines before every event; each JSON over two `data:` lines;
    # a byte order mark first.
    line_ending: str = "\n"
    comments: bool = False
    multiline_data: bool = False
    bom: bool = False
    # Raw bytes written as they are after K tokens (0: before the first), e.g. a broken event.
    inject: Sequence[tuple[int, bytes]] = ()


@dataclass
class RequestRecord:
    """What the server saw and did for one request."""

    index: int
    method: str
    path: str
    headers: dict[str, str]
    raw_body: bytes
    received_at: float
    body: Any = None
    # Sequence number of the TCP connection that carried the request (keep-alive reuse shows here).
    connection: int = 0
    script: Script | None = None
    status: int | None = None
    response_started_at: float | None = None
    first_token_at: float | None = None
    tokens_sent: int = 0
    pieces_sent: list[str] = field(default_factory=list)
    # The server ended the response itself (normal end, error body, scripted failure).
    finished_at: float | None = None
    # The connection that carried this request closed (either side), if it was still its latest.
    closed_at: float | None = None
    # The client closed the connection before the server finished the response.
    client_closed: bool = False
    # A newer request cut this stream short (servers started with interrupt=True).
    interrupted: bool = False

    @property
    def text_sent(self) -> str:
        """The text of every token written so far."""
        return "".join(p for p in self.pieces_sent if isinstance(p, str))

    @property
    def prompt(self) -> str:
        """The last user message's text (OpenAI and Anthropic shapes)."""
        messages = (self.body or {}).get("messages") or []
        for message in reversed(messages):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    @property
    def authorization(self) -> str | None:
        """The credential the client sent (Authorization bearer or x-api-key)."""
        value = self.headers.get("authorization")
        if value and value.lower().startswith("bearer "):
            return value[7:]
        return self.headers.get("x-api-key", value)


def _content_text(content: Any) -> str:
    """Text of a message content that is a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def split_words(text: str) -> list[str]:
    """Pieces whose concatenation is exactly `text`: each word with its trailing whitespace."""
    return re.findall(r"\S+\s*|\s+", text)


def generated_words(prompt: str, count: int) -> list[str]:
    """`count` deterministic words derived from the prompt (first without a leading space)."""
    seed = hashlib.sha256(prompt.encode()).digest()
    return [("" if i == 0 else " ") + WORDS[(seed[i % len(seed)] + i) % len(WORDS)] for i in range(count)]


def script_pieces(script: Script, prompt: str) -> list[str]:
    """The token pieces a script streams for a prompt."""
    if script.chunks is not None:
        return list(script.chunks)
    if script.text is not None:
        return split_words(script.text)
    if script.echo:
        return split_words(prompt)
    return generated_words(prompt, script.tokens)


def http_chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunked-transfer chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
_REASONS.update({408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error"})
_REASONS.update({502: "Bad Gateway", 503: "Service Unavailable", 529: "Overloaded"})


def response_head(status: int, headers: dict[str, str]) -> bytes:
    """Status line and headers."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class StreamPlan:
    """Pre-encoded SSE events (payloads, not yet HTTP-framed) for one streamed answer."""

    prelude: list[bytes]
    events: list[bytes]
    epilogue: list[bytes]
    error_event: bytes
    malformed: bytes
    # What ends a stream that a newer request interrupted (llama.cpp: [DONE], no finish_reason).
    interrupted: list[bytes] = field(default_factory=list)


class _Connection(asyncio.Protocol):
    """One client TCP connection: parses HTTP/1.1 requests, runs one response at a time."""

    def __init__(self, server: StreamingServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.records: list[RequestRecord] = []
        self.task: asyncio.Task | None = None
        self.busy = False
        self.lost: asyncio.Future | None = None
        self.server_closing = False
        self.number = 0
        self._resumed: asyncio.Event | None = None

    def connection_made(self, transport):
        """Remember the transport."""
        self.transport = transport
        self.lost = asyncio.get_running_loop().create_future()
        self.server._connections.add(self)
        self.server.connections_opened += 1
        self.number = self.server.connections_opened

    def data_received(self, data):
        """Buffer bytes; start a response once a whole request is in."""
        self.buffer += data
        self._maybe_dispatch()

    def eof_received(self):
        """The client half-closed: count it as closed now (returning None closes our side too)."""
        self._mark_closed(time.monotonic())
        return None

    def connection_lost(self, exc):
        """Record the close on every request of this connection; stop a running response."""
        self._mark_closed(time.monotonic())
        self.server._connections.discard(self)
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self._resumed is not None:
            self._resumed.set()

    def pause_writing(self):
        """The client reads slower than we write: hold the next writes."""
        self._resumed = asyncio.Event()

    def resume_writing(self):
        """The client caught up."""
        if self._resumed is not None:
            self._resumed.set()
            self._resumed = None

    def _mark_closed(self, now: float) -> None:
        """Stamp the close time; a close before the response ended is the client's."""
        for record in self.records:
            if record.closed_at is None:
                record.closed_at = now
                if record.finished_at is None and not self.server_closing:
                    record.client_closed = True

    def _maybe_dispatch(self) -> None:
        """Parse one complete request from the buffer and start answering it."""
        if self.busy or self.transport is None or self.transport.is_closing():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > 65536:
                self.transport.close()
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, path, _ = head[0].split(" ", 2)
        except ValueError:
            self.transport.close()
            return
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if len(self.buffer) < end + 4 + length:
            return
        raw_body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        record = self.server._new_record(method, path, headers, raw_body)
        record.connection = self.number
        # Only the latest request of a keep-alive connection waits for its close (bounded memory).
        self.records = [record]
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(self._answer(record))

    async def _answer(self, record: RequestRecord) -> None:
        """Run the server's handler; then serve the next pipelined request, if any."""
        try:
            await self.server._handle(self, record)
        except asyncio.CancelledError:
            return
        except Exception:  # a broken test script must not kill the server thread
            logger.exception("test server handler failed")
            self.close(abort=True)
            return
        finally:
            self.busy = False
        if record.headers.get("connection", "").lower() == "close":
            self.close()
        elif self.buffer:
            self._maybe_dispatch()

    def write(self, data: bytes) -> None:
        """Write bytes unless the connection is gone."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the transport's buffer is above its high-water mark."""
        if self._resumed is not None:
            await self._resumed.wait()

    @property
    def is_closed(self) -> bool:
        """Whether the connection is gone."""
        return self.transport is None or self.transport.is_closing()

    def close(self, abort: bool = False) -> None:
        """Close from the server side (not counted as a client close)."""
        self.server_closing = True
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class StreamingServer:
    """Threaded HTTP/1.1 server core: connections, scripts, records; subclasses speak a dialect."""

    # Path prefix the SDK's base_url needs (OpenAI: "/v1"; Anthropic: "").
    base_path = "/v1"

    def __init__(
        self,
        script: Script | Sequence[Script] | Callable[[RequestRecord], Script] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        reuse_port: bool = False,
        keep_text: bool = True,
        interrupt: bool = False,
    ):
        """`api_key`, when set, answers 401 to requests that do not present it.

        `keep_text=False` skips recording each request's pieces (long benchmarks).
        `interrupt=True` behaves like llama.cpp's server by default: a new streaming request
        ends the paced stream in progress at its next token (see StreamPlan.interrupted).
        """
        self.script = script if script is not None else Script()
        self.host = host
        self.port = port
        self.api_key = api_key
        self.reuse_port = reuse_port
        self.keep_text = keep_text
        self.requests: list[RequestRecord] = []
        self.connections_opened = 0
        self.interrupt = interrupt
        # Requests being answered now, and the most there ever were at once.
        self.in_flight = 0
        self.max_in_flight = 0
        self._streaming: dict[int, RequestRecord] = {}
        self._connections: set[_Connection] = set()
        self._cache: dict[tuple, StreamPlan] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None

    # --- dialect hooks -------------------------------------------------------------------

    def matches(self, record: RequestRecord) -> bool:
        """Whether the request is the streaming endpoint."""
        raise NotImplementedError

    def plan(self, record: RequestRecord, script: Script, pieces: list[str]) -> StreamPlan:
        """Encode the SSE events that answer a streaming request."""
        raise NotImplementedError

    def error_body(self, status: int, script: Script) -> dict:
        """The JSON body of an HTTP error answer."""
        raise NotImplementedError

    def complete_body(self, record: RequestRecord, pieces: list[str]) -> dict:
        """The JSON body of a non-streaming answer."""
        raise NotImplementedError

    def wants_stream(self, record: RequestRecord) -> bool:
        """Whether the request asked for a stream."""
        return bool((record.body or {}).get("stream"))

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The URL to give the SDK as base_url."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    def start(self) -> StreamingServer:
        """Start the server thread and wait until it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as exc:  # report the bind error to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_until_complete(self._stopped.wait())
                loop.run_until_complete(self._shutdown())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every connection, stop the loop and join the thread."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> StreamingServer:
        """Start; the context manager form."""
        return self.start()

    def __exit__(self, *exc_info) -> None:
        """Stop."""
        self.stop()

    async def _listen(self) -> None:
        """Bind the listening socket (port 0: an ephemeral one)."""
        self._stopped = asyncio.Event()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), self.host, self.port, backlog=2048, reuse_port=self.reuse_port or None
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        """Stop listening, drop connections, let cancelled handlers finish."""
        self._server.close()
        for connection in list(self._connections):
            connection.close(abort=True)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI)."""

        async def main() -> None:
            await self._listen()
            sys.stdout.write(f"listening on {self.base_url}\n")
            sys.stdout.flush()
            await self._stopped.wait()

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    # --- helpers for tests ---------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Poll `predicate` from the caller's loop until it is truthy; TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(0.002)

    def script_for(self, record: RequestRecord) -> Script:
        """The script for a request: the one script, the record's entry of a list, or a callable's."""
        script = self.script
        if callable(script):
            return script(record)
        if isinstance(script, Sequence):
            return script[min(record.index, len(script) - 1)]
        return script

    # --- request handling ----------------------------------------------------------------

    def _new_record(self, method: str, path: str, headers: dict[str, str], raw_body: bytes) -> RequestRecord:
        """Record a request as it arrives."""
        record = RequestRecord(len(self.requests), method, path, headers, raw_body, time.monotonic())
        with contextlib.suppress(ValueError):
            record.body = json.loads(raw_body) if raw_body else None
        self.requests.append(record)
        return record

    def _json_response(
        self, conn: _Connection, record: RequestRecord, status: int, body: dict, extra: dict | None = None
    ) -> None:
        """Answer with a JSON body and keep the connection open."""
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        headers.update(extra or {})
        record.status = status
        record.response_started_at = time.monotonic()
        conn.write(response_head(status, headers) + payload)
        record.finished_at = time.monotonic()

    async def _handle(self, conn: _Connection, record: RequestRecord) -> None:
        """Answer one request as its script says, counting the requests in flight."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._answer_request(conn, record)
        finally:
            self.in_flight -= 1

    async def _answer_request(self, conn: _Connection, record: RequestRecord) -> None:
        """Answer one request as its script says."""
        script = self.script_for(record)
        record.script = script
        if script.ttfb_s:
            await asyncio.sleep(script.ttfb_s)
        if not self.matches(record):
            body = self.error_body(404, Script(error_message="no such route"))
            self._json_response(conn, record, 404, body)
            return
        if self.api_key is not None and record.authorization != self.api_key:
            # Never echo what the client sent: tests check that keys do not leak.
            body = self.error_body(401, Script(error_type="invalid_api_key", error_message="bad key"))
            self._json_response(conn, record, 401, body)
            return
        if script.status != 200:
            extra = {}
            if script.retry_after_ms is not None:
                extra["retry-after-ms"] = str(script.retry_after_ms)
            self._json_response(conn, record, script.status, self.error_body(script.status, script), extra)
            return
        pieces = script_pieces(script, record.prompt)
        if not self.wants_stream(record):
            record.pieces_sent.extend(pieces)
            record.tokens_sent = len(pieces)
            self._json_response(conn, record, 200, self.complete_body(record, pieces))
            return
        await self._stream(conn, record, script, pieces)

    def _plan_cached(self, record: RequestRecord, script: Script, pieces: list[str]) -> StreamPlan:
        """Pre-encoded events, shared by requests that stream the same thing (the benchmark)."""
        body = record.body or {}
        key = (
            body.get("model"),
            tuple(pieces),
            script.ensure_ascii,
            self._usage_wanted(record, script),
            script.error_type,
            script.error_message,
            len(record.prompt),
            script.done,
            script.finish_reason,
            script.line_ending,
            script.comments,
            script.multiline_data,
            script.bom,
        )
        try:
            plan = self._cache.get(key)
        except TypeError:  # a piece that is a JSON array or object: not cached
            return framing.reframe(self.plan(record, script, pieces), script)
        if plan is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            plan = self._cache[key] = framing.reframe(self.plan(record, script, pieces), script)
        return plan

    def _usage_wanted(self, record: RequestRecord, script: Script) -> bool:
        """Whether the stream ends with usage."""
        return script.usage if script.usage is not None else True

    async def _stream(
        self, conn: _Connection, record: RequestRecord, script: Script, pieces: list[Any]
    ) -> None:
        """Write the SSE answer token by token, with the script's pace and failures."""
        plan = self._plan_cached(record, script, pieces)
        head = response_head(
            200,
            {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Transfer-Encoding": "chunked",
                "Cache-Control": "no-cache",
                "x-request-id": f"req_local_{record.index}",
            },
        )
        record.status = 200
        conn.write(head + b"".join(http_chunk(p) for p in plan.prelude))
        record.response_started_at = time.monotonic()
        if script.ttft_s:
            await asyncio.sleep(script.ttft_s)
        stops = [
            k
            for k in (script.disconnect_after, script.malformed_after, script.error_after, script.stall_after)
            if k is not None
        ]
        limit = min([len(plan.events), *stops])
        self._streaming[record.index] = record
        try:
            if self.interrupt:
                for other in self._streaming.values():
                    other.interrupted = other is not record
            if not await self._write_tokens(conn, record, script, plan, pieces, limit):
                return
        finally:
            self._streaming.pop(record.index, None)
        if record.interrupted:
            for event in plan.interrupted:
                await self._write_event(conn, event, script)
            conn.write(LAST_CHUNK)
            record.finished_at = time.monotonic()
            return
        if limit == script.disconnect_after:
            record.finished_at = time.monotonic()
            conn.close(abort=script.abort)
            return
        if limit == script.malformed_after:
            await self._write_event(conn, plan.malformed, script)
            conn.write(LAST_CHUNK)
            record.finished_at = time.monotonic()
            return
        if limit == script.error_after:
            await self._write_event(conn, plan.error_event, script)
            conn.write(LAST_CHUNK)
            record.finished_at = time.monotonic()
            return
        if limit == script.stall_after:
            await conn.lost
            return
        for event in plan.epilogue:
            await self._write_event(conn, event, script)
        conn.write(LAST_CHUNK)
        record.finished_at = time.monotonic()

    async def _write_tokens(
        self, conn: _Connection, record: RequestRecord, script: Script, plan: StreamPlan, pieces, limit: int
    ) -> bool:
        """Write the first `limit` token events (and injected bytes); False if the connection went."""
        events = plan.events
        gap = 1.0 / script.tokens_per_s if script.tokens_per_s > 0 else 0.0
        injects: dict[int, list[bytes]] = {}
        for after, raw in script.inject:
            injects.setdefault(after, []).append(raw)
        if not gap and not script.fragment_bytes and not injects:
            # No pace: one write for everything up to the first scripted failure (cheap, and
            # it lands in the client's buffer at once, as a fast upstream's burst does).
            conn.write(b"".join(http_chunk(e) for e in events[:limit]))
            if self.keep_text:
                record.pieces_sent.extend(pieces[:limit])
            record.tokens_sent = limit
            if limit:
                record.first_token_at = time.monotonic()
            await conn.drain()
            return True
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(limit + 1):
            for raw in injects.get(i, ()):
                conn.write(http_chunk(raw))
            if i == limit or record.interrupted:
                break
            if gap:
                # Pace against the start so sleep overshoot does not accumulate.
                delay = start + i * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if conn.is_closed:
                return False
            if record.interrupted:
                break
            await self._write_event(conn, events[i], script)
            if self.keep_text:
                record.pieces_sent.append(pieces[i])
            record.tokens_sent = i + 1
            if i == 0:
                record.first_token_at = time.monotonic()
            await conn.drain()
        return True

    async def _write_event(self, conn: _Connection, payload: bytes, script: Script) -> None:
        """Write one event, cut into fragments when the script asks for it."""
        size = script.fragment_bytes
        if not size:
            conn.write(http_chunk(payload))
            return
        for offset in range(0, len(payload), size):
            conn.write(http_chunk(payload[offset : offset + size]))
            await asyncio.sleep(script.fragment_delay_s)


def _dumps(obj: Any, ensure_ascii: bool) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(obj, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()


class OpenAIServer(StreamingServer):
    """Speaks POST {base}/chat/completions the way api.openai.com streams it."""

    base_path = "/v1"

    def matches(self, record: RequestRecord) -> bool:
        """The chat completions endpoint."""
        return record.method == "POST" and record.path.split("?")[0].endswith("/chat/completions")

    def _usage_wanted(self, record: RequestRecord, script: Script) -> bool:
        """OpenAI sends usage only when stream_options.include_usage was asked."""
        if script.usage is not None:
            return script.usage
        options = (record.body or {}).get("stream_options") or {}
        return bool(options.get("include_usage"))

    def error_body(self, status: int, script: Script) -> dict:
        """OpenAI's error shape."""
        default_type = {
            401: "invalid_api_key",
            403: "permission_denied",
            404: "not_found",
            429: "rate_limit_exceeded",
        }.get(status, "server_error")
        kind = script.error_type or default_type
        return {
            "error": {
                "message": script.error_message or f"scripted {status} ({kind})",
                "type": "requests" if status == 429 else ("server_error" if status >= 500 else kind),
                "param": None,
                "code": kind,
            }
        }

    def complete_body(self, record: RequestRecord, pieces: list[str]) -> dict:
        """A non-streaming chat.completion."""
        return {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (record.body or {}).get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": record.script.finish_reason if record.script else "stop",
                }
            ],
            "usage": _usage(record, pieces),
        }

    def plan(self, record: RequestRecord, script: Script, pieces: list[str]) -> StreamPlan:
        """chat.completion.chunk events: role, one per piece, finish, usage, [DONE]."""
        body = record.body or {}
        wants_usage = self._usage_wanted(record, script)
        base = {
            "id": "chatcmpl-local",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "system_fingerprint": None,
        }
        if wants_usage:
            base["usage"] = None  # OpenAI sends "usage": null on every chunk but the last

        def event(choices: list, **extra: Any) -> bytes:
            return b"data: " + _dumps({**base, "choices": choices, **extra}, script.ensure_ascii) + b"\n\n"

        def choice(delta: dict, finish: str | None = None) -> dict:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        epilogue = [event([choice({}, script.finish_reason)])] if script.finish_reason else []
        if wants_usage:
            epilogue.append(event([], usage=_usage(record, pieces)))
        if script.done:
            epilogue.append(b"data: [DONE]\n\n")
        error = {
            "error": {
                "message": script.error_message or "The server had an error while processing your request.",
                "type": script.error_type or "server_error",
                "param": None,
                "code": script.error_type or "server_error",
            }
        }
        return StreamPlan(
            prelude=[event([choice({"role": "assistant", "content": ""})])],
            events=[event([choice({"content": piece})]) for piece in pieces],
            epilogue=epilogue,
            error_event=b"data: " + _dumps(error, script.ensure_ascii) + b"\n\n",
            malformed=b'data: {"id":"chatcmpl-local","choices":[{"index":0,"delta":{"content":"x\n\n',
            interrupted=[b"data: [DONE]\n\n"],
        )


def _usage(record: RequestRecord, pieces: list[str]) -> dict:
    """OpenAI-style usage: words of every message as prompt tokens, pieces as completion tokens."""
    messages = (record.body or {}).get("messages") or []
    prompt_tokens = sum(len(_content_text(m.get("content")).split()) for m in messages)
    prompt_tokens += len(str((record.body or {}).get("system") or "").split())
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(pieces),
        "total_tokens": prompt_tokens + len(pieces),
    }


def main(argv: Sequence[str] | None = None, server_cls: type[StreamingServer] = OpenAIServer) -> None:
    """CLI: serve paced streams until interrupted."""
    parser = argparse.ArgumentParser(description=server_cls.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--tokens-per-s", type=float, default=30.0, help="0: no delay between tokens")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    parser.add_argument("--ttft-s", type=float, default=0.0, help="delay before the first token")
    parser.add_argument("--ttfb-s", type=float, default=0.0, help="delay before the response headers")
    parser.add_argument("--echo", action="store_true", help="stream the prompt back instead")
    parser.add_argument("--api-key", default=None, help="answer 401 unless this key is presented")
    parser.add_argument("--reuse-port", action="store_true", help="SO_REUSEPORT: run several processes")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    script = Script(
        tokens=args.tokens,
        tokens_per_s=args.tokens_per_s,
        ttft_s=args.ttft_s,
        ttfb_s=args.ttfb_s,
        echo=args.echo,
    )
    server = server_cls(
        script,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        reuse_port=args.reuse_port,
        keep_text=False,
    )
    # A long benchmark must not keep every request's record alive.
    server.requests = _Forgetful()
    server.serve_forever()


class _Forgetful(list):
    """A request list that keeps only a count (standalone servers run for hours)."""

    def append(self, item: Any) -> None:
        """Count without keeping."""
        self.seen = getattr(self, "seen", 0) + 1

    def __len__(self) -> int:
        """How many requests arrived."""
        return getattr(self, "seen", 0)


if __name__ == "__main__":
    main()
