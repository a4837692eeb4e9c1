"""App configuration."""

from django.apps import AppConfig


class StreamsConfig(AppConfig):
    """The streaming orchestrator app."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "streams"

    def ready(self):
        """Clear cached pipeline specs whenever a pipeline or a task is saved or deleted."""
        from django.db.models.signals import post_delete, post_save

        from .access import checks  # noqa: F401  (registers the deploy checks)
        from .models import Pipeline, PipelineTask
        from .pipelines.catalog import forget_specs
        from .telemetry import config as tracing

        tracing.check()  # an OTLP protocol it cannot use fails at start-up, not at the first run

        for model in (Pipeline, PipelineTask):
            post_save.connect(forget_specs, sender=model, dispatch_uid=f"streams-specs-save-{model.__name__}")
            post_delete.connect(
                forget_specs, sender=model, dispatch_uid=f"streams-specs-delete-{model.__name__}"
            )
