"""Validation of client frames: text in, a checked dict or a ClientError with a protocol code out."""

import json
from typing import Any

from ..protocol import PING, RUN_CANCEL, RUN_RESUME, RUN_START, ClientError

__all__ = ["ClientError", "check_input", "parse_client_frame"]


# Field name -> (accepted types, required) for each client frame type.
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    RUN_START: {
        "pipeline": ((str,), True),
        "input": ((str,), True),
        "ref": ((str,), False),
        "conversation": ((str,), False),
    },
    RUN_CANCEL: {"run_id": ((str,), True)},
    RUN_RESUME: {"run_id": ((str,), True), "after_seq": ((int,), True)},
    PING: {},
}


def parse_client_frame(text: str | None, *, max_bytes: int, max_input_chars: int) -> dict[str, Any]:
    """Parse and check one client frame."""
    if text is None:
        raise ClientError("bad_request", "frames must be JSON text, not binary")
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ClientError("too_large", f"frame is larger than {max_bytes} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        raise ClientError("bad_request", "frame is not valid JSON") from None
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
        check_input(data["input"], max_input_chars, ref)
    if kind == RUN_RESUME and data["after_seq"] < 0:
        raise ClientError("bad_request", "run.resume: after_seq must be >= 0", ref)
    return data


def check_input(text: str, max_input_chars: int, ref: str | None = None) -> None:
    """Refuse an empty or too long user input (both transports)."""
    if not text.strip():
        raise ClientError("bad_request", "input is empty", ref)
    if len(text) > max_input_chars:
        raise ClientError("too_large", f"input is longer than {max_input_chars} characters", ref)
