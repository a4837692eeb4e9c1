"""SIGTERM with runs in flight, for both documented servers (daphne; uvicorn via streams.serve):
new runs are refused, a run that finishes within the drain completes, the rest end with
run.failed (shutdown) in the log and to their clients, sockets close with 1001, SSE ends."""

import asyncio
import json
import signal

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from tests.support.live import LiveServer, app_env, prepare_database

pytestmark = pytest.mark.redis

PIPELINES = {
    "pipelines": [
        {
            "slug": "short",
            "name": "Short",
            "tasks": [{"key": "a", "provider": "simulated", "model": "m", "max_tokens": 60}],
        },
        {
            "slug": "long",
            "name": "Long",
            "tasks": [
                {"key": "a", "provider": "simulated", "model": "m"},
                {"key": "b", "provider": "simulated", "model": "m"},
            ],
        },
    ]
}


@pytest.fixture(params=["daphne", "uvicorn"])
def server(request, tmp_path, redis_url):
    """One server process: paced simulated tasks (40 tokens/s: "short" takes 1.5 s, "long" a
    minute), a 3 s drain."""
    db = prepare_database(tmp_path, redis_url, PIPELINES)
    env = app_env(
        db,
        redis_url,
        SIMULATED_TOKENS_PER_S="40",
        SIMULATED_TTFT_S="0.05",
        SIMULATED_TOKENS="2400",
        STREAMS_DRAIN_S="3",
    )
    with LiveServer(env, log_path=tmp_path / "server.log", server=request.param) as live:
        yield live


async def ws_start(server: LiveServer, pipeline: str):
    """A socket with a run of `pipeline` that has sent its first delta; (socket, run id, frames)."""
    sock = await websockets.connect(server.ws_url, origin=server.url, open_timeout=10)
    await sock.send(json.dumps({"type": "run.start", "pipeline": pipeline, "input": "hi"}))
    frames = []
    while not frames or frames[-1]["type"] != "task.delta":
        frame = json.loads(await asyncio.wait_for(sock.recv(), 10))
        if frame["type"] != "run.progress":
            frames.append(frame)
    return sock, frames[0]["run_id"], frames[1:]


async def ws_rest(sock) -> tuple[list[dict], int | None]:
    """Every frame until the server closes the socket, and the close code it sent."""
    frames = []
    try:
        async with asyncio.timeout(15):
            async for raw in sock:
                frame = json.loads(raw)
                if frame["type"] != "run.progress":
                    frames.append(frame)
    except websockets.ConnectionClosed:
        pass
    return frames, sock.close_code


async def sse_until_closed(response: httpx.Response) -> bytes:
    """The SSE body until the server ends it."""
    body = b""
    async with asyncio.timeout(15):
        async for chunk in response.aiter_raw():
            body += chunk
    return body


async def test_sigterm_drains_runs_ends_the_rest_as_shutdown_and_closes_with_1001(server, redis_url):
    short, short_id, _ = await ws_start(server, "short")
    long, long_id, long_frames = await ws_start(server, "long")
    async with httpx.AsyncClient(timeout=15) as http:
        request = http.build_request(
            "POST", server.url + "/stream", json={"pipeline": "long", "input": "sse"}
        )
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        sse_id = response.headers["x-run-id"]
        sse_reader = asyncio.ensure_future(sse_until_closed(response))
        await asyncio.sleep(0.1)

        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        # A run.start during the drain is refused; the run in flight goes on.
        await long.send(json.dumps({"type": "run.start", "pipeline": "short", "input": "x", "ref": "late"}))
        (short_rest, short_code), (long_rest, long_code) = await asyncio.gather(ws_rest(short), ws_rest(long))
        sse_body = await sse_reader
        await response.aclose()

    # Finished within the drain (it was in flight at SIGTERM): completed, then 1001.
    assert "draining: 3 runs in flight" in server.log_text()
    assert short_rest[-1]["type"] == "run.completed", short_rest[-3:]
    assert short_code == 1001
    # Past the drain: the refusal, then run.failed (shutdown), then 1001.
    refused = [f for f in long_rest if f["type"] == "error"]
    assert [(f["code"], f.get("ref")) for f in refused] == [("shutting_down", "late")]
    ordered = long_frames + [f for f in long_rest if "seq" in f]
    assert [f["seq"] for f in ordered] == list(range(1, len(ordered) + 1))
    assert ordered[-1]["type"] == "run.failed" and ordered[-1]["error"]["code"] == "shutdown"
    assert {f["task"] for f in ordered if f["type"] == "task.failed"} == {"a", "b"}
    assert long_code == 1001
    # SSE: the stream's last event is the run's last frame, then the response ends.
    events = [block for block in sse_body.decode().split("\n\n") if "event:" in block]
    assert "event: run.failed" in events[-1] and '"code":"shutdown"' in events[-1]
    # The log holds the same end, so a resume elsewhere finds it.
    redis = aioredis.from_url(redis_url)
    try:
        for run_id, code in ((long_id, "shutdown"), (sse_id, "shutdown")):
            entries = await redis.xrevrange(f"streams:run:{{{run_id}}}:log", count=1)
            last = json.loads(entries[0][1][b"f"])
            assert last["type"] == "run.failed" and last["error"]["code"] == code
        entries = await redis.xrevrange(f"streams:run:{{{short_id}}}:log", count=1)
        assert json.loads(entries[0][1][b"f"])["type"] == "run.completed"
    finally:
        await redis.aclose()
    assert server.proc.wait(timeout=15) is not None
    log = server.log_text()
    assert "Traceback" not in log, log[-3000:]
