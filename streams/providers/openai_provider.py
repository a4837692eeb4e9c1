"""OpenAI-compatible provider: chat completions through the official AsyncOpenAI client, SSE read by hand.

Config keys: those of the SDK base (streams/providers/sdk.py), plus include_usage (ask for
stream_options.include_usage, default on) and max_tokens_param (max_tokens or, for newer
OpenAI models, max_completion_tokens).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from . import fields
from .base import LLMRequest, ProviderError, Usage
from .errors import ErrorReporter
from .sdk import SSEProvider
from .sse import decode_json

logger = logging.getLogger(__name__)


class OpenAIProvider(SSEProvider):
    """Chat completions from any OpenAI-compatible server."""

    kind = "openai"
    sdk_errors = (openai.OpenAIError,)

    def __init__(self, name: str, config: dict):
        """Read the OpenAI-specific options too."""
        super().__init__(name, config)
        self.include_usage = bool(config.get("include_usage", True))
        # Newer OpenAI models want max_completion_tokens; compatible servers know max_tokens.
        self.max_tokens_param = config.get("max_tokens_param", "max_tokens")

    def _default_key_env(self) -> str:
        """The OpenAI SDK's key variable."""
        return "OPENAI_API_KEY"

    def _new_client(self, api_key: str | None) -> openai.AsyncOpenAI:
        """AsyncOpenAI on the aiohttp transport (about a third of httpx's CPU per chunk)."""
        timeout = self._timeout(openai.Timeout)
        if api_key is None and self.api_key_optional:
            # Keyless: never let the SDK fall back to OPENAI_API_KEY, which would send that key to
            # this provider's endpoint (a local or third-party server).
            api_key = "unused"
        http_client = None
        if self.http_client == "aiohttp":
            try:
                http_client = openai.DefaultAioHttpClient(**self._http_options(timeout))
            except RuntimeError:  # the aiohttp extra is missing
                logger.warning(
                    "%s: openai[aiohttp] is not installed; using the httpx transport", self.errors.where
                )
        if http_client is None:
            http_client = openai.DefaultAsyncHttpxClient(**self._http_options(timeout))
        try:
            return openai.AsyncOpenAI(
                api_key=api_key,
                base_url=self.base_url,
                timeout=timeout,
                max_retries=self.max_retries,
                http_client=http_client,
            )
        except openai.OpenAIError:
            # Only raised for missing credentials; its text names no secret but is long.
            raise ProviderError(
                "auth",
                f"{self.errors.where}: OPENAI_API_KEY is not set (or set api_key_env for this provider)",
            ) from None

    def _request(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """POST chat/completions with stream=True."""
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.extend(request.history)
        messages.append({"role": "user", "content": request.prompt})
        params: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True}
        if self.include_usage:
            params["stream_options"] = {"include_usage": True}
        if request.max_tokens:
            params[self.max_tokens_param] = request.max_tokens
        if request.temperature is not None:
            params["temperature"] = request.temperature
        return "/chat/completions", params

    def _read(self, http: httpx2.Response) -> AsyncIterator[str | Usage]:
        """Text from choices[0].delta.content, usage from the last chunk that has it, the finish reason."""
        content_type = http.headers.get("content-type", "")
        # Anything but JSON is read as SSE: some servers label their streams loosely.
        if "json" in content_type:
            return self._read_json(http)
        return self._read_sse(http, OpenAIDecoder(self))

    async def _read_json(self, http: httpx2.Response) -> AsyncIterator[str | Usage]:
        """A 200 that is not a stream: an error object, or a whole answer (the server ignored stream)."""
        try:
            body = await http.aread()
        except Exception as exc:
            raise self.errors.transport_error(exc, "reading a non-stream answer") from None
        obj = decode_json(body, self.errors.where)
        if obj.get("error") or obj.get("object") == "error":
            raise self.errors.stream_error(obj)
        choices = obj.get("choices")
        if type(choices) is not list or not choices:
            raise self.errors.wrong_type("choices", choices, "a non-empty array")
        choice = choices[0]
        message = choice.get("message") if type(choice) is dict else None
        if type(message) is not dict:
            raise self.errors.wrong_type("choices[0].message", message, "an object")
        content = message.get("content")
        if content is not None and type(content) is not str:
            raise self.errors.wrong_type("choices[0].message.content", content, "a string")
        reason = fields.reason(self.errors, choice.get("finish_reason"), "finish_reason")
        if reason is None:
            raise self.errors.error("incomplete", "a JSON answer without a finish_reason")
        if content:
            yield content
        yield openai_usage(self.errors, obj.get("usage"), reason)


