"""The access checks of the SSE views, in one call each: who the request is, or the refusal.

    client = await admit(request, start=True)        # POST /stream
    client = await admit(request, start=False)       # GET /stream/<run_id>
    held = await hold(client, run_id)                 # count the stream (and start the run)
    return sse_response(held.wrap(events), run_id)    # released when the response ends

Refusals are ClientErrors with the HTTP status and headers they need (`status`, `headers`).
"""

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings
from django.http import JsonResponse

from streams.protocol import ClientError

from .identity import Client, request_client
from .keys import averify, bearer_token
from .origins import request_refusal
from .quotas import Slot, get_quotas

logger = logging.getLogger(__name__)


class Refused(ClientError):
    """A refusal with its own HTTP status and headers."""

    def __init__(self, code: str, message: str, status: int, headers: dict[str, str] | None = None):
        super().__init__(code, message)
        self.status = status
        self.headers = headers or {}


def unauthorized(message: str, error: str | None = None) -> Refused:
    """401 with the challenge that names the scheme (RFC 6750)."""
    challenge = 'Bearer realm="streams"' + (f', error="{error}"' if error else "")
    return Refused("unauthorized", message, 401, {"WWW-Authenticate": challenge})


async def admit(request, *, start: bool) -> Client:
    """The request's client, or raise: wrong key 401, cross-site 403, not JSON 415, no login 401."""
    token = bearer_token(request.headers.get("Authorization"))
    key = None
    if token is not None:
        key = await averify(token)
        if key is None:
            raise unauthorized("the API key is not valid", "invalid_token")
    else:
        reason = request_refusal(request)
        if reason is not None:
            logger.info("SSE request refused: %s", reason)
            raise Refused("forbidden", reason, 403)
    if start and request.content_type != "application/json":
        raise Refused("bad_request", "the body must be sent as Content-Type: application/json", 415)
    client = await request_client(request, key)
    if not client.authenticated and not settings.STREAMS["ALLOW_ANONYMOUS"]:
        raise unauthorized("log in or send an API key (anonymous use is switched off)")
    return client


@dataclass
class Held:
    """What an SSE stream holds against its owner's quotas: the connection, and the run it started."""

    connection: Slot
    run: Slot | None = None

    async def wrap(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The stream's events; the connection is released when they end, however they end."""
        try:
            async for chunk in events:
                yield chunk
        finally:
            await self.connection.release()


async def hold(client: Client, run_id: str | None = None) -> Held:
    """Count the stream as a connection of its owner and, with `run_id`, the run it starts."""
    quotas = get_quotas()
    connection = await quotas.open_connection(client.quota_owner)
    if run_id is None:
        return Held(connection)
    try:
        return Held(connection, await quotas.start_run(client.quota_owner, run_id))
    except BaseException:
        await connection.release()
        raise


# HTTP status of each protocol error code the HTTP views (SSE, API) answer with.
STATUS = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "unknown_pipeline": 404,
    "unknown_run": 404,
    "unknown_conversation": 404,
    "too_large": 413,
    "too_many_runs": 429,
    "rate_limited": 429,
    "layer_unavailable": 503,
    "unavailable": 503,
    "shutting_down": 503,
    "internal": 500,
}


def error_response(exc: ClientError, status: int | None = None) -> JsonResponse:
    """The JSON answer to a refused request: {"error": {"code", "message"}}, with the refusal's headers."""
    body = {"error": {"code": exc.code, "message": exc.message}}
    response = JsonResponse(body, status=status or getattr(exc, "status", None) or STATUS.get(exc.code, 400))
    for name, value in getattr(exc, "headers", {}).items():
        response[name] = value
    return response
