"""HTTP routes of the streams app."""

from django.urls import path

from . import api, sse, views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("stream", sse.stream_view, name="sse-start"),
    path("stream/<str:run_id>", sse.resume_view, name="sse-resume"),
    path("api/conversations", api.conversations_view, name="conversations"),
    path("api/conversations/<str:conversation_id>", api.conversation_view, name="conversation"),
    path("metrics", api.metrics_view, name="metrics"),
]
