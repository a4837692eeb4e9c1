"""Slow readers under each server: RSS growth of the app with clients that never read.

    .venv/bin/python -m bench.slow_readers                       # both servers, about 2 min
    .venv/bin/python -m bench.slow_readers --servers uvicorn --clients 5 --log-kib 512

For each server (daphne; uvicorn through `python -m streams.serve`) and each run shape, a
fresh server process, a finished run of that size written to the run log, then N clients
that each ask for a replay of the whole run and never read (tests/support/slow_readers.py:
a 64 KiB socket receive buffer, the websockets library's queue of 4). The server's RSS is
sampled every 50 ms for --window-s; then each client reads what it was sent and its close
code is recorded. Not the benchmark (bench/run.py): no upstream, no load generator.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import django

# The run log written here uses the app's settings (its Redis pool).
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator_site.settings")
django.setup()

from tests.support.live import LiveServer, app_env, prepare_database  # noqa: E402
from tests.support.slow_readers import (  # noqa: E402
    RSSSampler,
    finished_run,
    non_reader,
    read_to_close,
    session_cookie,
)

logger = logging.getLogger("bench.slow_readers")
REDIS_URL = "redis://127.0.0.1:6379/0"
# Run shapes: (default log size in KiB of text, characters of text per delta frame).
SHAPES = {
    "token-frames": (512, 6),  # a paced run, a frame per token: DESIGN.md's 500 KiB replay
    "large-frames": (65_536, 16_000),  # held tasks' flushes: deltas at the frame bound
}


async def measure(
    server_kind: str, shape: str, log_kib: int, clients: int, window_s: float, tmp: Path
) -> dict:
    """One server process, one run shape: RSS growth and what the clients got."""
    db = prepare_database(tmp, REDIS_URL)
    env = app_env(db, REDIS_URL, LOG_LEVEL="WARNING")
    with LiveServer(env, log_path=tmp / f"{server_kind}-{shape}.log", server=server_kind) as server:
        cookie, key = await session_cookie(server.url)
        run_id = await finished_run(REDIS_URL, key, log_kib * 1024, SHAPES[shape][1])
        await asyncio.sleep(1.0)  # let start-up settle before the baseline
        sampler = RSSSampler(server.proc.pid).start()
        began = time.monotonic()
        conns = [await non_reader(server.ws_url, cookie, run_id) for _ in range(clients)]
        await asyncio.sleep(window_s)
        growth = await sampler.stop()
        results = await asyncio.gather(*(read_to_close(c, timeout_s=5) for c in conns))
        slow = server.log_text().count("slow reader")
    return {
        "server": server_kind,
        "shape": shape,
        "log_kib": log_kib,
        "clients": clients,
        "window_s": window_s,
        "rss_growth_mib": round(growth / 2**20, 1),
        "close_codes": [code for _, code in results],
        "received_kib": [round(chars / 1024) for chars, _ in results],
        "closed_as_slow_readers": slow,
        "elapsed_s": round(time.monotonic() - began, 1),
    }


def keep_logs(tmp: Path, to: Path) -> None:
    """Copy the servers' logs out of the temporary directory."""
    for log in tmp.glob("*.log"):
        (to / log.name).write_bytes(log.read_bytes())


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", default="daphne,uvicorn")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--log-kib", type=int, default=0, help="text in the run's log (default: per shape)")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--window-s", type=float, default=10.0)
    p.add_argument("--keep-logs", default="", help="a directory to copy the servers' logs to")
    args = p.parse_args(argv)
    out = []
    for shape in args.shapes.split(","):
        size = args.log_kib or SHAPES[shape][0]
        for kind in args.servers.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                result = await measure(kind, shape, size, args.clients, args.window_s, Path(tmp))
                if args.keep_logs:
                    keep_logs(Path(tmp), Path(args.keep_logs))
            logger.info("%s", json.dumps(result))
            out.append(result)
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asyncio.run(main())
