"""Deterministic, network-free provider: Markdown derived from the prompt, at a configurable pace."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .base import LLMRequest, Usage
from .demo_text import WORDS, markdown_tokens

__all__ = ["WORDS", "SimulatedProvider", "build"]

# A buffered source never suspends on its own; yield to the loop every so many tokens.
YIELD_EVERY = 64


@dataclass
class SimulatedProvider:
    """Yields `tokens` tokens of Markdown about the prompt (demo_text.py), `ttft_s` then
    1/`tokens_per_s` apart; the same request always gets the same tokens."""

    name: str = "simulated"
    tokens_per_s: float = 30.0
    ttft_s: float = 0.2
    tokens: int = 60

    def text_for(self, request: LLMRequest) -> list[str]:
        """The exact token list this provider produces for a request."""
        return markdown_tokens(request.prompt, f"{request.model}\0{request.system}", self.tokens)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str | Usage]:
        """Stream the tokens at the configured pace; a max_tokens cut ends with finish_reason "length"."""
        tokens = self.text_for(request)
        reason = "stop"
        if request.max_tokens and len(tokens) > request.max_tokens:
            tokens, reason = tokens[: request.max_tokens], "length"
        if self.ttft_s > 0:
            await asyncio.sleep(self.ttft_s)
        gap = 1.0 / self.tokens_per_s if self.tokens_per_s > 0 else 0.0
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, token in enumerate(tokens):
            if gap:
                # Pace against the start time so sleep overshoot does not accumulate.
                delay = start + i * gap - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            yield token
        yield Usage(
            prompt_tokens=len(request.prompt.split()), completion_tokens=len(tokens), finish_reason=reason
        )


def build(name: str, config: dict) -> SimulatedProvider:
    """Build from a settings entry."""
    return SimulatedProvider(
        name=name,
        tokens_per_s=float(config.get("tokens_per_s", 30.0)),
        ttft_s=float(config.get("ttft_s", 0.2)),
        tokens=int(config.get("tokens", 60)),
    )
