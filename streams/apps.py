"""App configuration."""

from django.apps import AppConfig


class StreamsConfig(AppConfig):
    """The streaming orchestrator app."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "streams"
