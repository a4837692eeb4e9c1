"""HTTP views: the chat page."""

from django.shortcuts import render


def chat(request):
    """The chat page; it makes sure an anonymous visitor has a session."""
    if not request.session.session_key:
        request.session.save()
    return render(request, "streams/chat.html", {})
