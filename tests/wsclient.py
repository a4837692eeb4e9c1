"""Helpers for driving the WebSocket consumer through Channels' WebsocketCommunicator."""

import json

from channels.testing import WebsocketCommunicator

from orchestrator_site.asgi import application

# The page's origin and the Host it connects to: the same origin (port 80 on both).
ORIGIN = (b"origin", b"http://127.0.0.1")
HOST = (b"host", b"127.0.0.1")


async def connect(headers=None) -> WebsocketCommunicator:
    """An accepted connection to /ws/streams/."""
    comm = WebsocketCommunicator(application, "/ws/streams/", headers=[ORIGIN, HOST, *(headers or [])])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    return comm


async def send(comm: WebsocketCommunicator, frame: dict) -> None:
    """Send one JSON frame."""
    await comm.send_to(text_data=json.dumps(frame))


async def recv(comm: WebsocketCommunicator, timeout: float = 10) -> dict:
    """Receive one JSON frame."""
    return json.loads(await comm.receive_from(timeout=timeout))


async def start(comm: WebsocketCommunicator, pipeline: str, text: str = "hello", **extra) -> dict:
    """Start a run; return its run.accepted frame."""
    await send(comm, {"type": "run.start", "pipeline": pipeline, "input": text, **extra})
    accepted = await recv(comm)
    assert accepted["type"] == "run.accepted", accepted
    return accepted


async def until_run_end(comm: WebsocketCommunicator, timeout: float = 30) -> list[dict]:
    """Ordered frames until the run's final frame (progress frames are dropped)."""
    frames = []
    while True:
        frame = await recv(comm, timeout)
        if frame["type"] == "run.progress":
            continue
        frames.append(frame)
        if frame["type"] in ("run.completed", "run.failed", "run.cancelled"):
            return frames


def texts(frames: list[dict]) -> dict[str, str]:
    """Each task's concatenated delta text."""
    out: dict[str, str] = {}
    for f in frames:
        if f["type"] == "task.delta":
            out[f["task"]] = out.get(f["task"], "") + f["text"]
    return out


def task_order(frames: list[dict]) -> list[str]:
    """Task keys in the order their frames were first seen."""
    order: list[str] = []
    for f in frames:
        if "task" in f and f["task"] not in order:
            order.append(f["task"])
    return order
