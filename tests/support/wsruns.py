"""WebSocket clients of live app servers: the `quad` pipeline, frames, texts (several test files use them)."""

import asyncio
import json

import httpx
import websockets

from streams.providers.base import LLMRequest
from streams.providers.simulated import SimulatedProvider
from tests.support.live import LiveServer


def quad(provider: str) -> dict:
    """Four independent tasks a..d whose system prompt tags them."""
    tasks = [
        {"key": f"task_{k}", "title": k.upper(), "provider": provider, "model": "m", "system": k}
        for k in "abcd"
    ]
    return {"pipelines": [{"slug": "quad", "name": "Quad", "tasks": tasks}]}


def expected_text(system: str, user_input: str, tokens: int = 80) -> str:
    """What the simulated provider streams for one task of `quad`."""
    sim = SimulatedProvider(tokens=tokens)
    return "".join(sim.text_for(LLMRequest(model="m", prompt=user_input, system=system)))


def session_cookie(server: LiveServer) -> str:
    """A session cookie from the chat page: the identity that owns runs across instances."""
    response = httpx.get(server.url + "/", timeout=10)
    response.raise_for_status()
    return f"sessionid={response.cookies['sessionid']}"


async def ws(server: LiveServer, cookie: str):
    """A WebSocket client connection to one instance."""
    return await websockets.connect(
        server.ws_url, origin=server.url, additional_headers={"Cookie": cookie}, open_timeout=10
    )


async def next_frame(sock, timeout: float = 15) -> dict:
    """The next frame, progress frames skipped."""
    while True:
        frame = json.loads(await asyncio.wait_for(sock.recv(), timeout))
        if frame["type"] != "run.progress":
            return frame


async def until_end(sock) -> list[dict]:
    """Ordered frames until the run's final frame."""
    frames = []
    while not (frames and frames[-1]["type"] in ("run.completed", "run.failed", "run.cancelled")):
        frames.append(await next_frame(sock))
    return frames


def texts(frames):
    """Each task's concatenated text."""
    out: dict[str, str] = {}
    for f in frames:
        if f["type"] == "task.delta":
            out[f["task"]] = out.get(f["task"], "") + f["text"]
    return out
