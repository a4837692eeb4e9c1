"""Provider failures as stable codes (HTTP statuses, upstream error types, transport trouble), redacted.

Also the retry policy that goes with them: which codes are worth a retry, how long to wait.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import httpx2

from .base import ProviderError

try:  # the SDK's aiohttp transport is an extra; without it only httpx2 errors appear
    import aiohttp

    _CONNECTION_ERRORS: tuple[type[BaseException], ...] = (OSError, aiohttp.ClientConnectionError)
except ImportError:  # pragma: no cover - aiohttp is installed with openai[aiohttp]
    _CONNECTION_ERRORS = (OSError,)

# Failures after HTTP 200 that another attempt may cure (only before the first token).
RETRYABLE_CODES = frozenset({"rate_limited", "upstream_error", "timeout", "connection", "incomplete"})

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

# Longest upstream message quoted in an error.
MAX_QUOTE = 300

# Things that look like credentials, scrubbed from every upstream message we quote.
_SECRET_PATTERNS = re.compile(r"(?i)\b(?:sk|pk|rk|ak)-[\w\-\*\.]{6,}|bearer\s+\S+")


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


def backoff(base_s: float, attempt: int) -> float:
    """Seconds to wait before our retry number `attempt` (0-based)."""
    return min(base_s * 2**attempt, MAX_BACKOFF_S) * (1 - 0.25 * random.random())


def retry_after_s(response: httpx2.Response) -> float | None:
    """The wait an error response asks for (Retry-After-Ms or Retry-After; a date counts as endless)."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(name)
        if value is not None:
            try:
                return float(value) / scale
            except ValueError:  # an HTTP date: far enough away to count as long
                return float("inf")
    return None


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


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type."""
    names = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    names.update({list: "an array", dict: "an object", type(None): "null"})
    return names.get(type(value), type(value).__name__)


class ErrorReporter:
    """Builds one provider's ProviderErrors: its name and host in front, its secrets scrubbed."""

    __slots__ = ("connect_timeout_s", "key_env", "read_timeout_s", "secrets", "where")

    def __init__(self, where: str, key_env: str, read_timeout_s: float, connect_timeout_s: float):
        """`key_env` is the variable an auth error tells the operator to check."""
        self.where = where
        self.key_env = key_env
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.secrets: tuple[str, ...] = ()

    def error(self, code: str, detail: str) -> ProviderError:
        """A ProviderError with the provider's name and host, secrets scrubbed."""
        return ProviderError(code, redact(f"{self.where}: {detail}", self.secrets))

    def wrong_type(self, field: str, value: Any, expected: str) -> ProviderError:
        """bad_response for a field of the upstream's answer that has the wrong JSON type."""
        return self.error("bad_response", f"{field} is {_json_type(value)}, not {expected}")

    def sdk_error(self, exc: BaseException) -> ProviderError:
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
                detail += f" (check {self.key_env})"
            return self.error(code, detail)
        return self.transport_error(exc, "while opening the request")

    def transport_error(self, exc: BaseException, when: str) -> ProviderError:
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
        return self.error(code, f"{what}: {describe(exc)}")

    def stream_error(self, obj: dict) -> ProviderError:
        """An error object the upstream sent inside a 200 stream."""
        kind, message = error_details(obj)
        code = ERROR_TYPE_CODES.get(kind or "")
        if code is None:
            raw = (obj.get("error") if isinstance(obj.get("error"), dict) else obj) or {}
            status = raw.get("code") if isinstance(raw.get("code"), int) else raw.get("status")
            code = status_code(status) if isinstance(status, int) else "upstream_error"
        return self.error(code, f"error in the stream: {kind or 'error'}: {message or obj}")
