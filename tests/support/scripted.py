"""A scripted in-process provider for core tests: its behaviour is spelled in the task's model name."""

import asyncio
import time
from dataclasses import dataclass, field

from streams.providers import LLMRequest, ProviderError, Usage


@dataclass
class Call:
    """One stream the provider served: what was asked, when it opened and closed."""

    model: str
    prompt: str
    opened: float
    history: tuple = ()
    closed: float | None = None
    tokens_sent: int = 0


@dataclass
class ScriptedProvider:
    """Model names: "fast:N" (N tokens, no delay), "paced:N:GAP" (GAP s apart), "echo" (the prompt),
    "fail:N" (N tokens then an upstream error), "hang" (never answers), each optionally "@TTFT"."""

    calls: list[Call] = field(default_factory=list)

    @staticmethod
    def tokens(model: str, key: str = "") -> list[str]:
        """The exact tokens a "fast"/"paced"/"fail" model produces; key tags them per task."""
        n = int(model.split("@")[0].split(":")[1])
        # Non-ASCII and newlines on purpose: byte-exactness must hold for them too.
        return [f"{key}{i}é\n" if i % 7 == 3 else f"{key}{i} " for i in range(n)]

    async def stream(self, request: LLMRequest):
        """Stream per the model name; record the close."""
        spec, _, ttft = request.model.partition("@")
        call = Call(request.model, request.prompt, time.monotonic(), request.history)
        self.calls.append(call)
        try:
            if ttft:
                await asyncio.sleep(float(ttft))
            kind = spec.split(":")[0]
            if kind == "hang":
                await asyncio.sleep(3600)
            if kind == "echo":
                yield request.prompt
                return
            gap = float(spec.split(":")[2]) if kind == "paced" else 0.0
            tag = request.system
            for i, token in enumerate(self.tokens(spec, tag)):
                if gap:
                    await asyncio.sleep(gap)
                elif i % 64 == 63:
                    await asyncio.sleep(0)
                call.tokens_sent += 1
                yield token
            if kind == "fail":
                raise ProviderError("upstream_error", "scripted failure")
            reason = "length" if kind == "cut" else None
            yield Usage(prompt_tokens=1, completion_tokens=call.tokens_sent, finish_reason=reason)
        finally:
            call.closed = time.monotonic()


PROVIDER = ScriptedProvider()


def build(name: str, config: dict) -> ScriptedProvider:
    """Registry factory: the one shared instance, so tests can read its calls."""
    return PROVIDER
