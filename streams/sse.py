"""The Server-Sent Events transport: POST /stream starts a run, GET /stream/<run_id> resumes one.

Both views are async Django views that answer a StreamingHttpResponse over an async
generator. The generator owns everything the stream holds: a feeder task with a channel in
the run's group, its pending receive and its watch on the run. When the client goes away,
Django's ASGI handler (django/core/handlers/asgi.py, 5.2) sees http.disconnect and cancels
the task that iterates the generator; on daphne the CancelledError lands inside the
generator (daphne's `send` never suspends), whose `finally` stops the feeder and detaches
from the run (cancelling it when nobody else watches, which closes the upstream provider
streams). Django's own `aclosing()` only closes its wrapper generator, so cleanup never
relies on it. An open stream holds no thread: see _release_request_thread().
"""

import asyncio
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connections
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from . import compat
from .access.http import admit, error_response, hold
from .protocol import INTERNAL, LAYER_UNAVAILABLE, ClientError, Frame
from .records import metrics
from .runs.host import get_host
from .session.core import QUIET_CHECK_S, RunSession
from .session.inputs import check_pipeline, check_versions, loads_checked, valid_run_id
from .session.outbox import Outbox
from .store import LAYER_ERRORS

logger = logging.getLogger(__name__)

# Longest run id looked up; server-made ids are 32 hex digits.
MAX_RUN_ID = 128
# Longest Last-Event-ID read: a seq is a 64-bit number (int() of thousands of digits is refused).
MAX_EVENT_ID_DIGITS = 19
# Every line break an SSE parser splits on: CRLF, lone CR and LF.
LINE_BREAK = re.compile(r"\r\n|\r|\n")
PING = b": ping\n\n"
# A heartbeat setting of 0 must not turn into a busy loop of pings.
MIN_HEARTBEAT_S = 0.05


# --- encoding ---------------------------------------------------------------------------


def encode_event(event: str, data: str, event_id: int | None = None) -> bytes:
    """One SSE event; `data` is split into one `data:` line per line of text.

    A standard parser joins data lines with "\\n", so every text round-trips exactly,
    a trailing "\\n" included, except that a CR cannot be carried by SSE at all: "\\r\\n"
    and a lone "\\r" arrive as "\\n" (written as line breaks rather than lost or turned
    into bogus fields).
    """
    head = f"event: {_field(event)}\n"
    if event_id is not None:
        head = f"id: {event_id}\n{head}"
    # Always "data: " with the space: the parser strips exactly one, so a line that
    # starts with a space keeps it.
    lines = "".join(f"data: {line}\n" for line in LINE_BREAK.split(data))
    return f"{head}{lines}\n".encode()


def encode_frame(frame: Frame) -> bytes:
    """A frame as an SSE event: a delta is named after its task, the rest after their type.

    Ordered frames carry their seq as the event id; unordered ones (run.accepted) have none.
    """
    if frame["type"] == "task.delta":
        return encode_event(frame["task"], frame["text"], frame["seq"])
    return encode_event(frame["type"], _json(frame), frame.get("seq"))


def _field(value: str) -> str:
    """A value for a single-line field (event names): line breaks would end the field early."""
    return LINE_BREAK.sub("", value)


