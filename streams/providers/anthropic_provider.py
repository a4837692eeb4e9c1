"""Anthropic provider: the official SDK (an optional dependency), with the Messages SSE parsed by hand.

As for OpenAI, the SDK sends, authenticates and retries the request and hands over the raw
events (message_start, content_block_delta, message_delta, message_stop, ping, and `error`
after HTTP 200), of which only the text and the usage are read.

Config keys: those of the SDK base (streams/providers/sdk.py), plus default_max_tokens (1024:
the Messages API requires max_tokens).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .base import LLMRequest, ProviderError, Usage
from .errors import redact
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
        if api_key is None and self.api_key_optional and not os.environ.get("ANTHROPIC_API_KEY"):
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
            "messages": [{"role": "user", "content": request.prompt}],
            "stream": True,
        }
        if request.system:
            params["system"] = request.system
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return "/v1/messages", params

    def _read(self, http: Any):
        """Text from text_delta events; usage from message_start and message_delta."""
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
        if not isinstance(content, list):
            raise self.errors.error("bad_response", "a JSON answer without content blocks")
        text = "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        if text:
            yield text
        usage = obj.get("usage") or {}
        yield Usage(prompt_tokens=_input_tokens(usage), completion_tokens=usage.get("output_tokens"))


def _input_tokens(usage: dict) -> int | None:
    """All prompt tokens: uncached plus those written to and read from the prompt cache."""
    parts = [usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    parts = [p for p in parts if isinstance(p, int)]
    return sum(parts) if parts else None


class AnthropicDecoder:
    """Per-stream state of a Messages SSE answer."""

    __slots__ = ("_input", "_output", "done", "finished", "provider")
    end_marker = "message_stop"

    def __init__(self, provider: AnthropicProvider):
        """Nothing seen yet."""
        self.provider = provider
        self.done = False
        self.finished = False
        self._input: int | None = None
        self._output: int | None = None

    def apply(self, event: str | None, data: bytes, texts: list[str]) -> None:
        """One event: text deltas collected, usage kept, the end or an error noticed."""
        obj = decode_json(data, self.provider.errors.where)
        kind = obj.get("type") or event
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            if delta.get("type") == "text_delta":
                text = delta.get("text")
                if text:
                    texts.append(text)
        elif kind == "message_start":
            usage = (obj.get("message") or {}).get("usage") or {}
            self._input = _input_tokens(usage)
            self._output = usage.get("output_tokens", self._output)
        elif kind == "message_delta":
            usage = obj.get("usage") or {}
            # output_tokens here is cumulative; newer API versions may restate the input too.
            self._output = usage.get("output_tokens", self._output)
            self._input = _input_tokens(usage) or self._input
            if (obj.get("delta") or {}).get("stop_reason"):
                self.finished = True
        elif kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                texts.append(block["text"])
        elif kind == "message_stop":
            self.done = True
        elif kind == "error" or event == "error":
            raise self.provider.errors.stream_error(obj)
        # ping, content_block_stop and event types added later carry nothing this app needs.

    def usage(self) -> Usage | None:
        """Input tokens from message_start, output tokens from the last message_delta."""
        if self._input is None and self._output is None:
            return None
        return Usage(prompt_tokens=self._input, completion_tokens=self._output)


def build(name: str, config: dict) -> AnthropicProvider:
    """Build from a settings entry (works without the SDK; streaming then says what is missing)."""
    return AnthropicProvider(name, config)
