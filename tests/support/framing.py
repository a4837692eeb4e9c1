"""Odd but legal SSE framings for the local test servers: the same events, spelled differently.

Applied to a server's pre-encoded events (openai_server.StreamPlan) when a Script asks for it:
CRLF or lone-CR line ends, comment lines between events, an event's JSON cut over several
`data:` lines, a byte order mark before the first event.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.openai_server import Script, StreamPlan

BOM = b"\xef\xbb\xbf"


def is_plain(script: Script) -> bool:
    """Whether the script keeps the servers' own framing (LF, no extras): nothing to rewrite."""
    return script.line_ending == "\n" and not (script.comments or script.multiline_data or script.bom)


def reframe_event(payload: bytes, script: Script) -> bytes:
    """One encoded event (LF-framed) in the script's framing."""
    if script.multiline_data:
        # JSON allows a line break between tokens, so `{"a":1,` LF `"b":2}` joins back the same.
        lines = []
        for line in payload.split(b"\n"):
            cut = line.find(b',"') if line.startswith(b"data: {") else -1
            lines.append(line if cut < 0 else line[: cut + 1] + b"\ndata:" + line[cut + 1 :])
        payload = b"\n".join(lines)
    if script.comments:
        # A comment, and fields a client must ignore, before the event's own lines.
        payload = b": keep-alive\nid: 7\nretry: 1000\nx-unknown: field\n" + payload
    if script.line_ending != "\n":
        payload = payload.replace(b"\n", script.line_ending.encode())
    return payload


def reframe(plan: StreamPlan, script: Script) -> StreamPlan:
    """A plan with every event in the script's framing (and the BOM before the first one)."""
    if is_plain(script):
        return plan

    def each(payloads: list[bytes]) -> list[bytes]:
        return [reframe_event(p, script) for p in payloads]

    prelude = each(plan.prelude)
    if script.bom:
        prelude = [BOM + prelude[0], *prelude[1:]] if prelude else [BOM]
    return replace(
        plan,
        prelude=prelude,
        events=each(plan.events),
        epilogue=each(plan.epilogue),
        error_event=reframe_event(plan.error_event, script),
        interrupted=each(plan.interrupted),
    )
