"""WebSocket handshake rules, as ASGI middleware around Channels' AuthMiddlewareStack.

    AccessMiddleware(AuthMiddlewareStack(ClientMiddleware(URLRouter(...))))

AccessMiddleware (outermost, before the session is read): a valid `Authorization: Bearer`
key needs no Origin and sets scope["api_key"]; a wrong key refuses the handshake with 4401;
without a key, an Origin that is not allowed (streams/access/origins.py) refuses it.
ClientMiddleware (inside, once user and session are known): sets scope["streams_client"]
(streams/access/identity.py), refuses an unauthenticated handshake with 4401 when
anonymous use is off, and counts the connection for its owner while it lasts; past the cap
the socket is accepted, told why (`error` rate_limited, with retry_after) and closed with 4429.
"""

import json
import logging

from django.conf import settings
from redis.exceptions import RedisError

from .identity import scope_client
from .keys import averify, bearer_token
from .origins import scope_refusal
from .quotas import LimitExceeded, get_quotas

logger = logging.getLogger(__name__)

UNAUTHENTICATED = 4401
TOO_MANY_CONNECTIONS = 4429


def _authorization(scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            return value.decode("latin-1")
    return None


async def refuse(receive, send, code: int | None = None) -> None:
    """Refuse a handshake (servers answer 403 to a close before accept)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", **({"code": code} if code else {})})


async def accept_and_close(receive, send, frame: dict, code: int) -> None:
    """Accept, send one frame that says why, close: a browser learns nothing from a refused handshake."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps(frame)})
    await send({"type": "websocket.close", "code": code})


class AccessMiddleware:
    """API key or Origin, before anything else looks at the handshake."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        token = bearer_token(_authorization(scope))
        if token is not None:
            key = await averify(token)
            if key is None:
                return await refuse(receive, send, UNAUTHENTICATED)
            scope = {**scope, "api_key": key}
        else:
            reason = scope_refusal(scope)
            if reason is not None:
                logger.info("WebSocket handshake refused: %s", reason)
                return await refuse(receive, send)
        return await self.inner(scope, receive, send)


class ClientMiddleware:
    """Who the connection is, whether it may connect, and its count against its owner's connections."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.inner(scope, receive, send)
        client = scope_client(scope)
        if not client.authenticated and not settings.STREAMS["ALLOW_ANONYMOUS"]:
            return await refuse(receive, send, UNAUTHENTICATED)
        try:
            lease = await get_quotas().open_connection(client.quota_owner)
        except LimitExceeded as exc:
            return await accept_and_close(receive, send, exc.frame(), TOO_MANY_CONNECTIONS)
        except (RedisError, OSError) as exc:
            # Redis is down: nothing works without it, and the consumer says so frame by frame.
            logger.warning("connection not counted, quota store unavailable: %s", exc)
            lease = None
        try:
            return await self.inner({**scope, "streams_client": client}, receive, send)
        finally:
            if lease is not None:
                await lease.release()