def _json(data: dict) -> str:
    """Compact one-line JSON (json escapes every control character, so no line breaks)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


# --- requests ---------------------------------------------------------------------------


def _not_allowed(allowed: str) -> JsonResponse:
    """405 (code bad_request, as the WebSocket has no such case) for any method but `allowed`."""
    response = error_response(ClientError("bad_request", f"use {allowed}"), status=405)
    response["Allow"] = allowed
    return response


def parse_start(request) -> dict:
    """The checked body of POST /stream: {"pipeline": str, "input": str, optional "conversation",
    "replaces", "after": str} (the input is checked later)."""
    limit = settings.STREAMS["MAX_FRAME_BYTES"]
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ClientError("bad_request", "Content-Length is not a number") from None
    if declared > limit:
        raise ClientError("too_large", f"body is larger than {limit} bytes")
    try:
        body = request.body
    except RequestDataTooBig:
        raise ClientError("too_large", f"body is larger than {limit} bytes") from None
    if len(body) > limit:
        raise ClientError("too_large", f"body is larger than {limit} bytes")
    try:
        data = loads_checked(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ClientError("bad_request", "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ClientError("bad_request", "body must be a JSON object")
    for name in ("pipeline", "input"):
        if name not in data:
            raise ClientError("bad_request", f"missing field {name!r}")
    for name in ("pipeline", "input", "conversation", "replaces", "after"):
        if name in data and not isinstance(data[name], str):
            raise ClientError("bad_request", f"field {name!r} must be str")
    check_pipeline(data["pipeline"])
    check_versions(data)
    return data


def parse_last_event_id(request) -> int:
    """The seq the client has up to (Last-Event-ID); none means the whole run."""
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_EVENT_ID_DIGITS:
        raise ClientError("bad_request", "Last-Event-ID must be a non-negative 64-bit integer")
    return int(raw)


def answers_internal(view):
    """Any unexpected exception of the view is logged and answered as JSON 500 `internal`,
    never as a traceback page."""

    @functools.wraps(view)
    async def wrapper(request, *args, **kwargs):
        try:
            return await view(request, *args, **kwargs)
        except Exception:
            logger.exception("%s %s failed unexpectedly", request.method, request.path)
            return error_response(
                ClientError(INTERNAL, "the request failed unexpectedly; see the server log")
            )

    return wrapper


def sse_response(events: AsyncIterator[bytes], run_id: str) -> StreamingHttpResponse:
    """A text/event-stream response that no cache or proxy holds back."""
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    response["X-Run-Id"] = run_id
    return response


# CSRF: no token, as this is an API for non-browser clients; instead admit() refuses any
# cross-site request (Origin, Sec-Fetch-Site) and any body that is not application/json,
# which a page cannot send cross-origin without a CORS preflight that is never granted.
@csrf_exempt
@answers_internal
async def stream_view(request):
    """POST /stream: start a run of a pipeline and stream its frames as SSE."""
    if request.method != "POST":
        return _not_allowed("POST")
    stream = RunEventStream()
    try:
        client = await admit(request, start=True)
        data = parse_start(request)
        stream.session.owner = client.owner_for(uuid.uuid4().hex)
        stream.session.quota_owner = client.quota_owner
        plan = await stream.session.prepare(
            data["pipeline"],
            data["input"],
            conversation=data.get("conversation"),
            replaces=data.get("replaces"),
            after=data.get("after"),
        )
        held = await hold(client)
    except ClientError as exc:
        metrics.error(exc.code)
        return error_response(exc)
    except LAYER_ERRORS as exc:
        logger.warning("start of a run failed, layer unavailable: %s", exc)
        return error_response(ClientError(LAYER_UNAVAILABLE, "the message layer is unavailable; retry"))
    stream.watch(plan.run_id, 0)

    async def start() -> None:
        await stream.session.launch(plan, announce=False, on_layer_failure=stream.layer_failed)

    # The unordered run.accepted goes first, without id: it tells the client the run id
    # (also in X-Run-Id) and makes daphne send the headers at once.
    return sse_response(
        held.wrap(stream.events(encode_frame(plan.accepted), start, resume=False)), plan.run_id
    )


@csrf_exempt  # only GET is served; any other method gets the JSON 405, not an HTML CSRF page
@answers_internal
async def resume_view(request, run_id: str):
    """GET /stream/<run_id>: the run's frames after Last-Event-ID, then live."""
    if request.method != "GET":
        return _not_allowed("GET")
    stream = RunEventStream()
    try:
        after = parse_last_event_id(request)  # first: a malformed header is the client's bug alone
        client = await admit(request, start=False)
        # Nobody else is this request's connection: a fresh fallback owns nothing.
        stream.session.owner = client.owner_for(uuid.uuid4().hex)
        # A foreign run gets the same answer as a missing one: run ids are not confirmed.
        if not valid_run_id(run_id):
            raise ClientError("unknown_run", f"no run {run_id[:MAX_RUN_ID]!r}")
        await stream.session.check_owner(run_id)
        if await stream.session.has_end(run_id, after):
            # The client has the run's last frame: 204 also stops EventSource reconnecting.
            return HttpResponse(status=204)
        held = await hold(client)
    except ClientError as exc:
        metrics.error(exc.code)
        return error_response(exc)
    except LAYER_ERRORS as exc:
        logger.warning("resume of run %s failed, layer unavailable: %s", run_id, exc)
        return error_response(ClientError(LAYER_UNAVAILABLE, "the message layer is unavailable; retry"))
    stream.watch(run_id, after)

    async def attach() -> None:
        await get_host().attach(run_id)
        stream.session.attached.add(run_id)

    first = f": resume {_field(run_id)} after {after}\n\n".encode()
    return sse_response(held.wrap(stream.events(first, attach, resume=True)), run_id)


# --- the stream ---------------------------------------------------------------------------


