"""The HTTP API: the owner's conversations (JSON) and the Prometheus metrics."""

import hmac
import ipaddress
import uuid

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .access.http import admit, error_response
from .protocol import ClientError
from .records import metrics
from .records.conversations import UnknownRun, conversation_detail, owner_conversations
from .session.inputs import valid_run_id

# Headers a reverse proxy adds: a request that carries one came from elsewhere through it,
# however loopback its socket address looks.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


async def _owner(request) -> str:
    """Who asks: as for the streams (API key, user, session; access/http.py), else nobody's."""
    client = await admit(request, start=False)
    return client.owner_for(uuid.uuid4().hex)


@never_cache
@require_GET
async def conversation_view(request, conversation_id: str):
    """GET /api/conversations/<id>[?branch=<run_id>]: the owner's conversation, its current
    branch or the one through that run; 404 for anyone else (unknown_run for a foreign run)."""
    try:
        owner = await _owner(request)
        branch = request.GET.get("branch")
        if branch is not None and not valid_run_id(branch):
            raise UnknownRun(branch)
        detail = await database_sync_to_async(conversation_detail)(owner, conversation_id, branch)
    except ClientError as exc:
        metrics.error(exc.code)
        return error_response(exc)
    if detail is None:
        raise Http404("no such conversation")
    return JsonResponse(detail)


@never_cache
@require_GET
async def conversations_view(request):
    """GET /api/conversations: the owner's conversations, most recently used first."""
    try:
        owner = await _owner(request)
    except ClientError as exc:
        metrics.error(exc.code)
        return error_response(exc)
    return JsonResponse({"conversations": await database_sync_to_async(owner_conversations)(owner)})


def _loopback(request) -> bool:
    """Whether the request comes straight from this host (not through a proxy)."""
    if any(request.META.get(h) for h in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def _token_ok(request) -> bool:
    """Whether the request carries `Authorization: Bearer $STREAMS_METRICS_TOKEN`."""
    token = settings.STREAMS["METRICS_TOKEN"]
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@never_cache
@require_GET
def metrics_view(request):
    """GET /metrics: 404 unless STREAMS_METRICS; then only from loopback or with the token."""
    if not settings.STREAMS["METRICS"]:
        raise Http404("metrics are off")
    if not (_token_ok(request) or _loopback(request)):
        response = HttpResponse(
            "metrics need a token or a local request\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics.render(), content_type=metrics.CONTENT_TYPE_LATEST)
