"""Anthropic provider: the official SDK (an optional dependency), with the Messages SSE parsed by hand.

As for OpenAI, the SDK sends, authenticates and retries the request and hands over the raw
events (message_start, content_block_delta, message_delta, message_stop, ping, and `error`
after HTTP 200), of which only the text and the usage are read.

Config keys: those of the SDK base (streams/providers/sdk.py), plus default_max_tokens (1024:
the Messages API requires max_tokens).
"""

from __future__ import annotations

import logging
from typing import Any

from . import fields
from .base import LLMRequest, ProviderError, Usage
from .errors import ErrorReporter, redact
from .sdk import SSEProvider
from .sse import decode_json

logger = logging.getLogger(__name__)

# The Messages API refuses a request without max_tokens.
DEFAULT_MAX_TOKENS = 1024

MISSING_SDK = "the anthropic package is not installed: pip install anthropic"


def _import_sdk() -> Any:
    """The anthropic module, or None when it is not installed."""
    try:
        import anthropic
    except ImportError:
        return None
    return anthropic


class AnthropicProvider(SSEProvider):
    """Messages from api.anthropic.com or a compatible server."""

    kind = "anthropic"

    def __init__(self, name: str, config: dict):
        """Read the Anthropic-specific options; import the SDK now if it is there (slow import)."""
        super().__init__(name, config)
        self.default_max_tokens = int(config.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        if _import_sdk() is None:
            logger.info("provider %r: %s", name, MISSING_SDK)

    def _default_key_env(self) -> str:
        """The Anthropic SDK's key variable."""
        return "ANTHROPIC_API_KEY"

    def _new_client(self, api_key: str | None) -> Any:
        """AsyncAnthropic on the aiohttp transport; clear errors for a missing SDK or key."""
        anthropic = _import_sdk()
        if anthropic is None:
            raise ProviderError("upstream_error", f"{self.errors.where}: {MISSING_SDK}")
        self.sdk_errors = (anthropic.AnthropicError,)
        timeout = self._timeout(anthropic.Timeout)
        if api_key is None and self.api_key_optional:
            # Keyless: never let the SDK fall back to ANTHROPIC_API_KEY, which would send that key to
            # this provider's endpoint (a local or third-party server).
            api_key = "unused"
        http_client = None
        if self.http_client == "aiohttp":
            try:
                http_client = anthropic.DefaultAioHttpClient(**self._http_options(timeout))
            except RuntimeError:  # the aiohttp extra is missing
                logger.warning(
                    "%s: anthropic[aiohttp] is not installed; using the httpx transport", self.errors.where
                )
        if http_client is None:
            http_client = anthropic.DefaultAsyncHttpxClient(**self._http_options(timeout))
        kwargs: dict[str, Any] = {}
        if api_key is not None:
            kwargs["api_key"] = api_key
        try:
            client = anthropic.AsyncAnthropic(
                base_url=self.base_url,
                timeout=timeout,
                max_retries=self.max_retries,
                http_client=http_client,
                **kwargs,
            )
        except anthropic.AnthropicError as exc:
            # Without a key the SDK looks for profiles; a broken one raises here (CredentialsError).
            detail = f"ANTHROPIC_API_KEY is not set and the SDK found no usable credentials: {exc}"
            raise ProviderError("auth", redact(f"{self.errors.where}: {detail}")) from None
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            # The SDK would only fail at request time, with a TypeError.
            raise ProviderError(
                "auth",
                f"{self.errors.where}: ANTHROPIC_API_KEY is not set (or set api_key_env for this provider)",
            )
        return client

    def _request(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """POST /v1/messages with stream=True; the system prompt is the top-level `system`."""
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": [*request.history, {"role": "user", "content": request.prompt}],
            "stream": True,
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return "/v1/messages", params

    def _read(self, http: Any):
        """Text from text_delta events; usage from message_start and message_delta; the stop reason."""
        content_type = http.headers.get("content-type", "")
        if "json" in content_type:
            return self._read_other(http)
        return self._read_sse(http, AnthropicDecoder(self))

    async def _read_other(self, http: Any):
        """A 200 that is not a stream: an error object, or a whole message (the server ignored stream)."""
        try:
            body = await http.aread()
        except Exception as exc:
            raise self.errors.transport_error(exc, "reading a non-stream answer") from None
        obj = decode_json(body, self.errors.where)
        if obj.get("type") == "error":
            raise self.errors.stream_error(obj)
        content = obj.get("content")
        if type(content) is not list:
            raise self.errors.wrong_type("content", content, "an array of content blocks")
        texts = []
        for i, block in enumerate(content):
            if type(block) is not dict:
                raise self.errors.wrong_type(f"content[{i}]", block, "an object")
            if block.get("type") == "text":
                texts.append(fields.text(self.errors, block, "text", f"content[{i}].text"))
        reason = _stop_reason(self.errors, obj)
        if reason is None:
            raise self.errors.error("incomplete", "a JSON answer without a stop_reason")
        text = "".join(texts)
        if text:
            yield text
        usage = fields.obj(self.errors, obj, "usage")
        yield Usage(
            _input_tokens(self.errors, usage), fields.count(self.errors, usage, "output_tokens"), reason
        )


# Anthropic stop reasons in OpenAI's words (Usage.finish_reason); others pass unchanged.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}


def _stop_reason(errors: ErrorReporter, holder: dict) -> str | None:
    """holder["stop_reason"] in OpenAI's words; None when absent."""
    value = fields.reason(errors, holder.get("stop_reason"), "stop_reason")
    return STOP_REASONS.get(value, value) if value is not None else None


def _input_tokens(errors: ErrorReporter, usage: dict) -> int | None:
    """All prompt tokens: uncached plus those written to and read from the prompt cache."""
    parts = [
        fields.count(errors, usage, k)
        for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    parts = [p for p in parts if p is not None]
    return sum(parts) if parts else None


class AnthropicDecoder:
    """Per-stream state of a Messages SSE answer; every field it reads is type-checked."""

    __slots__ = ("_input", "_output", "_stopped", "done", "errors", "finish_reason")
    incomplete_detail = "the stream ended without message_stop or a stop_reason: the answer was cut short"

    def __init__(self, provider: AnthropicProvider):
        """Nothing seen yet."""
        self.errors = provider.errors
        self.done = False
        self.finish_reason: str | None = None
        self._stopped = False
        self._input: int | None = None
        self._output: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the server said the message is complete (a stop_reason, or message_stop)."""
        return self._stopped or self.finish_reason is not None

    def apply(self, event: str | None, data: bytes, texts: list[str]) -> None:
        """One event: text deltas collected, usage kept, the end or an error noticed."""
        errors = self.errors
        obj = decode_json(data, errors.where)
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            delta = fields.obj(errors, obj, "delta")
            if delta.get("type") == "text_delta":
                text = fields.text(errors, delta, "text", "delta.text")
                if text:
                    texts.append(text)
        elif kind == "message_start":
            usage = fields.obj(errors, fields.obj(errors, obj, "message"), "usage")
            self._input = _input_tokens(errors, usage)
            output = fields.count(errors, usage, "output_tokens")
            self._output = output if output is not None else self._output
        elif kind == "message_delta":
            usage = fields.obj(errors, obj, "usage")
            # output_tokens here is cumulative; newer API versions may restate the input too.
            output = fields.count(errors, usage, "output_tokens")
            self._output = output if output is not None else self._output
            self._input = _input_tokens(errors, usage) or self._input
            reason = _stop_reason(errors, fields.obj(errors, obj, "delta"))
            self.finish_reason = reason or self.finish_reason
        elif kind == "content_block_start":
            block = fields.obj(errors, obj, "content_block")
            if block.get("type") == "text":
                text = fields.text(errors, block, "text", "content_block.text")
                if text:
                    texts.append(text)
        elif kind == "message_stop":
            self.done = self._stopped = True
        elif kind == "error" or event == "error":
            raise errors.stream_error(obj)
        elif kind is not None and type(kind) is not str:
            raise errors.wrong_type("type", kind, "a string")
        # ping, content_block_stop and event types added later carry nothing this app needs.

    def usage(self) -> Usage:
        """Input tokens from message_start, output tokens from the last message_delta, the stop reason."""
        return Usage(
            prompt_tokens=self._input, completion_tokens=self._output, finish_reason=self.finish_reason
        )


def build(name: str, config: dict) -> AnthropicProvider:
    """Build from a settings entry (works without the SDK; streaming then says what is missing)."""
    return AnthropicProvider(name, config)
