"""Validation of client frames: text in, a checked dict or a ClientError with a protocol code out."""

import json
from typing import Any


class ClientError(Exception):
    """A client frame was refused; `code` is a protocol error code."""

    def __init__(self, code: str, message: str, ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> dict:
        """The `error` frame that answers the client."""
        out = {"type": "error", "code": self.code, "message": self.message}
        if self.ref is not None:
            out["ref"] = self.ref
        return out


# Field name -> (accepted types, required) for each client frame type.
SCHEMAS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "run.start": {"pipeline": ((str,), True), "input": ((str,), True), "ref": ((str,), False)},
    "run.cancel": {"run_id": ((str,), True)},
    "run.resume": {"run_id": ((str,), True), "after_seq": ((int,), True)},
    "ping": {},
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
    if kind == "run.start":
        check_input(data["input"], max_input_chars, ref)
    if kind == "run.resume" and data["after_seq"] < 0:
        raise ClientError("bad_request", "run.resume: after_seq must be >= 0", ref)
    return data


def check_input(text: str, max_input_chars: int, ref: str | None = None) -> None:
    """Refuse an empty or too long user input (both transports)."""
    if not text.strip():
        raise ClientError("bad_request", "input is empty", ref)
    if len(text) > max_input_chars:
        raise ClientError("too_large", f"input is longer than {max_input_chars} characters", ref)


class TokenBucket:
    """Allows `rate` events per second with bursts of `burst`."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = now

    def allow(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def owner_of(user, session_key: str | None, fallback: str) -> str:
    """Who owns runs started by this client: the user, else the session, else the connection."""
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    if session_key:
        return f"session:{session_key}"
    return f"conn:{fallback}"
