"""`manage.py check --deploy` warnings for the streams' own access settings."""

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_access(app_configs=None, **kwargs) -> list[Warning]:
    """Anonymous use switched on in a deployment."""
    warnings = []
    if settings.STREAMS["ALLOW_ANONYMOUS"]:
        warnings.append(
            Warning(
                "STREAMS_ALLOW_ANONYMOUS is on: anyone who reaches the site can start runs on its API keys.",
                hint="Set STREAMS_ALLOW_ANONYMOUS=0 (users log in; other clients use API keys).",
                id="streams.W001",
            )
        )
    return warnings
