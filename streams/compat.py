"""Every private API of a dependency that the app relies on, in one place.

Each is pinned by a test in tests/test_compat.py that fails when an upgrade changes it, and
the dependencies concerned have upper bounds in requirements.txt.
"""

from typing import Any

# --- channels-redis (pinned <4.4): the pub/sub layer's per-loop layer and group channels ---


def pubsub_group_channel(layer: Any, group: str, redis_url: str) -> str | None:
    """The Redis channel behind a group of the pub/sub layer, when a plain PUBLISH reaches it.

    channels-redis' pub/sub layer sends a group message as one PUBLISH of its own
    serialization to one channel of its single host. Only then (one shard, the same Redis
    as `redis_url`) may the app publish that message itself; None otherwise.
    """
    if "channels_redis.pubsub" not in type(layer).__module__ or not redis_url:
        return None
    loop_layer = layer._get_layer()
    shards = getattr(loop_layer, "_shards", ())
    if len(shards) != 1 or shards[0].host.get("address") != redis_url:
        return None
    return loop_layer._get_group_channel_name(group)


def pubsub_serialize(layer: Any, message: dict) -> bytes:
    """The bytes the pub/sub layer would PUBLISH for `message` (what its receivers decode)."""
    return layer.serialize(message)


# --- asgiref (pinned <3.12): the thread-sensitive executor of a request ---


def _request_executors() -> tuple[Any, Any]:
    """asgiref's executor registry and the current request's context (None, None if unknown)."""
    from asgiref.sync import SyncToAsync

    current = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    if current is None or executors is None:
        return None, None
    return executors, current.get(None)


def has_request_executor() -> bool:
    """Whether this request has a thread-sensitive executor of its own (see pop_request_executor)."""
    executors, context = _request_executors()
    return executors is not None and context is not None and context in executors


def pop_request_executor() -> Any | None:
    """Take the current request's thread-sensitive executor out of asgiref's registry.

    Django runs each request in an asgiref ThreadSensitiveContext whose one-thread executor
    lives until the response ends. asgiref has no public API to let it go early; if these
    look-ups change, None is returned and streams merely keep their thread.
    """
    executors, context = _request_executors()
    if executors is None or context is None:
        return None
    return executors.pop(context, None)


# --- daphne 4.2 / autobahn: a server's close code from the application ---


def daphne_close_going_away() -> None:
    """Let an application close a daphne WebSocket with 1001 (going away), as servers do.

    daphne hands the close code of `websocket.close` to autobahn's sendClose, which refuses
    every code but 1000 and 3000-4999 (raising in the application's send); daphne itself
    closes with 1011 through autobahn's sendCloseFrame. 1001 takes that way too.
    """
    from daphne.ws_protocol import WebSocketProtocol

    original = WebSocketProtocol.serverClose
    if getattr(original, "going_away", False):
        return

    def server_close(self, code=None):
        if code == 1001:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            original(self, code)

    server_close.going_away = True
    WebSocketProtocol.serverClose = server_close
