"""A run's OpenTelemetry trace as a text timeline (the picture in docs/records.md).

    .venv/bin/python scripts/trace_timeline.py            # a live demo run, traced
    .venv/bin/python scripts/trace_timeline.py --run ID   # a recorded run, via export_trace --otlp

Demo: starts a trace receiver (tests/support/otlp_receiver.py), then the app under daphne on a
fresh SQLite database with a three-task pipeline of the simulated provider (C depends on A and
B; B is cut short by max_tokens, so its text waits behind A's), runs it once over a WebSocket
and draws the spans the server exported. `--run` instead sends a recorded run of the app's own
database (DATABASE_URL) through `manage.py export_trace ID --otlp` and draws what arrived.

Per span: `-` before its first chunk, `=` after it, `*` its delivery event (when its text was
sent to the clients), `|` the run's edges.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.live import LiveServer, app_env, prepare_database  # noqa: E402
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan  # noqa: E402

PIPELINE = {
    "pipelines": [
        {
            "slug": "trio",
            "name": "Trio",
            "tasks": [
                {"key": "a", "title": "A", "provider": "simulated", "model": "sim-a"},
                {"key": "b", "title": "B", "provider": "simulated", "model": "sim-b", "max_tokens": 12},
                {
                    "key": "c",
                    "title": "C",
                    "provider": "simulated",
                    "model": "sim-c",
                    "prompt": "Join: {{ outputs.a }} / {{ outputs.b }}",
                    "depends_on": ["a", "b"],
                },
            ],
        }
    ]
}
WIDTH = 60


def render(spans: list[ReceivedSpan]) -> str:
    """The trace as text: one line per span on a common time axis, then each span's attributes."""
    (root,) = [s for s in spans if not s.parent_span_id]
    children = sorted((s for s in spans if s.parent_span_id), key=lambda s: s.start_ns)
    t0, t1 = root.start_ns, root.end_ns
    scale = WIDTH / max(t1 - t0, 1)
    key_of = {s.span_id: s.attributes.get("streams.task.key", "") for s in spans}

    def col(ns: int) -> int:
        return min(WIDTH - 1, max(0, int((ns - t0) * scale)))

    def bar(s: ReceivedSpan) -> str:
        cells = [" "] * WIDTH
        first = s.start_ns + int(s.attributes.get("gen_ai.response.time_to_first_chunk", 0) * 1e9)
        for i in range(col(s.start_ns), col(s.end_ns) + 1):
            cells[i] = "=" if s is root or i >= col(first) else "-"
        for e in s.events:
            cells[col(e["time_ns"])] = "*"
        return "|" + "".join(cells) + "|"

    status = {0: "", 1: " OK", 2: " ERROR"}
    lines = [f"trace {root.trace_id}   0 s{' ' * (WIDTH - 8)}{(t1 - t0) / 1e9:.2f} s"]
    for s in [root, *children]:
        name = ("" if s is root else "  ") + s.name + status[s.status_code]
        lines.append(f"{name:28} {bar(s)}")
    lines.append("")
    for s in [root, *children]:
        lines.append(f"{s.name}  (span {s.span_id}, kind {'INTERNAL' if s is root else 'CLIENT'})")
        for k, v in sorted(s.attributes.items()):
            lines.append(f"    {k} = {json.dumps(v)}")
        for li in s.links:
            lines.append(f"    link -> span {li['span_id']} ({key_of.get(li['span_id'], '?')})")
        for e in s.events:
            at = (e["time_ns"] - t0) / 1e9
            attrs = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(e["attributes"].items()))
            lines.append(f"    event {e['name']} at +{at:.3f} s: {attrs}")
    return "\n".join(lines)


async def one_run(ws_url: str, origin: str) -> str:
    """Start the trio pipeline over a WebSocket and wait for its end; its run id."""
    import websockets

    async with websockets.connect(ws_url, origin=origin) as ws:
        await ws.send(json.dumps({"type": "run.start", "pipeline": "trio", "input": "a trace, please"}))
        run_id = None
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            run_id = run_id or frame.get("run_id")
            if frame["type"] in ("run.completed", "run.failed", "run.cancelled"):
                return run_id


def demo(rx: OTLPReceiver, redis_url: str) -> list[ReceivedSpan]:
    """A live run on a fresh database, traced by a server exporting to `rx`."""
    with tempfile.TemporaryDirectory(prefix="trace-timeline-") as tmp:
        database_url = prepare_database(Path(tmp), redis_url, PIPELINE)
        env = app_env(
            database_url,
            redis_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            SIMULATED_TOKENS="24",
            SIMULATED_TOKENS_PER_S="30",
            LOG_LEVEL="WARNING",
        )
        with LiveServer(env) as server:
            asyncio.run(one_run(server.ws_url, server.url))
            return rx.wait_for_spans(4, timeout_s=15)


def replay(rx: OTLPReceiver, run_id: str) -> list[ReceivedSpan]:
    """A recorded run of the app's database, sent by export_trace --otlp to `rx`."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}
    subprocess.run(
        [sys.executable, "manage.py", "export_trace", run_id, "--otlp"], cwd=ROOT, env=env, check=True
    )
    return rx.wait_for_spans(1, timeout_s=15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", help="a recorded run id (default: a live demo run)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""), help="demo: the app's Redis")
    args = parser.parse_args()
    with OTLPReceiver() as rx:
        spans = replay(rx, args.run) if args.run else demo(rx, args.redis_url)
    print(render(spans))


if __name__ == "__main__":
    main()
