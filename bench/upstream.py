"""The benchmark's upstream: tests.support.openai_server in its own process, with a send-time record.

    python -m bench.upstream [--port 0]

Prints `listening on http://127.0.0.1:PORT/v1`, then serves until standard input closes.
Every request describes its own workload in its prompt (the client puts it in the
run's input, the pipeline prefixes the task key), so one upstream serves every
scenario and every system under test without a restart:

    task_b n=0200 p=030.0 t=0.250 s=00007 r=00003 x=ours

`n` tokens, `p` tokens per second (0: no delay, all tokens in one write), `t` the
time to first token of task_a only (so that B, C and D are done before A and the
flush can be measured), `s`/`r`/`x` the session, run and system, which tag the record.
Token i is the fixed-width text `f"{i:04d} "`: a client counts tokens by length and
checks loss, duplication and order by comparing with the expected string.

Commands on standard input (one per line), answered with one line on standard output:
- `dump PATH`: write the records of finished and running requests as JSON to PATH, forget them.

Send times are `time.monotonic()` (CLOCK_MONOTONIC, shared by every process of the
machine), taken by the server right after it wrote the first token; token i of a paced
stream is written at first_token_at + i / p (the server paces against its start, so
sleep overshoot does not accumulate).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading

from tests.support.openai_server import OpenAIServer, RequestRecord, Script

PROMPT_RE = re.compile(
    r"(?P<task>\w+) n=(?P<n>\d+) p=(?P<p>[\d.]+) t=(?P<t>[\d.]+) s=(?P<s>\d+) r=(?P<r>\d+) x=(?P<x>[\w-]+)"
)

_pieces: dict[int, list[str]] = {}


def pieces(n: int) -> list[str]:
    """The fixed-width tokens of an n-token answer (shared, so the server's plan cache hits)."""
    out = _pieces.get(n)
    if out is None:
        out = _pieces[n] = [f"{i % 10000:04d} " for i in range(n)]
    return out


def expected_text(n: int) -> str:
    """What a task of n tokens must deliver, exactly."""
    return "".join(pieces(n))


class Recorder:
    """Builds each request's script from its prompt and keeps the request records by tag."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, RequestRecord] = {}
        self.untagged = 0

    def script(self, record: RequestRecord) -> Script:
        """The script for one request (called on the server's thread)."""
        match = PROMPT_RE.search(record.prompt)
        if match is None:
            with self.lock:
                self.untagged += 1
            return Script(chunks=pieces(16), usage=False)
        task = match["task"]
        ttft = float(match["t"]) if task == "task_a" else 0.0
        tag = f"{match['x']}:{int(match['s'])}:{int(match['r'])}:{task}"
        # The records list of the server forgets; keep our own, without the pieces list.
        with self.lock:
            self.records[tag] = record
        return Script(chunks=pieces(int(match["n"])), tokens_per_s=float(match["p"]), ttft_s=ttft)

    def dump(self, path: str) -> int:
        """Write and forget the records; return how many."""
        with self.lock:
            records, self.records = self.records, {}
            untagged, self.untagged = self.untagged, 0
        out = {
            tag: {
                "received_at": r.received_at,
                "response_started_at": r.response_started_at,
                "first_token_at": r.first_token_at,
                "finished_at": r.finished_at,
                "tokens_sent": r.tokens_sent,
                "client_closed": r.client_closed,
                "status": r.status,
            }
            for tag, r in records.items()
        }
        with open(path, "w") as f:
            json.dump({"records": out, "untagged": untagged}, f)
        return len(out)


class _Forgetful(list):
    """The server's request list: counts, keeps nothing (records live in the Recorder)."""

    count = 0

    def append(self, item) -> None:
        self.count += 1

    def __len__(self) -> int:
        return self.count


def main(argv=None) -> None:
    """Serve until standard input closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    recorder = Recorder()
    try:  # keep_text=False: no list of every piece sent per request (newer server versions)
        server = OpenAIServer(recorder.script, host=args.host, port=args.port, keep_text=False)
    except TypeError:
        server = OpenAIServer(recorder.script, host=args.host, port=args.port)
    server.requests = _Forgetful()
    server.start()
    sys.stdout.write(f"listening on {server.base_url}\n")
    sys.stdout.flush()
    try:
        for line in sys.stdin:
            command, _, rest = line.strip().partition(" ")
            if command == "dump":
                count = recorder.dump(rest)
                sys.stdout.write(f"dumped {count}\n")
            else:
                sys.stdout.write(f"unknown command {command!r}\n")
            sys.stdout.flush()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
