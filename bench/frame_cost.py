"""What one live token frame costs the app, part by part, in CPU µs (one process, real parts).

The whole-server benchmark (`bench.run`) gives the total per 1,000 tokens; this times each
part of a frame's way from the pump to the connection's outbox through the real code, many
times, and the log append + publish against the real Redis (`BENCH_REDIS_URL`), one round
trip per frame as at moderate load (the batcher merges them only under load):

1. the gate: a delta event fed, the numbered frame out (`Gate.feed_all`);
2. in-process delivery to the starter: `HostedRun.deliver` -> `RunSession.run_frames` ->
   `RunRelay.push_now` -> JSON -> `Outbox.put` (what replaced the pub/sub round trip back);
3. the publish's serialization: the log's commands and the layer's msgpack message;
4. the Redis round trip of the append + PUBLISH (redis-py and the event loop, CPU only).

What it does not time: the writer task and the server's WebSocket send (in the profile of
`bench.run --profile`), and the upstream read of the token (the same code as ref-parse).

    .venv/bin/python -m bench.frame_cost [--frames 20000]
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time


def setup_django() -> None:
    """The app's settings on its Redis (the benchmark's database number), no database use."""
    os.environ.setdefault("REDIS_URL", os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tempfile.gettempdir()}/frame-cost.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-frame-cost-not-secret")
    import django

    django.setup()


def per_frame_us(fn, n: int) -> float:
    """CPU µs per call of fn(i) over n calls."""
    t0 = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - t0) / n * 1e6


async def measure(n: int) -> dict[str, float]:
    from channels.layers import get_channel_layer

    from streams import compat
    from streams.consumers import _encode as encode  # the WebSocket consumer's encoding
    from streams.runs.gate import DELTA, STARTED, Gate, TaskEvent
    from streams.runs.host import HostedRun
    from streams.session.core import RunSession
    from streams.session.outbox import Outbox
    from streams.store.publisher import RunPublisher
    from streams.store.runlog import get_run_log

    run_id = "frame-cost"
    out: dict[str, float] = {}

    gate = Gate(run_id, ["a"])
    gate.feed_all([TaskEvent("a", STARTED)])
    token = TaskEvent("a", DELTA, text="0001 ")
    out["gate: one delta in, one frame out"] = per_frame_us(lambda i: gate.feed_all([token]), n)

    def frame(i: int) -> dict:
        return {"type": "task.delta", "run_id": run_id, "seq": i + 2, "task": "a", "text": "0001 "}

    frames = [[frame(i)] for i in range(n)]
    outbox = Outbox(encode, max_bytes=0)
    session = RunSession("bench", outbox.send, outbox=outbox, in_process=True)
    session.watch(run_id, 1, local=True)
    run = HostedRun(run_id, None, None, None, local={session})

    def deliver(i: int) -> None:
        run.deliver(frames[i])
        outbox._items.popleft()  # the writer's take, so that nothing piles up

    out["in-process delivery: deliver, relay, JSON, outbox"] = per_frame_us(deliver, n)

    layer = get_channel_layer()
    publisher = RunPublisher(run_id, layer)
    log = publisher.log

    def serialize(i: int) -> None:
        compat.pubsub_serialize(layer, {"type": "run.frames", "frames": frames[i]})
        log.append_commands(run_id, frames[i], refresh_ttl=False)

    out["publish: log commands and layer message"] = per_frame_us(serialize, n)

    rounds = min(n, 5000)
    log_key = log._key(run_id, "log")
    await log.execute([("DEL", log_key)])  # a fresh log (and connected first)
    t0 = time.process_time()
    for i in range(rounds):
        commands = log.append_commands(run_id, frames[i], refresh_ttl=False)
        payload = compat.pubsub_serialize(layer, {"type": "run.frames", "frames": frames[i]})
        await log.execute([*commands, ("PUBLISH", publisher.direct, payload)])
    total = (time.process_time() - t0) / rounds * 1e6
    out["Redis round trip: append + PUBLISH (incl. the serialization)"] = total

    # What in-process delivery replaced: the same frame back through this process's pub/sub
    # layer (reader task, msgpack, the channel's queue), timed as the extra CPU of a round
    # trip whose message is also received (a lower bound: the consumer's dispatch came on top).
    await log.execute([("DEL", log_key)])
    channel = await layer.new_channel("bench.")
    await layer.group_add(publisher.group, channel)
    t0 = time.process_time()
    for i in range(rounds):
        commands = log.append_commands(run_id, frames[i], refresh_ttl=False)
        payload = compat.pubsub_serialize(layer, {"type": "run.frames", "frames": frames[i]})
        await log.execute([*commands, ("PUBLISH", publisher.direct, payload)])
        await layer.receive(channel)
    received = (time.process_time() - t0) / rounds * 1e6
    out["replaced: the frame back through the pub/sub layer (receive only)"] = received - total
    await layer.group_discard(publisher.group, channel)
    await layer.flush()
    await log.execute([("DEL", log_key)])
    await get_run_log().aclose()
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20000)
    args = p.parse_args(argv)
    setup_django()
    results = asyncio.run(measure(args.frames))
    for part, us in results.items():
        sys.stdout.write(f"{us:8.1f} µs  {part}\n")


if __name__ == "__main__":
    main()
