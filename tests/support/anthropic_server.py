"""A local Anthropic Messages streaming server for tests: the same scripts and records as OpenAIServer.

    with AnthropicServer(Script(text="Hi", error_after=1, error_type="overloaded_error")) as srv:
        AsyncAnthropic(base_url=srv.base_url, api_key="k")   # base_url has no /v1: the SDK adds it

Standalone: `python -m tests.support.anthropic_server --port 8101 --tokens-per-s 30 --tokens 60`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tests.support.openai_server import (
    RequestRecord,
    Script,
    StreamingServer,
    StreamPlan,
    _content_text,
    main,
)

__all__ = ["AnthropicServer", "RequestRecord", "Script"]

# Anthropic's error type for each HTTP status it uses.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


# Script.finish_reason (OpenAI's words) as Anthropic's stop_reason.
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}

# Anthropic's wording for in-stream errors.
_MESSAGES = {
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Rate limited",
    "api_error": "Internal server error",
}


def _event(name: str, data: dict, ensure_ascii: bool) -> bytes:
    """One named SSE event."""
    payload = json.dumps(data, ensure_ascii=ensure_ascii, separators=(",", ":")).encode()
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


class AnthropicServer(StreamingServer):
    """Speaks POST /v1/messages with stream=true the way api.anthropic.com streams it."""

    base_path = ""

    def matches(self, record: RequestRecord) -> bool:
        """The Messages endpoint."""
        return record.method == "POST" and record.path.split("?")[0].endswith("/v1/messages")

    def error_body(self, status: int, script: Script) -> dict:
        """Anthropic's error shape."""
        kind = script.error_type or _ERROR_TYPES.get(status, "api_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": script.error_message or f"scripted {status} ({kind})"},
            "request_id": "req_local",
        }

    def _input_tokens(self, record: RequestRecord) -> int:
        """Words of the system prompt and the messages."""
        body = record.body or {}
        words = len(_content_text(body.get("system")).split()) if body.get("system") else 0
        return words + sum(len(_content_text(m.get("content")).split()) for m in body.get("messages") or [])

    def complete_body(self, record: RequestRecord, pieces: list[str]) -> dict:
        """A non-streaming message."""
        stop = record.script.finish_reason if record.script else "stop"
        return {
            "id": "msg_local",
            "type": "message",
            "role": "assistant",
            "model": (record.body or {}).get("model", ""),
            "content": [{"type": "text", "text": "".join(pieces)}],
            "stop_reason": _STOP_REASONS.get(stop, stop),
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens(record), "output_tokens": len(pieces)},
        }

    def plan(self, record: RequestRecord, script: Script, pieces: list[str]) -> StreamPlan:
        """message_start, content_block_start, ping, a delta per piece, then the closing events."""
        ascii_only = script.ensure_ascii
        stop = script.finish_reason
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_local",
                "type": "message",
                "role": "assistant",
                "model": (record.body or {}).get("model", ""),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": self._input_tokens(record), "output_tokens": 1},
            },
        }
        prelude = [
            _event("message_start", start, ascii_only),
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                ascii_only,
            ),
            _event("ping", {"type": "ping"}, ascii_only),
        ]
        events = [
            _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                ascii_only,
            )
            for piece in pieces
        ]
        epilogue = [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}, ascii_only),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": _STOP_REASONS.get(stop, stop), "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces)},
                },
                ascii_only,
            ),
        ]
        if script.done:
            epilogue.append(_event("message_stop", {"type": "message_stop"}, ascii_only))
        kind = script.error_type or "overloaded_error"
        error: dict[str, Any] = {
            "type": "error",
            "error": {"type": kind, "message": script.error_message or _MESSAGES.get(kind, kind)},
        }
        return StreamPlan(
            prelude=prelude,
            events=events,
            epilogue=epilogue,
            error_event=_event("error", error, ascii_only),
            malformed=b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{\n\n',
        )


def cli(argv: Sequence[str] | None = None) -> None:
    """CLI: the shared options, with this dialect."""
    main(argv, server_cls=AnthropicServer)


if __name__ == "__main__":
    cli()
