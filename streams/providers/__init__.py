"""Provider registry: names in settings.STREAMS_PROVIDERS map to provider instances."""

import logging
from importlib import import_module

from django.conf import settings
from django.utils.module_loading import import_string

from .base import LLMRequest, Provider, ProviderError, Usage

__all__ = [
    "LLMRequest",
    "Provider",
    "ProviderError",
    "Usage",
    "aclose_all",
    "get_provider",
    "provider_names",
]

logger = logging.getLogger(__name__)

# Module that builds each provider kind; each has build(name, config) -> Provider.
KINDS = {
    "simulated": "streams.providers.simulated",
    "openai": "streams.providers.openai_provider",
    "anthropic": "streams.providers.anthropic_provider",
}

_instances: dict[str, Provider] = {}


def provider_names() -> list[str]:
    """Names of the configured providers."""
    return sorted(settings.STREAMS_PROVIDERS)


def get_provider(name: str) -> Provider:
    """Return the (cached) provider configured under `name`."""
    provider = _instances.get(name)
    if provider is None:
        try:
            config = settings.STREAMS_PROVIDERS[name]
        except KeyError:
            raise ProviderError("bad_request", f"unknown provider {name!r}") from None
        if "factory" in config:
            provider = import_string(config["factory"])(name, config)
        else:
            provider = import_module(KINDS[config["kind"]]).build(name, config)
        _instances[name] = provider
    return provider


def warm_up() -> None:
    """Import the module of every configured provider kind (slow SDK imports happen at start-up)."""
    for config in settings.STREAMS_PROVIDERS.values():
        module = KINDS.get(config.get("kind", ""))
        if module is not None:
            try:
                import_module(module)
            except ImportError as exc:  # an optional SDK that is not installed
                logger.info("provider module %s not loaded: %s", module, exc)


def reset() -> None:
    """Forget cached providers (settings changed, e.g. in tests)."""
    _instances.clear()


async def aclose_all() -> None:
    """Close every provider that holds network resources."""
    providers = list(_instances.values())
    _instances.clear()
    for provider in providers:
        aclose = getattr(provider, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing is best effort at shutdown
                logger.exception("closing provider failed")
