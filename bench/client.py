"""Load generator: N concurrent sessions, each running four-task pipeline runs, in its own process.

    python -m bench.client --mode ws  --url ws://127.0.0.1:8000/ws/streams/ --system ours ...
    python -m bench.client --mode sse --url http://127.0.0.1:8200/stream   --system ref ...

`ws` speaks PROTOCOL.md's WebSocket frames (run.start -> run.accepted, ordered frames);
`sse` POSTs to the reference's /stream on a keep-alive HTTP/1.1 connection and reads the
chunked SSE body with a small hand-written parser (an HTTP client library would cost the
load generator more CPU than the server it measures). Either way a client keeps, per
run, only what the figures need: send time, the receipt time of every delta of the live
task (one entry per network read for SSE), each task's first and last delta, its text
(checked against the expected fixed-width tokens), the seq sequence and the end.

Stdout carries the protocol with bench.run: `READY` after the warm-up run, `DONE` after
the workload, `OPEN n` in idle mode once n connections are open (it then waits for a
line on stdin before closing them). Results go to --out as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

TASKS = ("task_a", "task_b", "task_c", "task_d")
LIVE = TASKS[0]
END_TYPES = {"run.completed", "run.failed", "run.cancelled"}
TOKEN_WIDTH = 5  # f"{i:04d} "


def expected_text(n: int) -> str:
    """What a task of n tokens must deliver (bench.upstream's tokens)."""
    return "".join(f"{i % 10000:04d} " for i in range(n))


def run_input(
    args, session: int, run: int, system: str, n: int | None = None, pace: float | None = None
) -> str:
    """The run's input; the upstream reads the workload from it (see bench.upstream)."""
    n = args.tokens if n is None else n
    pace = args.pace if pace is None else pace
    return f"n={n:04d} p={pace:05.1f} t={args.a_ttft:05.3f} s={session:05d} r={run:05d} x={system}"


@dataclass
class RunResult:
    """What one run looked like from the client."""

    session: int
    run: int
    t_send: float
    t_accept: float | None = None
    t_end: float | None = None
    end: str | None = None
    # task -> [first delta time, last delta time, list of text pieces, completed time]
    tasks: dict = field(default_factory=dict)
    # live task: (receipt time, characters received so far), one entry per receipt
    live: list = field(default_factory=list)
    seq_errors: int = 0
    error: str | None = None

    def task(self, key: str) -> list:
        entry = self.tasks.get(key)
        if entry is None:
            entry = self.tasks[key] = [None, None, [], None]
        return entry

    def summary(self, n: int) -> dict:
        """JSON-ready figures; the text is reduced to delivered/lost/corrupt counts."""
        expected = expected_text(n)
        tasks = {}
        for key in TASKS:
            first, last, pieces, completed = self.tasks.get(key) or [None, None, [], None]
            text = "".join(pieces)
            ok = text == expected
            delivered = len(text) // TOKEN_WIDTH
            tasks[key] = {
                "first": first,
                "last": last,
                "completed": completed,
                "tokens": delivered,
                "lost": 0 if ok else max(n - delivered, 0),
                "corrupt": not ok and not expected.startswith(text),
            }
        return {
            "session": self.session,
            "run": self.run,
            "t_send": self.t_send,
            "t_accept": self.t_accept,
            "t_end": self.t_end,
            "end": self.end,
            "tasks": tasks,
            "live": self.live,
            "seq_errors": self.seq_errors,
            "error": self.error,
        }


class Chunked:
    """HTTP/1.1 chunked transfer decoding, incremental."""

    __slots__ = ("buf", "done", "need_crlf", "remaining")

    def __init__(self) -> None:
        self.buf = b""
        self.remaining = 0
        self.need_crlf = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self.buf + data if self.buf else data
        out = []
        pos = 0
        end = len(buf)
        while True:
            if self.remaining:
                take = min(self.remaining, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining:
                    break
                self.need_crlf = True
            if self.need_crlf:
                if end - pos < 2:
                    break
                pos += 2
                self.need_crlf = False
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size = int(buf[pos:nl].split(b";", 1)[0], 16)
            pos = nl + 2
            if size == 0:
                self.done = True
                break
            self.remaining = size
        self.buf = buf[pos:]
        return b"".join(out)


class Session:
    """One simulated user: a connection and its runs, one after another."""

    def __init__(self, args, index: int, results: list, deadline: float | None):
        self.args = args
        self.index = index
        self.results = results
        self.deadline = deadline

    async def run(self, start_at: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start_at - loop.time()))
        try:
            await self.connect()
        except Exception as exc:
            failed = RunResult(self.index, 0, time.monotonic(), error=f"connect: {exc!r}")
            self.results.append(failed.summary(self.args.tokens))
            return
        try:
            number = 0
            while True:
                result = RunResult(self.index, number, 0.0)
                try:
                    async with asyncio.timeout(self.args.run_timeout):
                        await self.one_run(result)
                except TimeoutError:
                    result.error = "timeout"
                except Exception as exc:
                    result.error = repr(exc)
                # Reduced at once: a long saturation run must not keep every token's text.
                self.results.append(result.summary(self.args.tokens))
                if result.error:
                    break
                number += 1
                if self.deadline is None:
                    if number >= self.args.runs:
                        break
                elif time.monotonic() >= self.deadline:
                    break
        finally:
            await self.close()


class WSSession(Session):
    """PROTOCOL.md's WebSocket client."""

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        # Several URLs (several server processes): sessions spread round-robin, as nginx does.
        urls = self.args.url.split(",")
        url = urls[self.index % len(urls)]
        parts = urlsplit(url)
        self.ws = await connect(
            url,
            origin=f"http://{parts.netloc}",
            compression="deflate" if self.args.deflate else None,
            max_size=None,
            ping_interval=None,
            open_timeout=30,
        )

    async def close(self) -> None:
        await self.ws.close()

    async def one_run(self, r: RunResult, tokens: int | None = None, pace: float | None = None) -> None:
        ws = self.ws
        loads = json.loads
        now = time.monotonic
        record_live = self.args.record_live
        text_in = run_input(self.args, self.index, r.run, self.args.system, tokens, pace)
        r.t_send = now()
        await ws.send(json.dumps({"type": "run.start", "pipeline": self.args.pipeline, "input": text_in}))
        expect_seq = 1
        live_chars = 0
        async for raw in ws:
            t = now()
            frame = loads(raw)
            kind = frame["type"]
            seq = frame.get("seq")
            if seq is not None:
                if seq != expect_seq:
                    r.seq_errors += 1
                expect_seq = seq + 1
            if kind == "task.delta":
                entry = r.task(frame["task"])
                if entry[0] is None:
                    entry[0] = t
                entry[1] = t
                text = frame["text"]
                entry[2].append(text)
                if record_live and frame["task"] == LIVE:
                    live_chars += len(text)
                    r.live.append((t, live_chars))
            elif kind == "task.completed" or kind == "task.failed":
                r.task(frame["task"])[3] = t
                if kind == "task.failed":
                    r.error = r.error or f"task.failed: {frame.get('error')}"
            elif kind == "run.accepted":
                r.t_accept = t
            elif kind in END_TYPES:
                r.t_end, r.end = t, kind
                return
            elif kind == "error":
                r.error = f"error frame: {frame}"
                return
        r.error = "connection closed"


class SSESession(Session):
    """The reference's POST /stream, on one keep-alive connection."""

    async def connect(self) -> None:
        parts = urlsplit(self.args.url)
        self.host, self.port, self.path = parts.hostname, parts.port, parts.path
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    async def close(self) -> None:
        self.writer.close()

    async def one_run(self, r: RunResult, tokens: int | None = None, pace: float | None = None) -> None:
        now = time.monotonic
        record_live = self.args.record_live
        text_in = run_input(self.args, self.index, r.run, self.args.system, tokens, pace)
        body = json.dumps({"pipeline": self.args.pipeline, "input": text_in}).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        r.t_send = now()
        self.writer.write(head + body)
        reader = self.reader
        status_head = await reader.readuntil(b"\r\n\r\n")
        r.t_accept = now()
        if not status_head.startswith(b"HTTP/1.1 200"):
            r.error = f"HTTP {status_head[:40]!r}"
            return
        if b"chunked" not in status_head.lower():
            r.error = "response is not chunked"
            return
        chunked = Chunked()
        pending = b""
        sep = b"\r\n\r\n"
        line_sep = b"\r\n"
        expect_seq = 1
        live_chars = 0
        while not chunked.done:
            data = await reader.read(1 << 16)
            if not data:
                r.error = "connection closed"
                return
            t = now()
            payload = chunked.feed(data)
            if not payload:
                continue
            if pending:
                payload = pending + payload
            events = payload.split(sep)
            pending = events.pop()
            live_seen = False
            for event in events:
                name = None
                data_lines = []
                for line in event.split(line_sep):
                    if line.startswith(b"data: "):
                        data_lines.append(line[6:])
                    elif line.startswith(b"event: "):
                        name = line[7:]
                    elif line.startswith(b"id: "):
                        seq = int(line[4:])
                        if seq != expect_seq:
                            r.seq_errors += 1
                        expect_seq = seq + 1
                if name is None:
                    continue  # a comment (": ping")
                key = name.decode()
                if key in TASKS:
                    text = b"\n".join(data_lines).decode()
                    entry = r.task(key)
                    if entry[0] is None:
                        entry[0] = t
                    entry[1] = t
                    entry[2].append(text)
                    if key == LIVE:
                        live_chars += len(text)
                        live_seen = True
                elif key in ("task.completed", "task.failed"):
                    info = json.loads(b"\n".join(data_lines))
                    r.task(info["task"])[3] = t
                    if key == "task.failed":
                        r.error = r.error or f"task.failed: {info}"
                elif key in END_TYPES:
                    r.t_end, r.end = t, key
            # Events that arrived in one read arrive together: one live entry per read.
            if record_live and live_seen:
                r.live.append((t, live_chars))
        if r.end is None:
            r.error = r.error or "body ended without run.*"


async def warm_up(args, cls) -> None:
    """Short runs before measuring: connection pools, imports, the layer's subscriptions; on
    every server process when there are several (session i goes to URL i modulo their number)."""
    urls = len(args.url.split(","))
    for index in range(99_999, 99_999 - urls, -1):  # the tag has five digits
        results: list = []
        session = cls(args, index, results, None)
        await session.connect()
        try:
            for number in range(args.warmup_runs):
                r = RunResult(index, number, 0.0)
                async with asyncio.timeout(60):
                    await session.one_run(r, tokens=8, pace=0.0)
                if r.error:
                    raise RuntimeError(f"warm-up run failed: {r.error}")
        finally:
            await session.close()


async def idle(args) -> dict:
    """Open connections and hold them idle until told to close."""
    loop = asyncio.get_running_loop()
    conns = []
    failures = 0
    if args.mode == "ws":
        from websockets.asyncio.client import connect

        urls = args.url.split(",")
        origin = f"http://{urlsplit(urls[0]).netloc}"

        async def one():
            url = urls[len(conns) % len(urls)]
            return await connect(
                url,
                origin=origin,
                compression="deflate" if args.deflate else None,
                ping_interval=None,
                open_timeout=60,
            )

    else:
        parts = urlsplit(args.url)
        health = f"GET /health HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()

        async def one():
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(health)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            return writer

    print("READY", flush=True)
    batch = 50
    for start in range(0, args.sessions, batch):
        got = await asyncio.gather(
            *(one() for _ in range(min(batch, args.sessions - start))), return_exceptions=True
        )
        for c in got:
            if isinstance(c, BaseException):
                failures += 1
            else:
                conns.append(c)
    print(f"OPEN {len(conns)}", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    # Still open? A server that closed idle connections would show here.
    alive = sum(1 for c in conns if not _closed(c))
    for c in conns:
        with contextlib.suppress(Exception):
            await c.close() if args.mode == "ws" else c.close()
    print("DONE", flush=True)
    return {"opened": len(conns), "failed": failures, "alive_at_end": alive}


def _closed(conn) -> bool:
    state = getattr(conn, "state", None)
    if state is not None:
        return state.name != "OPEN"
    return conn.is_closing()


async def main_async(args) -> dict:
    if args.idle:
        return {"idle": await idle(args)}
    cls = WSSession if args.mode == "ws" else SSESession
    if args.warmup_runs:
        await warm_up(args, cls)
    results: list[dict] = []
    loop = asyncio.get_running_loop()
    print("READY", flush=True)
    t0 = loop.time()
    wall0 = time.monotonic()
    deadline = wall0 + args.spread + args.duration if args.duration else None
    sessions = [cls(args, i, results, deadline) for i in range(args.sessions)]
    step = args.spread / args.sessions if args.sessions > 1 else 0.0
    await asyncio.gather(*(s.run(t0 + i * step) for i, s in enumerate(sessions)))
    wall1 = time.monotonic()
    print("DONE", flush=True)
    return {
        "t_start": wall0,
        "t_done": wall1,
        "runs": results,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("ws", "sse"), required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--system", required=True, help="tag for the upstream's records")
    p.add_argument("--pipeline", default="bench")
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--spread", type=float, default=2.0, help="seconds over which sessions start")
    p.add_argument("--runs", type=int, default=1, help="runs per session (without --duration)")
    p.add_argument("--duration", type=float, default=0.0, help="keep starting runs this long (saturation)")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--pace", type=float, default=30.0)
    p.add_argument("--a-ttft", type=float, default=0.25)
    p.add_argument("--run-timeout", type=float, default=120.0)
    p.add_argument("--record-live", action="store_true", help="keep every live delta's receipt time")
    p.add_argument("--warmup-runs", type=int, default=2)
    p.add_argument("--idle", action="store_true", help="open --sessions idle connections")
    p.add_argument("--deflate", action="store_true", help="offer per-message deflate, as browsers do")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    with open(args.out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
