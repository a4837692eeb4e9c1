"""What tracing costs a run, in one process: building its spans and exporting them over OTLP/HTTP.

The whole-server A/B (`bench.run --scenario tracing`) sees tracing only as the difference of two
noisy figures. This records runs shaped like the moderate scenario's (four tasks, `--tokens`
pieces each) through the real pump and recorder, then measures the CPU (process, all threads)
of what tracing adds at a run's end: `streams.telemetry.live.run_ended` (the spans, built from
the recorder) and the batch exporter's work (encoding, the HTTP request) to a local sink
(tests.support.otlp_receiver in its own process), flushed. Prints the cost per run and per
1,000 tokens, and its share of a server's CPU per 1,000 tokens when given one.

    .venv/bin/python -m bench.tracing_cost [--runs 200] [--tokens 200] [--rounds 5] [--server-cpu-per-1k 0.2]
"""

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.records_cost import TASKS, setup_django, spec
from tests.support.live import free_port, wait_for_port

logger = logging.getLogger("bench.tracing_cost")


async def recorded_run(n: int, tokens: int):
    """One unpaced run through the pump with its recorder; the ended recorder."""
    from streams.records.recorder import RecordingSink, RunRecorder
    from streams.runs.pump import RunPump

    run_id = f"trace-{n}"
    recorder = RunRecorder(run_id, owner="bench", spec=spec(), user_input="hello")

    async def publish(frames):
        await asyncio.sleep(0)
        recorder.frames(frames)

    pump = RunPump(run_id, TASKS, publish)
    sink = RecordingSink(pump, recorder)
    sender = asyncio.create_task(pump.run())

    async def task(key: str) -> None:
        sink.started(key)
        for i in range(tokens):
            if i % 8 == 0:
                await asyncio.sleep(0)  # interleave the tasks, as paced ones do
            sink.delta(key, f" tok{i}")
        sink.finished(key, stats={"completion_tokens": tokens, "prompt_tokens": 5, "finish_reason": "stop"})

    await asyncio.gather(*(task(k) for k in TASKS))
    await sender
    return recorder


async def main_async(args) -> dict:
    """Record the runs once, then trace them `--rounds` times; CPU per round."""
    from streams.records.writer import close_writer
    from streams.telemetry import exporting, live

    recorders = [await recorded_run(n, args.tokens) for n in range(args.runs)]
    assert all(r.ended_at is not None for r in recorders)
    live.reset()
    live.run_ended(recorders[0])  # warm-up: the provider, its exporter and thread are built once
    exporting.flush()
    per_round = []
    for r in range(args.rounds):
        cpu = time.process_time()
        for rec in recorders:
            live.run_ended(rec)
        exporting.flush()
        per_round.append(time.process_time() - cpu)
        logger.info("round %d: %.4f CPU s for %d runs", r + 1, per_round[-1], args.runs)
    exporting.shutdown()
    await close_writer()
    per_run = statistics.median(per_round) / args.runs
    tokens = args.tokens * len(TASKS)
    out = {
        "runs": args.runs,
        "tokens_per_run": tokens,
        "cpu_s_per_round": [round(c, 4) for c in per_round],
        "tracing_ms_per_run": round(per_run * 1000, 3),
        "tracing_cpu_s_per_1k_tokens": round(per_run / tokens * 1000, 5),
    }
    if args.server_cpu_per_1k:
        out["share_of_server_cpu"] = round(out["tracing_cpu_s_per_1k_tokens"] / args.server_cpu_per_1k, 4)
    return out


def main(argv=None) -> dict:
    """Parse arguments, start the sink, set up Django, measure, print the figures as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200, help="runs traced per round")
    p.add_argument("--tokens", type=int, default=200, help="pieces per task (moderate: 200)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--server-cpu-per-1k", type=float, default=0.0, help="bench.run's figure for ours")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver", "--port", str(port)])
    try:
        wait_for_port(port)
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="tracing-cost-") as tmp:
            setup_django(f"sqlite:///{tmp}/records.sqlite3")
            out = asyncio.run(main_async(args))
    finally:
        sink.terminate()
        sink.wait()
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
