"""Upstream Server-Sent Events decoding: raw body bytes in, (event, data) pairs out; JSON per event.

read_sse drives a provider's decoder over a response body; SSEParser does the framing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Protocol

import httpx2

from .base import ProviderError, Usage
from .errors import ErrorReporter, redact

# After the end marker, read what is left of the body this long so the connection can be reused.
DRAIN_S = 0.1
# Longest SSE line kept in memory; a server that never sends a line end is broken.
MAX_LINE_BYTES = 8 * 1024 * 1024
# One byte order mark at the very start of a stream is not part of it (UTF-8 decode, spec 9.2.5).
BOM = b"\xef\xbb\xbf"

Event = tuple[str | None, bytes]


class Decoder(Protocol):
    """One provider's per-stream reading of events (OpenAIDecoder, AnthropicDecoder)."""

    done: bool  # its end marker came: stop reading
    finished: bool  # the upstream said the answer is complete
    incomplete_detail: str  # what the error says when the body ended without `finished`

    def apply(self, event: str | None, data: bytes, texts: list[str]) -> None:
        """Read one event; append its text to `texts`; raise ProviderError for an error event."""
        ...

    def usage(self) -> Usage:
        """What the upstream reported, at the end of a complete answer."""
        ...


class SSEParser:
    """Incremental Server-Sent Events framing over raw bytes: feed chunks, get (event, data) pairs.

    Follows the WHATWG event-stream interpretation: lines end in CRLF, LF or a lone CR (a
    CRLF pair may be cut between two reads), a leading BOM is dropped, ":" starts a comment,
    a field without a colon has an empty value, one space after the colon is dropped, and
    multi-line `data` joins with LF. Bytes stay bytes: UTF-8 is decoded by the JSON parser,
    so a character cut between reads simply waits in the buffer with the rest of its line.
    Unlike the spec, an event that the body's end cuts off before its blank line is still
    dispatched (`flush`): some servers end the body right after `data: [DONE]`.
    Checked against httpx-sse (tests/test_sse_decoding.py) for any split of any stream.
    """

    __slots__ = ("_buffer", "_data", "_event", "_head", "_skip_lf")

    def __init__(self) -> None:
        """Start with nothing buffered."""
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None
        # The first bytes, until it is known whether they are a BOM (None: known).
        self._head: bytes | None = b""
        # The last read ended in CR: an LF that starts the next read is that line end's second half.
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Events completed by this chunk; a line cut in two waits for the rest."""
        if self._head is not None:
            head = self._head + chunk
            if len(head) < 3 and BOM.startswith(head):
                self._head = head
                return []
            self._head = None
            chunk = head[3:] if head.startswith(BOM) else head
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            raise ProviderError("bad_response", "an SSE line exceeds 8 MiB")
        events: list[Event] = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[Event]:
        """At the end of the body: an unterminated last line and an event missing its blank line."""
        events: list[Event] = []
        if self._head:  # a body shorter than a BOM
            head, self._head = self._head, None
            events = self.feed(head)
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[Event]) -> None:
        """Apply one line: a field, a comment, or the blank line that ends an event."""
        if line.startswith(b"data:"):  # the common case first
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
            return
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = None
            return
        name, colon, value = line.partition(b":")
        if not name:
            return  # a comment (": ping")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # id, retry and unknown fields carry nothing this app needs.


def decode_json(data: bytes, where: str) -> dict:
    """One event's JSON object, or bad_response."""
    try:
        obj = json.loads(data)
    except ValueError:
        raise ProviderError(
            "bad_response", f"{where}: malformed JSON in the stream: {redact(repr(data[:80]))}"
        ) from None
    if not isinstance(obj, dict):
        raise ProviderError("bad_response", f"{where}: stream event is not a JSON object")
    return obj


async def read_sse(
    http: httpx2.Response, decoder: Decoder, errors: ErrorReporter
) -> AsyncIterator[str | Usage]:
    """Drive a decoder over the raw body: one text piece per network read, then its Usage.

    The decoder says when to stop reading (`done`: its end marker) and whether the answer
    is complete (`finished`: the upstream gave a finish reason or its final event).
    """
    parser = SSEParser()
    chunks = http.aiter_bytes()
    try:
        eof = False
        while not (eof or decoder.done):
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                eof = True
                chunk = None
            except Exception as exc:  # httpx2/aiohttp/ssl errors surface raw while the body streams
                raise errors.transport_error(exc, "during the stream") from None
            texts: list[str] = []
            failure = None
            try:
                for event, data in parser.flush() if eof else parser.feed(chunk):
                    decoder.apply(event, data, texts)
                    if decoder.done:
                        break
            except ProviderError as exc:
                failure = exc
            # Text that arrived before a failure in the same read is still the caller's.
            if texts:
                yield texts[0] if len(texts) == 1 else "".join(texts)
            if failure is not None:
                raise failure
        if decoder.done:
            await _drain(chunks)
        if not decoder.finished:
            # A cut connection raised above; this body ended properly but the upstream
            # never said the answer was complete (llama.cpp ends an interrupted one so).
            raise errors.error("incomplete", decoder.incomplete_detail)
    finally:
        await chunks.aclose()
    yield decoder.usage()


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the rest of a finished body briefly, so HTTP/1.1 can reuse the connection."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in chunks:
                pass
    except Exception:  # the answer is complete; a slow or broken tail only costs the connection
        return
