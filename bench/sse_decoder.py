"""Micro-benchmark: the providers' hand-written SSE parser against httpx-sse's decoders, per network read.

    python -m bench.sse_decoder [--reads 20000]

Both sides do what the provider needs per read: frame the bytes into events and parse each
event's JSON. httpx-sse works on text, so its side also runs the incremental UTF-8 decoder
(as httpx's aiter_text does). Bodies are real chat.completion.chunk events from the local
test server's encoder; "paced" is one event per read (a live model), "burst" 64 per read (a
fast upstream whose events pile up in the socket buffer), "crlf" the paced case with CRLF
line ends. Prints microseconds per read and per event (best of --repeat runs, the two
decoders alternated), framing alone and framing plus JSON; lower is better.
"""

from __future__ import annotations

import argparse
import codecs
import json
import time
from collections.abc import Callable

from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from streams.providers.sse import SSEParser


def chunk_event(i: int) -> bytes:
    """One OpenAI-shaped streaming event (as api.openai.com sends it, usage null included)."""
    obj = {
        "id": "chatcmpl-local",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-test",
        "system_fingerprint": None,
        "usage": None,
        "choices": [
            {"index": 0, "delta": {"content": f" word{i}é"}, "logprobs": None, "finish_reason": None}
        ],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def ours(reads: list[bytes], parse_json: bool) -> int:
    """The providers' parser: bytes in, json.loads on the data bytes."""
    parser = SSEParser()
    count = 0
    for read in reads:
        for _event, data in parser.feed(read):
            if parse_json:
                json.loads(data)
            count += 1
    return count


def httpx_sse(reads: list[bytes], parse_json: bool) -> int:
    """httpx-sse's line and event decoders over incrementally decoded text."""
    text = codecs.getincrementaldecoder("utf-8")()
    lines, decoder = SSELineDecoder(), SSEDecoder()
    count = 0
    for read in reads:
        for line in lines.decode(text.decode(read)):
            event = decoder.decode(line)
            if event is not None:
                if parse_json:
                    json.loads(event.data)
                count += 1
    return count


DECODERS: dict[str, Callable[[list[bytes], bool], int]] = {"ours": ours, "httpx-sse": httpx_sse}


def measure(reads: list[bytes], parse_json: bool, repeat: int) -> dict[str, tuple[float, int]]:
    """Best of `repeat` runs per decoder, runs alternated so that machine noise hits both alike."""
    best = dict.fromkeys(DECODERS, float("inf"))
    counts = dict.fromkeys(DECODERS, 0)
    for _ in range(repeat):
        for label, fn in DECODERS.items():
            start = time.perf_counter()
            counts[label] = fn(reads, parse_json)
            best[label] = min(best[label], time.perf_counter() - start)
    return {label: (best[label], counts[label]) for label in DECODERS}


def main() -> None:
    """Print the figures for each body shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=20000, help="network reads per case")
    parser.add_argument("--repeat", type=int, default=9, help="runs per decoder; the best counts")
    args = parser.parse_args()
    paced = [chunk_event(i) for i in range(args.reads)]
    burst_events = [chunk_event(i) for i in range(64)]
    cases = {
        "paced (1 event/read)": paced,
        "burst (64 events/read)": [b"".join(burst_events)] * max(1, args.reads // 64),
        "crlf (1 event/read)": [e.replace(b"\n", b"\r\n") for e in paced],
    }
    print(f"{'case':24} {'work':13} {'decoder':10} {'us/read':>9} {'us/event':>9}")
    for name, reads in cases.items():
        for work, parse_json in (("framing", False), ("framing+json", True)):
            results = measure(reads, parse_json, args.repeat)
            for label, (seconds, events) in results.items():
                per_read, per_event = seconds / len(reads) * 1e6, seconds / events * 1e6
                print(f"{name:24} {work:13} {label:10} {per_read:9.2f} {per_event:9.2f}")
            ratio = results["httpx-sse"][0] / results["ours"][0]
            print(f"{'':24} {work:13} {'httpx/ours':10} {ratio:9.2f}x")


if __name__ == "__main__":
    main()
