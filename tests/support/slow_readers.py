"""Clients that never read, against a real server: a large finished run in the log, replays
asked for and never read, the server's RSS sampled (tests/test_slow_readers.py, bench/slow_readers.py)."""

import asyncio
import json
import socket
import uuid

import httpx
import psutil
import websockets

from streams.access.owners import owner_of
from streams.store.runlog import RedisRunLog
from streams.store.topology import Topology, clients_of

# A client socket's receive buffer: small and fixed, so that the kernel's autotuning does not
# hide the backlog (the websockets library stops reading once its own queue is full).
CLIENT_RCVBUF = 64 * 1024


async def session_cookie(base_url: str) -> tuple[str, str]:
    """A fresh session from the chat page: (Cookie header, session key)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(base_url + "/")
        response.raise_for_status()
        key = response.cookies["sessionid"]
    return f"sessionid={key}", key


async def finished_run(redis_url: str, session_key: str, total_bytes: int, text_chars: int) -> str:
    """A finished one-task run owned by the session, its log about `total_bytes` of deltas of
    `text_chars` characters each; its id."""
    log = RedisRunLog(clients_of(Topology.parse(redis_url)), ttl_s=600, max_frames=10**7)
    run_id = uuid.uuid4().hex
    await log.create(run_id, {"owner": owner_of(None, session_key, ""), "pipeline": "p", "tasks": ["t"]})
    text = ("slow reader " * (text_chars // 12 + 1))[:text_chars]
    n = max(total_bytes // text_chars, 1)
    frames = [{"type": "task.started", "task": "t"}]
    frames += [{"type": "task.delta", "task": "t", "text": text} for _ in range(n)]
    frames += [{"type": "task.completed", "task": "t", "stats": {}}, {"type": "run.completed"}]
    frames = [{**f, "run_id": run_id, "seq": seq} for seq, f in enumerate(frames, 1)]
    for start in range(0, len(frames), 1000):
        await log.append(run_id, frames[start : start + 1000])
    await log.aclose()
    return run_id


async def non_reader(ws_url: str, cookie: str, run_id: str):
    """A connection that asks for the whole run again and then reads nothing."""
    host, port = ws_url.split("//")[1].split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    conn = await websockets.connect(
        ws_url,
        sock=sock,
        origin=f"http://{host}:{port}",  # the whole origin: scheme, host and port
        additional_headers={"Cookie": cookie},
        open_timeout=10,
        max_size=None,
        max_queue=4,
    )
    await conn.send(json.dumps({"type": "run.resume", "run_id": run_id, "after_seq": 0}))
    return conn


async def read_to_close(conn, timeout_s: float = 30) -> tuple[int, int | None]:
    """Read until the connection closes or the run's last frame came: (delta characters
    received, the close code, None if still open)."""
    chars = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for raw in conn:
                frame = json.loads(raw)
                chars += len(frame.get("text", ""))
                if frame["type"] == "run.completed":
                    break
    except (websockets.ConnectionClosed, TimeoutError):
        pass
    code = conn.close_code
    await conn.close()
    return chars, code


class RSSSampler:
    """The peak RSS of a process, sampled while a block runs."""

    def __init__(self, pid: int, every_s: float = 0.05):
        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._task: asyncio.Task | None = None

    async def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(self.every_s)

    def start(self) -> "RSSSampler":
        self._task = asyncio.ensure_future(self._loop())
        return self

    async def stop(self) -> int:
        """Stop sampling; the peak growth over the start, in bytes."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return self.peak - self.base
