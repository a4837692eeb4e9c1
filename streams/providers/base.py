"""The one small interface every LLM provider implements."""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LLMRequest:
    """What a task asks of a provider: a rendered prompt and its sampling options."""

    model: str
    prompt: str
    system: str = ""
    max_tokens: int | None = None
    temperature: float | None = None
    # Earlier turns as chat messages ({"role": "user"|"assistant", "content"}), oldest first,
    # sent before the prompt (a task set to receive its conversation's history this way).
    history: tuple[dict, ...] = ()


@dataclass(frozen=True)
class Usage:
    """What the provider reported for one call: token counts and why the answer ended.

    finish_reason uses OpenAI's words ("stop", "length", "tool_calls", "content_filter", ...);
    other providers' reasons are mapped to them where one fits.
    """

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class ProviderError(Exception):
    """A provider call failed; `code` is a stable code for clients, `message` never holds a secret."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Provider(Protocol):
    """Streams a completion: yields text pieces in order, then at most one Usage.

    A stream that ends without an error is a complete answer; one the upstream did not
    finish (no finish reason, connection cut) raises ProviderError ("incomplete", "connection").
    """

    def stream(self, request: LLMRequest) -> AsyncIterator[str | Usage]:
        """Return an async generator; closing it must close the upstream request."""
        ...
