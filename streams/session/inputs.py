"""Validation of client frames: text in, a checked dict or a ClientError with a protocol code out."""

import json
import re
from typing import Any

from ..protocol import PING, RUN_CANCEL, RUN_RESUME, RUN_START, ClientError

__all__ = [
    "ClientError",
    "check_input",
    "check_pipeline",
    "check_versions",
    "loads_checked",
    "parse_client_frame",
    "valid_run_id",
]


# Field name -> (accepted types, required) for each client frame type.
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    RUN_START: {
        "pipeline": ((str,), True),
        "input": ((str,), True),
        "ref": ((str,), False),
        "conversation": ((str,), False),
        "replaces": ((str,), False),
        "after": ((str,), False),
    },
    RUN_CANCEL: {"run_id": ((str,), True)},
    RUN_RESUME: {"run_id": ((str,), True), "after_seq": ((int,), True)},
    PING: {},
}


# Deepest nesting of objects and arrays accepted in a client frame or body (frames are flat;
# a ping may carry a small structure). Checked without recursion, after json's own limit.
MAX_DEPTH = 16
# Largest ping (its whole frame, in UTF-8 bytes) that is echoed; a larger one gets too_large.
DEFAULT_MAX_PING_BYTES = 1024
# Run ids are made by the server (32 hex digits); anything else names no run.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# Pipeline slugs as the model stores them (SlugField, 64 characters).
SLUG_RE = re.compile(r"[-A-Za-z0-9_]{1,64}")
# Largest after_seq: Redis stream ids are 64-bit.
MAX_SEQ = 2**63 - 1


def loads_checked(text: str, ref: str | None = None) -> Any:
    """JSON text as data whose every string is valid Unicode and whose nesting is shallow."""
    try:
        # NaN and Infinity are not JSON; echoed back they would not parse at the client.
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # also ints over Python's 4,300-digit limit
        raise ClientError("bad_request", "not valid JSON", ref) from None
    check_tree(data, ref)
    return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def check_tree(data: Any, ref: str | None = None, max_depth: int = MAX_DEPTH) -> None:
    """Refuse nesting deeper than `max_depth` and strings that are not valid Unicode (lone surrogates).

    Iterative, so that no input can exhaust the stack; a lone surrogate ("\\ud800" in
    JSON) would otherwise fail later, when an answer that echoes it is encoded.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, ref)
        elif isinstance(value, dict | list):
            if depth > max_depth:
                raise ClientError("bad_request", f"nested deeper than {max_depth} levels", ref)
            if isinstance(value, dict):
                for key in value:
                    _check_text(key, ref)
                value = value.values()
            stack.extend((item, depth + 1) for item in value)


def _check_text(text: str, ref: str | None) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ClientError("bad_request", "text is not valid Unicode (lone surrogate)", ref) from None


def valid_run_id(run_id: str) -> bool:
    """Whether `run_id` can name a run at all (anything else is answered as an unknown run)."""
    return RUN_ID_RE.fullmatch(run_id) is not None


def parse_client_frame(
    text: str | None,
    *,
    max_bytes: int,
    max_input_chars: int,
    max_ping_bytes: int = DEFAULT_MAX_PING_BYTES,
) -> dict[str, Any]:
    """Parse and check one client frame."""
    if text is None:
        raise ClientError("bad_request", "frames must be JSON text, not binary")
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ClientError("too_large", f"frame is larger than {max_bytes} bytes")
    data = loads_checked(text)
    if not isinstance(data, dict):
        raise ClientError("bad_request", "frame must be a JSON object")
    ref = data.get("ref") if isinstance(data.get("ref"), str) else None
    kind = data.get("type")
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise ClientError("bad_request", f"unknown frame type {kind!r}", ref)
    for name, (types, required) in schema.items():
        if name not in data:
            if required:
                raise ClientError("bad_request", f"{kind}: missing field {name!r}", ref)
            continue
        value = data[name]
        # bool is an int in Python; a seq of `true` is still a client bug.
        if not isinstance(value, types) or isinstance(value, bool):
            expected = " or ".join(t.__name__ for t in types)
            raise ClientError("bad_request", f"{kind}: field {name!r} must be {expected}", ref)
    if kind == RUN_START:
        check_pipeline(data["pipeline"], ref)
        check_input(data["input"], max_input_chars, ref)
        check_versions(data, ref)
    if kind == RUN_RESUME and not 0 <= data["after_seq"] <= MAX_SEQ:
        raise ClientError("bad_request", f"run.resume: after_seq must be between 0 and {MAX_SEQ}", ref)
    if "run_id" in schema and not valid_run_id(data["run_id"]):
        raise ClientError("unknown_run", f"no run {data['run_id'][:128]!r}", ref)
    if kind == PING and size > max_ping_bytes:
        raise ClientError("too_large", f"ping is larger than {max_ping_bytes} bytes; it is not echoed", ref)
    return data


def check_pipeline(slug: str, ref: str | None = None) -> None:
    """Refuse a pipeline name that no pipeline can have, with the answer a missing one gets."""
    if SLUG_RE.fullmatch(slug) is None:
        raise ClientError("unknown_pipeline", f"no runnable pipeline {slug[:64]!r}", ref)


def check_versions(start: dict[str, Any], ref: str | None = None) -> None:
    """Refuse `replaces`/`after` (v3) that cannot name a run of the start's conversation.

    Both name a run of the conversation, so either needs `conversation`; they say the same
    thing two ways (where the new turn goes), so at most one is given.
    """
    given = [name for name in ("replaces", "after") if start.get(name) is not None]
    if len(given) > 1:
        raise ClientError("bad_request", "run.start: give replaces or after, not both", ref)
    if not given:
        return
    name = given[0]
    if start.get("conversation") is None:
        raise ClientError("bad_request", f"run.start: {name} needs conversation", ref)
    if not valid_run_id(start[name]):
        raise ClientError("unknown_run", f"no run {start[name][:128]!r} in this conversation", ref)


def check_input(text: str, max_input_chars: int, ref: str | None = None) -> None:
    """Refuse an empty, too long, or unstorable user input (both transports)."""
    if not text.strip():
        raise ClientError("bad_request", "input is empty", ref)
    if len(text) > max_input_chars:
        raise ClientError("too_large", f"input is longer than {max_input_chars} characters", ref)
    if "\x00" in text:
        # PostgreSQL text cannot hold NUL: the run's record would fail after it started.
        raise ClientError("bad_request", "input contains a NUL character", ref)
