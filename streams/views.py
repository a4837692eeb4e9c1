"""HTTP views: the chat page."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache

from .pipelines.catalog import list_pipelines

# The pipeline the picker selects first when it exists (the one every install has).
DEFAULT_PIPELINE = "demo"


@never_cache
def chat(request):
    """The chat page; it makes sure an anonymous visitor has a session."""
    if not settings.STREAMS["ALLOW_ANONYMOUS"] and not request.user.is_authenticated:
        # The WebSocket handshake would be refused anyway: send the visitor to log in first.
        return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
    if not request.session.session_key:
        request.session.save()
    pipelines = list_pipelines()
    slugs = [p["slug"] for p in pipelines]
    default = DEFAULT_PIPELINE if DEFAULT_PIPELINE in slugs else (slugs[0] if slugs else "")
    config = {
        "pipelines": pipelines,
        "defaultPipeline": default,
        "maxInputChars": settings.STREAMS["MAX_INPUT_CHARS"],
        "loginUrl": settings.LOGIN_URL,
        "conversationsUrl": reverse("conversations"),
    }
    return render(request, "streams/chat.html", {"pipelines": pipelines, "config": config})