class RunEventStream:
    """One SSE response's watch on one run: a RunSession on its own layer channel, as bytes.

    A feeder task joins the run, relays it and puts the encoded events into the outbox; the
    response's generator writes what the outbox holds. A client that reads too slowly
    (over STREAMS_MAX_UNSENT_BYTES unsent) ends the response and detaches from the run.
    """

    def __init__(self, run_id: str | None = None, after_seq: int = 0):
        self.outbox = Outbox(encode_frame, max_bytes=settings.STREAMS["MAX_UNSENT_BYTES"])
        self.session = RunSession("", self.outbox.send, echo_ref=False, progress=False, outbox=self.outbox)
        self.outbox.on_overflow.append(self._slow_reader)
        self.relay = None
        self._feeder: asyncio.Future | None = None
        # Set when the layer failed and the host hands the run's frames over directly.
        self._direct: asyncio.Future | None = None
        if run_id is not None:
            self.watch(run_id, after_seq)

    def watch(self, run_id: str, after_seq: int) -> None:
        """The run this stream relays, from after `after_seq` on."""
        self.run_id = run_id
        self.relay = self.session.watch(run_id, after_seq)

    def layer_failed(self, frames: list[Frame]) -> None:
        """The host's callback when the layer is down: the run's frames, handed over directly."""
        if self._direct is not None and not self._direct.done():
            self._direct.set_result(frames)

    def _slow_reader(self, dropped: int) -> None:
        """The outbox overflowed: stop feeding (the session detaches itself, the response ends)."""
        if self._feeder is not None:
            self._feeder.cancel()

    async def events(
        self, first: bytes, begin: Callable[[], Awaitable[None]], resume: bool
    ) -> AsyncIterator[bytes]:
        """`first`, then what the feeder relays, until the run ends (or the stream is cut short)."""
        session, outbox = self.session, self.outbox
        self._direct = asyncio.get_running_loop().create_future()
        await _release_request_thread()
        outbox.put(first)
        self._feeder = asyncio.ensure_future(self._feed(begin, resume))
        try:
            while (chunk := await outbox.next(join=True)) is not None:
                yield chunk
                outbox.sent(chunk)
        finally:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)
            await session.close()

    async def _feed(self, begin: Callable[[], Awaitable[None]], resume: bool) -> None:
        """Join the run's group, `begin()` (start, or attach and replay), relay until the run ends."""
        session, outbox = self.session, self.outbox
        layer = session.layer = get_channel_layer()
        heartbeat_s = max(settings.STREAMS["SSE_HEARTBEAT_S"], MIN_HEARTBEAT_S)
        quiet_s = min(QUIET_CHECK_S, heartbeat_s)
        receive: asyncio.Future | None = None
        try:
            try:
                session.channel = await layer.new_channel("streams.sse.")
                # Join the group first: no frame of the run may be published before we listen.
                await session.join(self.run_id)
                receive = asyncio.ensure_future(layer.receive(session.channel))
                await begin()
                if resume:
                    # Subscribed first, then the log: what is published meanwhile is either
                    # in the log or arrives later and is recognised by its seq.
                    await session.relay(self.run_id, None)
            except LAYER_ERRORS as exc:
                logger.warning("run %s: SSE stream could not start, layer unavailable: %s", self.run_id, exc)
                outbox.put(_layer_unavailable())
                return
            while not self.relay.ended:
                done, _ = await asyncio.wait(
                    {receive, self._direct}, timeout=quiet_s, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await session.check_quiet(quiet_s)
                    if time.monotonic() - outbox.last_put >= heartbeat_s:
                        outbox.put(PING)
                    continue
                if self._direct in done:
                    # The layer is gone: these are all the frames there will be.
                    await self.relay.push(self._direct.result())
                    if not self.relay.ended:
                        outbox.put(_layer_unavailable())
                    return
                try:
                    message = receive.result()
                except Exception as exc:
                    logger.warning("run %s: SSE receive failed: %s", self.run_id, exc)
                    outbox.put(_layer_unavailable())
                    return
                receive = asyncio.ensure_future(layer.receive(session.channel))
                try:
                    await session.handle(message)
                except LAYER_ERRORS as exc:  # the log, read to fill a gap
                    logger.warning("run %s: SSE gap repair failed: %s", self.run_id, exc)
                    outbox.put(_layer_unavailable())
                    return
        except Exception:
            # A bug: logged with its traceback; the client gets an error event, cleanup runs.
            logger.exception("run %s: SSE stream failed unexpectedly", self.run_id)
            outbox.put(_error_event(INTERNAL, "the stream failed unexpectedly; see the server log"))
        finally:
            if receive is not None:
                await _cancel_receive(receive)
            outbox.finish()


async def _release_request_thread() -> None:
    """Let this request's sync thread go: a stream stays open for minutes and needs none.

    By now the middleware and the view are done; a later thread-sensitive call of this
    request (Django's response.close()) gets a fresh executor that Django shuts down as
    usual (tests/test_sse.py counts the threads).
    """
    if not compat.has_request_executor():
        return
    # Database connections are per thread: close this thread's before it goes.
    await sync_to_async(connections.close_all)()
    executor = compat.pop_request_executor()
    if executor is not None:
        executor.shutdown(wait=False)


async def _cancel_receive(receive: asyncio.Future) -> None:
    """Cancel a pending layer receive; the pub/sub layer drops the channel only from inside one."""
    if not receive.done():
        # A receive task that never ran would be cancelled before its cleanup code: let it start.
        await asyncio.sleep(0)
        receive.cancel()
    await asyncio.gather(receive, return_exceptions=True)


def _layer_unavailable() -> bytes:
    """The event that ends a stream the layer can no longer feed; the client may resume later."""
    return _error_event(LAYER_UNAVAILABLE, "the message layer is unavailable; resume later")


def _error_event(code: str, message: str) -> bytes:
    """An `error` event (no id): the stream cannot go on."""
    return encode_event("error", _json({"code": code, "message": message}))
