"""HTTP routes of the streams app."""

from django.urls import include, path

from . import sse, views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("stream", sse.stream_view, name="sse-start"),
    path("stream/<str:run_id>", sse.resume_view, name="sse-resume"),
    path("", include("streams.records.urls")),
]
