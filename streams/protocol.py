"""The wire protocol's names: frame types, end types, error codes, and the refused-frame error.

Pure: imported by the gate and the transports alike (docs/protocol.md is the reference).
"""

import math
from typing import Any

Frame = dict[str, Any]

# Ordered frames (they carry run_id and seq).
TASK_STARTED = "task.started"
TASK_DELTA = "task.delta"
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
TASK_TYPES = frozenset({TASK_STARTED, TASK_DELTA, TASK_COMPLETED, TASK_FAILED})
END_TYPES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})

# Unordered frames.
RUN_ACCEPTED = "run.accepted"
RUN_PROGRESS = "run.progress"
PONG = "pong"
ERROR = "error"

# Client frames.
RUN_START = "run.start"
RUN_CANCEL = "run.cancel"
RUN_RESUME = "run.resume"
PING = "ping"

# Codes of `error` frames (a refused client frame).
BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
UNKNOWN_PIPELINE = "unknown_pipeline"
UNKNOWN_RUN = "unknown_run"
TOO_MANY_RUNS = "too_many_runs"
RATE_LIMITED = "rate_limited"
UNAUTHORIZED = "unauthorized"
UNKNOWN_CONVERSATION = "unknown_conversation"
LAYER_UNAVAILABLE = "layer_unavailable"
UNAVAILABLE = "unavailable"  # another service the request needs (the database) is down; retry
INTERNAL = "internal"
SHUTTING_DOWN = "shutting_down"  # run.start refused: the server drains before it stops

# Codes of task.failed errors from providers (streams/providers/errors.py).
AUTH = "auth"
UPSTREAM_ERROR = "upstream_error"
CONNECTION = "connection"
BAD_RESPONSE = "bad_response"
INCOMPLETE = "incomplete"  # the stream ended without the provider saying the answer is complete

# Codes of task.failed / run.failed errors that the core itself produces.
CANCELLED = "cancelled"
TASKS_FAILED = "tasks_failed"
DEPENDENCY_FAILED = "dependency_failed"
BAD_TEMPLATE = "bad_template"
TIMEOUT = "timeout"
HOST_LOST = "host_lost"
SHUTDOWN = "shutdown"  # run.failed: the server stopped before the run could finish


class ClientError(Exception):
    """A client frame was refused; `code` is a protocol error code, `retry_after_s` when to retry."""

    def __init__(self, code: str, message: str, ref: str | None = None, retry_after_s: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.retry_after_s = None if retry_after_s is None else max(1, math.ceil(retry_after_s))
        # HTTP headers of the refusal (SSE, API).
        self.headers = {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}

    def frame(self) -> Frame:
        """The `error` frame that answers the client, with `retry_after` (seconds) when set."""
        out = {"type": ERROR, "code": self.code, "message": self.message}
        if self.ref is not None:
            out["ref"] = self.ref
        if self.retry_after_s is not None:
            out["retry_after"] = self.retry_after_s
        return out


# Seconds a client is told to wait before it retries a start refused because Redis is down.
LAYER_RETRY_AFTER_S = 2


def layer_unavailable(ref: str | None = None) -> ClientError:
    """The refusal of a start or resume while the message layer (Redis) is unreachable."""
    return ClientError(
        LAYER_UNAVAILABLE, "the message layer (Redis) is unavailable; retry shortly", ref, LAYER_RETRY_AFTER_S
    )
