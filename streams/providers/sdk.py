"""The shared base of the SDK-backed providers: one client per event loop, retry before the first token.

The SDK builds, authenticates, sends and retries the request and maps HTTP errors; it hands
over the raw body (streams.compat.sdk_post_stream) and the subclass's decoder reads only the
fields this app needs from each event (building the SDK's chunk objects cost most of a
streaming process's CPU).

Config keys (all optional; defaults from settings.LLM_* where they exist):
- base_url, api_key_env: endpoint and the variable holding its key (absent: the SDK's own
  variables); api_key_optional: a keyless local server.
- timeout_s (read timeout: the longest silence between bytes), connect_timeout_s.
- max_retries (shared by the SDK's HTTP retries and ours), retry_backoff_s,
  max_retry_wait_s (a longer Retry-After fails at once instead of sleeping).
- http_client: "aiohttp" (default) or "httpx"; extra_body (fields added to the request body).
- max_concurrency: requests in flight at once (per process); more wait for a slot, in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx2

from .. import compat
from .base import LLMRequest, ProviderError, Usage
from .errors import RETRYABLE_CODES, ErrorReporter, backoff, retry_after_s
from .limits import InFlightCap
from .sse import read_sse

logger = logging.getLogger(__name__)

# Pieces yielded back to back before the loop gets a turn (buffered data never suspends).
YIELD_EVERY = 64


def setting(name: str, default: Any) -> Any:
    """A Django setting, or the default where Django is not configured (the benchmark)."""
    try:
        from django.conf import settings

        return getattr(settings, name, default)
    except Exception:  # ImproperlyConfigured or no Django: standalone use
        return default


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
        self.cap = InFlightCap(config.get("max_concurrency"))
        self._sdk: Any = None
        self._sdk_loop: asyncio.AbstractEventLoop | None = None
        self.errors = ErrorReporter(
            f"provider {name!r}",
            self.api_key_env or self._default_key_env(),
            self.read_timeout_s,
            self.connect_timeout_s,
        )

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
        """Parse the raw body into text pieces and a final Usage (incomplete: ProviderError)."""
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
        if response.status_code >= 400 and (retry_after_s(response) or 0) > self.max_retry_wait_s:
            compat.sdk_forbid_retry(response)

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
            f"{self.errors.where}: the environment variable {self.api_key_env} is not set; "
            f"it must hold the API key for {self.base_url or 'the default endpoint'}",
        )

    def _client(self) -> Any:
        """The SDK client for the running loop, created on first use (aiohttp sessions are loop-bound)."""
        loop = asyncio.get_running_loop()
        if self._sdk is not None and self._sdk_loop is loop:
            return self._sdk
        if self._sdk is not None:
            # A client bound to another (finished) loop cannot be closed from this one.
            logger.debug("%s: new event loop, new client", self.errors.where)
        key = self._resolve_key()
        client = self._new_client(key)
        # Whatever credential the client ended up with is scrubbed from messages.
        values = (key, getattr(client, "api_key", None), getattr(client, "auth_token", None))
        self.errors.secrets = tuple(v for v in values if isinstance(v, str) and len(v) >= 4)
        host = urlsplit(str(client.base_url)).netloc
        self.errors.where = f"provider {self.name!r} ({host})"
        self._sdk, self._sdk_loop = client, loop
        return client

    def _read_sse(self, http: httpx2.Response, decoder: Any) -> AsyncIterator[str | Usage]:
        """The body's text pieces and final Usage, as the decoder reads its events."""
        return read_sse(http, decoder, self.errors)

    @asynccontextmanager
    async def _open(
        self, client: Any, request: LLMRequest, max_retries: int
    ) -> AsyncIterator[httpx2.Response]:
        """POST the request through the SDK (auth, retries, HTTP errors); yield the unread response."""
        path, body = self._request(request)
        if self.extra_body:
            body.update(self.extra_body)
        retries = max_retries if max_retries != self.max_retries else None
        http = await compat.sdk_post_stream(client, path, body, retries)
        try:
            yield http
        finally:
            await http.aclose()

    async def stream(self, request: LLMRequest) -> AsyncIterator[str | Usage]:
        """Stream text pieces then a Usage; retry failures that happen before the first token only.

        The request waits for a slot under max_concurrency first; the slot is held over the
        retries and freed when the stream is closed (done, failed or cancelled).
        """
        client = self._client()
        async with self.cap.slot():
            budget = self.max_retries
            attempt = 0
            while True:
                delivered = False
                try:
                    async with self._open(client, request, budget) as http:
                        # The SDK's retries of this attempt spend the same budget as ours.
                        budget -= compat.sdk_retries_taken(http)
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
                    raise self.errors.sdk_error(exc) from None
                except (OSError, httpx2.HTTPError) as exc:  # transport trouble the SDK did not wrap
                    raise self.errors.transport_error(exc, "while opening the request") from None
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