class OpenAIDecoder:
    """Per-stream state of a chat.completions SSE answer; every field it reads is type-checked."""

    __slots__ = ("_usage", "done", "errors", "finish_reason")
    incomplete_detail = "the stream ended without a finish_reason: the answer was cut short"

    def __init__(self, provider: SSEProvider):
        """Nothing seen yet."""
        self.errors = provider.errors
        self.done = False
        self.finish_reason: str | None = None
        self._usage: Usage | None = None

    @property
    def finished(self) -> bool:
        """Whether the server said the answer is complete (a finish_reason; [DONE] alone is not)."""
        return self.finish_reason is not None

    def apply(self, event: str | None, data: bytes, texts: list[str]) -> None:
        """One chunk: collect its text, keep its usage, notice finish_reason, [DONE] or an error."""
        if data == b"[DONE]":
            self.done = True
            return
        obj = decode_json(data, self.errors.where)
        if event == "error" or obj.get("error") or obj.get("object") == "error":
            raise self.errors.stream_error(obj)
        choices = obj.get("choices")
        if choices:
            if type(choices) is not list:
                raise self.errors.wrong_type("choices", choices, "an array")
            choice = choices[0]
            if type(choice) is not dict:
                raise self.errors.wrong_type("choices[0]", choice, "an object")
            delta = choice.get("delta")
            if delta:
                if type(delta) is not dict:
                    raise self.errors.wrong_type("choices[0].delta", delta, "an object")
                content = delta.get("content")
                if content:
                    if type(content) is not str:
                        raise self.errors.wrong_type("choices[0].delta.content", content, "a string")
                    texts.append(content)
                elif content is not None and content != "":
                    raise self.errors.wrong_type("choices[0].delta.content", content, "a string")
            reason = choice.get("finish_reason")
            if reason is not None:
                # A later chunk with an empty reason (some servers) does not undo a real one.
                self.finish_reason = fields.reason(self.errors, reason, "finish_reason") or self.finish_reason
        elif choices is not None and type(choices) is not list:
            raise self.errors.wrong_type("choices", choices, "an array")
        usage = obj.get("usage")
        if usage is not None:
            if type(usage) is not dict:
                raise self.errors.wrong_type("usage", usage, "an object")
            if usage:
                self._usage = openai_usage(self.errors, usage, None)

    def usage(self) -> Usage:
        """The last usage the server reported (if any) and the finish reason."""
        if self._usage is None:
            return Usage(finish_reason=self.finish_reason)
        return dataclasses.replace(self._usage, finish_reason=self.finish_reason)


def openai_usage(errors: ErrorReporter, usage: Any, finish_reason: str | None) -> Usage:
    """Our Usage from an OpenAI usage object (or none) and the finish reason."""
    if usage is None:
        return Usage(finish_reason=finish_reason)
    if type(usage) is not dict:
        raise errors.wrong_type("usage", usage, "an object")
    return Usage(
        prompt_tokens=fields.count(errors, usage, "prompt_tokens"),
        completion_tokens=fields.count(errors, usage, "completion_tokens"),
        finish_reason=finish_reason,
    )


def build(name: str, config: dict) -> OpenAIProvider:
    """Build from a settings entry."""
    return OpenAIProvider(name, config)
