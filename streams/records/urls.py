"""Routes of records: conversations API and /metrics."""

from django.urls import path

from . import views

urlpatterns = [
    path("api/conversations", views.conversations_view, name="conversations"),
    path("api/conversations/<str:conversation_id>", views.conversation_view, name="conversation"),
    path("metrics", views.metrics_view, name="metrics"),
]
