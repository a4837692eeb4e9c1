"""What recording costs: the CPU of runs with and without their records, in one process.

The whole-server benchmark (`bench.run`) measures recording's share only as the difference of
two noisy figures; this replays the moderate scenario's shape through the real parts that
recording adds (RecordingSink, RunRecorder.frames, the records writer and its database) and
through the same pump and gate without them, several times in alternation, and prints the
CPU that recording adds per run and per 1,000 tokens (all threads: the writer's included),
and its share of a server's CPU per 1,000 tokens when given one (`--server-cpu-per-1k`, the
`server CPU s / 1k tokens` that `bench.run --scenario moderate` prints for ours).

    .venv/bin/python -m bench.records_cost [--runs 20] [--tokens 200] [--pace 30] [--rounds 5]
        [--database-url sqlite:///tmp/x.sqlite3 | postgres://postgres@127.0.0.1:5432/bench_records]
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time

logger = logging.getLogger("bench.records_cost")

TASKS = ("a", "b", "c", "d")


def setup_django(database_url: str) -> None:
    """The app as the server loads it, on a migrated database of its own."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-records-cost-not-secret")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    # The server's entry point: its gc.freeze() and collector thresholds are part of the cost.
    import orchestrator_site.asgi  # noqa: F401


def spec():
    """A four-task pipeline like the benchmark's."""
    from streams.pipelines.specs import PipelineSpec, TaskSpec

    tasks = tuple(TaskSpec(key=k, title=k.upper(), prompt="{{ input }}", model="bench") for k in TASKS)
    return PipelineSpec(slug="bench", name="bench", description="", tasks=tasks)


async def one_run(n: int, tokens: int, pace: float, record: bool, tag: str) -> int:
    """One paced run through the pump (and the recorder when `record`); its frames sent."""
    from streams.models import new_conversation_id
    from streams.records.recorder import RecordingSink, RunRecorder
    from streams.runs.pump import RunPump

    run_id = f"{tag}-{n}"
    # As the server does, every run opens a conversation (the benchmark's clients name none).
    recorder = (
        RunRecorder(
            run_id, owner="bench", spec=spec(), user_input="hello", conversation=new_conversation_id()
        )
        if record
        else None
    )
    sent = 0

    async def publish(frames):
        nonlocal sent
        await asyncio.sleep(0)  # a send yields to the loop, as the publisher's does
        sent += len(frames)
        if recorder is not None:
            recorder.frames(frames)

    pump = RunPump(run_id, TASKS, publish)
    sink = RecordingSink(pump, recorder) if record else pump
    sender = asyncio.create_task(pump.run())

    async def task(key: str) -> None:
        sink.started(key)
        for i in range(tokens):
            await asyncio.sleep(1 / pace if pace else 0)
            sink.delta(key, f" tok{i}")
        sink.finished(key, stats={"completion_tokens": tokens, "finish_reason": "stop"})

    await asyncio.gather(*(task(k) for k in TASKS))
    await sender
    return sent


async def scenario(runs: int, tokens: int, pace: float, spread: float, record: bool, tag: str) -> float:
    """CPU seconds (process, all threads) of `runs` runs started over `spread` seconds."""
    from streams.records.writer import flush_all

    async def started_later(n: int) -> int:
        await asyncio.sleep(spread * n / runs)
        return await one_run(n, tokens, pace, record, tag)

    cpu = time.process_time()
    await asyncio.gather(*(started_later(n) for n in range(runs)))
    if record:
        assert await flush_all(30), "records were not all written"
    return time.process_time() - cpu


async def main_async(args) -> dict:
    """Alternate runs without and with records; the medians and their difference."""
    from streams.records.writer import close_writer

    off, on = [], []
    for r in range(args.rounds):
        off.append(await scenario(args.runs, args.tokens, args.pace, args.spread, False, f"off{r}"))
        on.append(await scenario(args.runs, args.tokens, args.pace, args.spread, True, f"on{r}"))
        logger.info("round %d: without %.3f s, with %.3f s", r + 1, off[-1], on[-1])
    await close_writer()
    tokens = args.runs * args.tokens * len(TASKS)
    added = statistics.median(on) - statistics.median(off)
    out = {
        "runs": args.runs,
        "tokens": tokens,
        "cpu_without_s": off,
        "cpu_with_s": on,
        "recording_ms_per_run": round(added / args.runs * 1000, 2),
        "recording_cpu_s_per_1k_tokens": round(added / tokens * 1000, 4),
    }
    if args.server_cpu_per_1k:
        out["share_of_server_cpu"] = round(out["recording_cpu_s_per_1k_tokens"] / args.server_cpu_per_1k, 4)
    return out


def main(argv=None) -> dict:
    """Parse arguments, set up Django, measure, print the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="runs per round (moderate: 20 sessions)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per task")
    p.add_argument("--pace", type=float, default=30.0, help="tokens/s per task (0: no delay)")
    p.add_argument("--spread", type=float, default=2.0, help="seconds over which runs start")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--database-url", default="")
    p.add_argument("--server-cpu-per-1k", type=float, default=0.0, help="bench.run moderate, ours")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.database_url or f"sqlite:///{tmp}/records.sqlite3")
        out = asyncio.run(main_async(args))
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
