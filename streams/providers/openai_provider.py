"""OpenAI-compatible provider: the official AsyncOpenAI client, with the SSE stream parsed by hand.

The SDK still builds, authenticates, sends and retries the request and maps HTTP errors;
it hands over the raw body (`client.post(..., cast_to=httpx2.Response)` with the SDK's
raw-stream header), and only the fields this app needs are read from each event (building
the SDK's chunk objects cost most of a streaming process's CPU).
The shared machinery (SSE framing, error classification, retry before the
first token) lives here too and is reused by the Anthropic provider.

Config keys (all optional; defaults from settings.LLM_* where they exist):
- base_url, api_key_env: endpoint and the variable holding its key (absent: the SDK's
  OPENAI_BASE_URL / OPENAI_API_KEY); api_key_optional: a keyless local server.
- timeout_s (read timeout: the longest silence between bytes), connect_timeout_s.
- max_retries (shared by the SDK's HTTP retries and ours), retry_backoff_s,
  max_retry_wait_s (a longer Retry-After fails at once instead of sleeping).
- http_client: "aiohttp" (default) or "httpx"; include_usage; max_tokens_param; extra_body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import re
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai

from .base import LLMRequest, ProviderError, Usage

try:  # the SDK's aiohttp transport is an extra; without it only httpx2 errors appear
    import aiohttp

    _CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, aiohttp.ClientConnectionError)
except ImportError:  # pragma: no cover - aiohttp is installed with openai[aiohttp]
    _CONNECTION_ERRORS = (OSError,)

logger = logging.getLogger(__name__)

# Failures after HTTP 200 that another attempt may cure (only before the first token).
RETRYABLE_CODES = frozenset({"rate_limited", "upstream_error", "timeout", "connection"})

# Provider error types/codes (OpenAI, Anthropic and common OpenAI-compatible servers) -> our codes.
ERROR_TYPE_CODES = {
    "invalid_api_key": "auth",
    "authentication_error": "auth",
    "permission_error": "auth",
    "permission_denied": "auth",
    "unauthorized": "auth",
    "rate_limit_exceeded": "rate_limited",
    "rate_limit_error": "rate_limited",
    "insufficient_quota": "rate_limited",
    "requests": "rate_limited",
    "tokens": "rate_limited",
    "server_error": "upstream_error",
    "api_error": "upstream_error",
    "overloaded_error": "upstream_error",
    "service_unavailable": "upstream_error",
    "timeout_error": "timeout",
    "timeout": "timeout",
}

# Backoff between our own retries: base * 2**n, capped, minus up to 25% jitter (as the SDKs do).
MAX_BACKOFF_S = 8.0
# After [DONE], read what is left of the body this long so the connection can be reused.
DRAIN_S = 0.1
# Pieces yielded back to back before the loop gets a turn (buffered data never suspends).
YIELD_EVERY = 64
# Longest SSE line kept in memory; a server that never sends a newline is broken.
MAX_LINE_BYTES = 8 * 1024 * 1024
# Longest upstream message quoted in an error.
MAX_QUOTE = 300
# Asks the SDKs (both Stainless-built) to return the response with its body unread.
RAW_STREAM_HEADERS = {"X-Stainless-Raw-Response": "stream"}

# Things that look like credentials, scrubbed from every upstream message we quote.
_SECRET_PATTERNS = re.compile(r"(?i)\b(?:sk|pk|rk|ak)-[\w\-\*\.]{6,}|bearer\s+\S+")


def setting(name: str, default: Any) -> Any:
    """A Django setting, or the default where Django is not configured (the benchmark)."""
    try:
        from django.conf import settings

        return getattr(settings, name, default)
    except Exception:  # ImproperlyConfigured or no Django: standalone use
        return default


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove the given secrets and anything key-shaped; shorten to MAX_QUOTE characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    text = _SECRET_PATTERNS.sub("[redacted]", text)
    return text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE] + "..."


def status_code(status: int) -> str:
    """Our code for an HTTP error status."""
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    return "upstream_error"


def error_details(body: Any) -> tuple[str | None, str | None]:
    """(type, message) from an error body in OpenAI, Anthropic or vLLM shape."""
    if isinstance(body, str):
        return None, body
    if not isinstance(body, dict):
        return None, None
    inner = body.get("error")
    if isinstance(inner, str):
        return None, inner
    if not isinstance(inner, dict):
        inner = body
    kind = inner.get("type") or inner.get("code")
    message = inner.get("message") or body.get("message")
    return (str(kind) if kind is not None else None), (str(message) if message is not None else None)


def transport_code(exc: BaseException) -> str:
    """ "timeout" or "connection" for a transport failure, judged by its root cause first.

    The root decides because the OpenAI SDK's vendored aiohttp adapter maps every
    aiohttp.ClientConnectionError, a refused connection included, to httpx2.ConnectTimeout.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    for error in reversed(chain):
        if isinstance(error, TimeoutError):  # aiohttp's timeouts subclass it too
            return "timeout"
        if isinstance(error, _CONNECTION_ERRORS):
            return "connection"
    if any(isinstance(error, httpx2.TimeoutException) for error in chain):
        return "timeout"
    return "connection"


