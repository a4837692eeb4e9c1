"""Fallbacks: an ordered list of (provider, model) routes, the next one tried when one fails early.

Only a failure before the first text piece moves on: once text reached the caller, another
route would answer differently and the client would see two answers spliced together, so
that failure is the task's. Each provider's own retries happen first, inside its stream.

    stream = stream_with_fallbacks(("openai", "gpt-4o-mini"), [("local", "smollm2")], request)
    async with aclosing(stream):
        async for item in stream:
            ...
    stats.update(stream.stats())      # provider, model, fallbacks_tried
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing

from .base import LLMRequest, Provider, ProviderError, Usage

logger = logging.getLogger(__name__)

Route = tuple[str, str]  # (provider name in settings.STREAMS_PROVIDERS, model)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """A route that failed before its first text piece."""

    provider: str
    model: str
    code: str
    message: str


class FallbackStream:
    """Text pieces and the final Usage from the first route that gets its answer going.

    Iterate it (and close it, e.g. with contextlib.aclosing) like a provider's stream;
    afterwards `provider`/`model` name the route that served (or failed last) and `failed`
    lists the routes that failed before it.
    """

    def __init__(self, routes: Sequence[Route], request: LLMRequest, providers: Callable[[str], Provider]):
        """No I/O until iterated."""
        if not routes:
            raise ValueError("at least one route is needed")
        self.routes = list(routes)
        self.request = request
        self.provider, self.model = self.routes[0]
        self.failed: list[Attempt] = []
        self._stream = self._run(providers)

    def __aiter__(self) -> AsyncIterator[str | Usage]:
        """The pieces, in order."""
        return self._stream

    async def aclose(self) -> None:
        """Close the route being streamed (its upstream request with it)."""
        await self._stream.aclose()

    def stats(self) -> dict:
        """For task.completed stats: the route that served and how many fallbacks were tried."""
        return {"provider": self.provider, "model": self.model, "fallbacks_tried": len(self.failed)}

    async def _run(self, providers: Callable[[str], Provider]) -> AsyncIterator[str | Usage]:
        """Try the routes in order until one delivers text (or completes); then stay with it."""
        for index, (name, model) in enumerate(self.routes):
            self.provider, self.model = name, model
            request = (
                self.request
                if model == self.request.model
                else dataclasses.replace(self.request, model=model)
            )
            delivered = False
            try:
                async with aclosing(providers(name).stream(request)) as stream:
                    async for item in stream:
                        if type(item) is str and item:
                            delivered = True
                        yield item
                return
            except ProviderError as exc:
                if delivered:
                    raise
                self.failed.append(Attempt(name, model, exc.code, exc.message))
                if index == len(self.routes) - 1:
                    raise self._all_failed(exc) from None
                following = self.routes[index + 1]
                logger.warning(
                    "route %s/%s failed before its first token (%s); falling back to %s/%s",
                    name,
                    model,
                    exc.code,
                    *following,
                )

    def _all_failed(self, last: ProviderError) -> ProviderError:
        """The last route's error, naming every route tried (a single route: its error unchanged)."""
        if len(self.failed) == 1:
            return last
        tried = ", ".join(f"{a.provider}/{a.model} ({a.code})" for a in self.failed)
        return ProviderError(
            last.code, f"every route failed before its first token: {tried}; last: {last.message}"
        )


def stream_with_fallbacks(
    primary: Route,
    fallbacks: Sequence[Route],
    request: LLMRequest,
    providers: Callable[[str], Provider] | None = None,
) -> FallbackStream:
    """Stream `request` from `primary`, moving on to each of `fallbacks` on an early failure.

    `providers` maps a provider name to the provider (default: the settings registry).
    """
    if providers is None:
        from . import get_provider

        providers = get_provider
    return FallbackStream([primary, *fallbacks], request, providers)
