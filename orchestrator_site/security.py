"""Refusals at start-up for settings that must not reach production."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def require_secret_key() -> None:
    """Refuse the public default SECRET_KEY, unless DEBUG or DJANGO_INSECURE_LOCAL=1 (a local run)."""
    if settings.SECRET_KEY != settings.DEFAULT_SECRET_KEY or settings.DEBUG or settings.INSECURE_LOCAL:
        return
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set, and the built-in key is public: set DJANGO_SECRET_KEY to a long "
        "random value (the same on every instance), or for a local run only set DJANGO_INSECURE_LOCAL=1 "
        "(scripts/run does) or DJANGO_DEBUG=1."
    )