def describe(exc: BaseException) -> str:
    """The most specific "Type: message" in an exception's cause chain (the SDKs' wrappers say little)."""
    best = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    current = exc.__cause__ or exc.__context__
    seen = 0
    while current is not None and seen < 10:
        # anyio's cancel scopes (httpx2's timeouts) add a CancelledError that explains nothing.
        if str(current) and not isinstance(current, asyncio.CancelledError):
            best = f"{type(current).__name__}: {current}"
        current = current.__cause__ or current.__context__
        seen += 1
    return " ".join(best.split())


def backoff(base_s: float, attempt: int) -> float:
    """Seconds to wait before our retry number `attempt` (0-based)."""
    return min(base_s * 2**attempt, MAX_BACKOFF_S) * (1 - 0.25 * random.random())


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


class SSEProvider:
    """Shared shape of the SDK-backed providers: one client per event loop, retry before the first token."""

    kind = "sse"
    # The SDK's base exception classes (set by subclasses once the SDK is imported).
    sdk_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, name: str, config: dict):
        """Read the settings entry; no I/O and no key lookup here."""
        self.name = name
        self.base_url: str | None = config.get("base_url")
        self.api_key_env: str | None = config.get("api_key_env")
        self.api_key_optional = bool(config.get("api_key_optional", False))
        self.read_timeout_s = float(
            config.get("timeout_s", config.get("read_timeout_s", setting("LLM_READ_TIMEOUT_S", 60.0)))
        )
        self.connect_timeout_s = float(
            config.get("connect_timeout_s", setting("LLM_CONNECT_TIMEOUT_S", 10.0))
        )
        self.max_retries = max(0, int(config.get("max_retries", setting("LLM_MAX_RETRIES", 2))))
        self.retry_backoff_s = float(config.get("retry_backoff_s", 0.5))
        self.max_retry_wait_s = float(config.get("max_retry_wait_s", 10.0))
        self.http_client = config.get("http_client", "aiohttp")
        self.extra_body: dict | None = config.get("extra_body")
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None
        self._secret_values: tuple[str, ...] = ()
        self._where = f"provider {name!r}"

    def __repr__(self) -> str:
        """Name and endpoint; never the key."""
        return f"<{type(self).__name__} {self.name!r} base_url={self.base_url!r}>"

    # --- subclass hooks ------------------------------------------------------------------

    def _new_client(self, api_key: str | None) -> Any:
        """Build the SDK client (inside the running loop)."""
        raise NotImplementedError

    def _request(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """The API path and JSON body of the streaming request."""
        raise NotImplementedError

    def _read(self, http: httpx2.Response) -> AsyncIterator[str | Usage]:
        """Parse the raw body into text pieces and a final Usage."""
        raise NotImplementedError

    def _default_key_env(self) -> str:
        """The SDK's own key variable, named in messages."""
        raise NotImplementedError

    # --- shared machinery ----------------------------------------------------------------

    def _timeout(self, timeout_cls: Any) -> Any:
        """SDK timeout: `read` bounds the silence between bytes, `connect` the TCP/TLS setup."""
        return timeout_cls(self.read_timeout_s, connect=self.connect_timeout_s)

    def _http_options(self, timeout: Any) -> dict[str, Any]:
        """Keyword arguments for the SDK's HTTP client: our timeout and the Retry-After guard."""
        return {"timeout": timeout, "event_hooks": {"response": [self._refuse_long_retry_after]}}

    async def _refuse_long_retry_after(self, response: httpx2.Response) -> None:
        """Tell the SDK not to retry when the server asks for a longer wait than max_retry_wait_s.

        The OpenAI SDK sleeps up to 120 s on Retry-After, the Anthropic SDK for as long as it
        is told; before the first token that is dead time, so fail fast with the real code.
        """
        if response.status_code < 400:
            return
        for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
            value = response.headers.get(name)
            if value is None:
                continue
            try:
                seconds = float(value) / scale
            except ValueError:  # an HTTP date: far enough away to count as long
                seconds = float("inf")
            if seconds > self.max_retry_wait_s:
                # Both SDKs obey this header before anything else.
                response.headers["x-should-retry"] = "false"
            return

    def _resolve_key(self) -> str | None:
        """The key from api_key_env (None: let the SDK read its own variable)."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.api_key_optional:
            return "unused"  # local servers ignore it; the SDKs insist on one
        raise ProviderError(
            "auth",
            f"{self._where}: the environment variable {self.api_key_env} is not set; "
            f"it must hold the API key for {self.base_url or 'the default endpoint'}",
        )

    def _client(self) -> Any:
        """The SDK client for the running loop, created on first use (aiohttp sessions are loop-bound)."""
        loop = asyncio.get_running_loop()
        if self._sdk is not None and self._sdk_loop is loop:
            return self._sdk
        if self._sdk is not None:
            # A client bound to another (finished) loop cannot be closed from this one.
            logger.debug("%s: new event loop, new client", self._where)
        key = self._resolve_key()
        client = self._new_client(key)
        # Whatever credential the client ended up with is scrubbed from messages.
        values = (key, getattr(client, "api_key", None), getattr(client, "auth_token", None))
        self._secret_values = tuple(v for v in values if isinstance(v, str) and len(v) >= 4)
        host = urlsplit(str(client.base_url)).netloc
        self._where = f"provider {self.name!r} ({host})"
        self._sdk, self._sdk_loop = client, loop
        return client

    def _secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a message."""
        return self._secret_values

    def _error(self, code: str, detail: str) -> ProviderError:
        """A ProviderError with the provider's name and host, secrets scrubbed."""
        return ProviderError(code, redact(f"{self._where}: {detail}", self._secrets()))

    def _sdk_error(self, exc: BaseException) -> ProviderError:
        """Map an SDK exception raised while opening the request (after the SDK's own retries)."""
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            kind, message = error_details(getattr(exc, "body", None))
            code = status_code(status)
            detail = f"HTTP {status}"
            if kind:
                detail += f" {kind}"
            if message:
                detail += f": {message}"
            if code == "auth":
                detail += f" (check {self.api_key_env or self._default_key_env()})"
            return self._error(code, detail)
        return self._transport_error(exc, "while opening the request")

    def _transport_error(self, exc: BaseException, when: str) -> ProviderError:
        """Map a transport failure (refused, reset, cut short, timed out) with its root cause."""
        code = transport_code(exc)
        if code == "timeout":
            what = (
                f"timed out {when} (connect timeout {self.connect_timeout_s:g} s, "
                f"read timeout {self.read_timeout_s:g} s)"
            )
        elif when == "during the stream":
            what = "connection lost during the stream"
        else:
            what = f"connection failed {when}"
        return self._error(code, f"{what}: {describe(exc)}")

    def _stream_error(self, obj: dict) -> ProviderError:
        """An error object the upstream sent inside a 200 stream."""
        kind, message = error_details(obj)
        code = ERROR_TYPE_CODES.get(kind or "")
        if code is None:
            raw = (obj.get("error") if isinstance(obj.get("error"), dict) else obj) or {}
            status = raw.get("code") if isinstance(raw.get("code"), int) else raw.get("status")
            code = status_code(status) if isinstance(status, int) else "upstream_error"
        return self._error(code, f"error in the stream: {kind or 'error'}: {message or obj}")

    async def _read_sse(self, http: httpx2.Response, decoder: Any) -> AsyncIterator[str | Usage]:
        """Drive a decoder over the raw body: one text piece per network read, then its Usage."""
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
                    raise self._transport_error(exc, "during the stream") from None
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
            elif not decoder.finished:
                # Without the end marker or a stop reason the answer may be cut short.
                raise self._error("connection", f"the stream ended before {decoder.end_marker}")
        finally:
            await chunks.aclose()
        usage = decoder.usage()
        if usage is not None:
            yield usage

    @asynccontextmanager
    async def _open(
        self, client: Any, request: LLMRequest, max_retries: int
    ) -> AsyncIterator[httpx2.Response]:
        """POST the request through the SDK (auth, retries, HTTP errors); yield the unread response.

        The SDK's generic `post` rather than its typed `create()`: for these plain params
        `create()` adds only a TypedDict transform over its every keyword, ~0.5 ms of CPU
        per request (40% of the SDK's cost), paid four times per run.
        """
        path, body = self._request(request)
        if self.extra_body:
            body.update(self.extra_body)
        options: dict[str, Any] = {"headers": RAW_STREAM_HEADERS}
        if max_retries != self.max_retries:
            options["max_retries"] = max_retries
        http = await client.post(path, cast_to=httpx2.Response, body=body, options=options)
        try:
            yield http
        finally:
            await http.aclose()

    async def stream(self, request: LLMRequest) -> AsyncIterator[str | Usage]:
        """Stream text pieces then a Usage; retry failures that happen before the first token only."""
        client = self._client()
        budget = self.max_retries
        attempt = 0
        while True:
            delivered = False
            try:
                async with self._open(client, request, budget) as http:
                    # The SDK's retries of this attempt (it numbers them in a request header)
                    # spend the same budget as ours.
                    budget -= int(http.request.headers.get("x-stainless-retry-count", 0))
                    count = 0
                    async with aclosing(self._read(http)) as items:
                        async for item in items:
                            if type(item) is str:
                                delivered = True
                                count += 1
                                if count % YIELD_EVERY == 0:
                                    await asyncio.sleep(0)
                            yield item
                return
            except ProviderError as exc:
                # Once text reached the caller a retry would duplicate it: fail instead.
                if delivered or exc.code not in RETRYABLE_CODES or budget <= 0:
                    raise
                failure = exc
            except self.sdk_errors as exc:
                raise self._sdk_error(exc) from None
            except (OSError, httpx2.HTTPError) as exc:  # transport trouble the SDK did not wrap
                raise self._transport_error(exc, "while opening the request") from None
            budget -= 1
            delay = backoff(self.retry_backoff_s, attempt)
            attempt += 1
            logger.warning(
                "%s (before the first token); retrying in %.2f s, %d retries left",
                failure.message,
                delay,
                budget,
            )
            await asyncio.sleep(delay)

    async def aclose(self) -> None:
        """Close the SDK client and its HTTP connections (at shutdown)."""
        client, self._sdk, self._sdk_loop = self._sdk, None, None
        if client is not None:
            await client.close()


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
        if api_key is None and self.api_key_optional and not os.environ.get("OPENAI_API_KEY"):
            api_key = "unused"
        http_client = None
        if self.http_client == "aiohttp":
            try:
                http_client = openai.DefaultAioHttpClient(**self._http_options(timeout))
            except RuntimeError:  # the aiohttp extra is missing
                logger.warning("%s: openai[aiohttp] is not installed; using the httpx transport", self._where)
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
                "auth", f"{self._where}: OPENAI_API_KEY is not set (or set api_key_env for this provider)"
            ) from None

    def _request(self, request: LLMRequest) -> tuple[str, dict[str, Any]]:
        """POST chat/completions with stream=True."""
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
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
        """Text from choices[0].delta.content, usage from the last chunk that has it."""
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
            raise self._transport_error(exc, "reading a non-stream answer") from None
        obj = decode_json(body, self._where)
        if obj.get("error") or obj.get("object") == "error":
            raise self._stream_error(obj)
        try:
            content = obj["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise self._error("bad_response", "a JSON answer without choices[0].message.content") from None
        if content:
            yield content
        usage = obj.get("usage")
        if usage:
            yield Usage(
                prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens")
            )


class OpenAIDecoder:
    """Per-stream state of a chat.completions SSE answer."""

    __slots__ = ("_usage", "done", "finished", "provider")
    end_marker = "[DONE]"

    def __init__(self, provider: SSEProvider):
        """Nothing seen yet."""
        self.provider = provider
        self.done = False
        self.finished = False
        self._usage: dict | None = None

    def apply(self, event: str | None, data: bytes, texts: list[str]) -> None:
        """One chunk: collect its text, keep its usage, notice finish_reason, [DONE] or an error."""
        if data == b"[DONE]":
            self.done = True
            return
        obj = decode_json(data, self.provider._where)
        if event == "error" or obj.get("error") or obj.get("object") == "error":
            raise self.provider._stream_error(obj)
        choices = obj.get("choices")
        if choices:
            choice = choices[0]
            delta = choice.get("delta")
            if delta:
                content = delta.get("content")
                if content:
                    texts.append(content)
            if choice.get("finish_reason"):
                self.finished = True
        usage = obj.get("usage")
        if usage:
            self._usage = usage

    def usage(self) -> Usage | None:
        """The last usage the server reported, if any."""
        return openai_usage(self._usage) if self._usage else None


def openai_usage(usage: dict) -> Usage:
    """Our Usage from an OpenAI usage object."""
    return Usage(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read the rest of a finished body briefly, so HTTP/1.1 can reuse the connection."""
    try:
        async with asyncio.timeout(DRAIN_S):
            async for _ in chunks:
                pass
    except Exception:  # the answer is complete; a slow or broken tail only costs the connection
        return


def build(name: str, config: dict) -> OpenAIProvider:
    """Build from a settings entry."""
    return OpenAIProvider(name, config)
