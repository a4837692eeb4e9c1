"""server.address / server.port of a configured provider, from its base URL (never its key)."""

import os
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

__all__ = ["server_of"]

# The SDKs' own defaults when a provider's settings name no base_url.
SDK_DEFAULTS = {
    "openai": ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    "anthropic": ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
}
DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=64)
def _server(base_url: str) -> tuple[str, int] | None:
    parts = urlsplit(base_url)
    if not parts.hostname:
        return None
    port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    return (parts.hostname, port) if port else None


def server_of(provider: str) -> tuple[str, int] | None:
    """(host, port) that the provider named `provider` calls; None for in-process providers."""
    config = settings.STREAMS_PROVIDERS.get(provider) or {}
    base_url = config.get("base_url")
    if not base_url and config.get("kind") in SDK_DEFAULTS:
        env, default = SDK_DEFAULTS[config["kind"]]
        base_url = os.environ.get(env) or default
    return _server(base_url) if base_url else None
