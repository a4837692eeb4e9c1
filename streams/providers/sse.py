"""Upstream Server-Sent Events decoding: raw body bytes in, (event, data) pairs out; JSON per event."""

from __future__ import annotations

import json

from .base import ProviderError
from .errors import redact

# Longest SSE line kept in memory; a server that never sends a newline is broken.
MAX_LINE_BYTES = 8 * 1024 * 1024


class SSEParser:
    """Incremental Server-Sent Events framing over raw bytes: feed chunks, get (event, data) pairs."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        """Start with nothing buffered."""
        self._buffer = b""
        self._data: list[bytes] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        """Events completed by this chunk; a line or UTF-8 sequence cut in two waits for the rest."""
        buffer = self._buffer + chunk if self._buffer else chunk
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE_BYTES:
            raise ProviderError("bad_response", "an SSE line exceeds 8 MiB")
        events = []
        for line in lines:
            self._line(line, events)
        return events

    def flush(self) -> list[tuple[str | None, bytes]]:
        """At the end of the body: an unterminated last line and an event missing its blank line."""
        events: list[tuple[str | None, bytes]] = []
        if self._buffer:
            self._line(self._buffer, events)
            self._buffer = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[str | None, bytes]]) -> None:
        """Apply one line: a field, a comment, or the blank line that ends an event."""
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
                self._data = []
            self._event = None
        elif line.startswith(b"data:"):
            self._data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        # Comments (": ping"), id: and retry: carry nothing this app needs.


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
