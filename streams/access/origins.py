"""Whole-origin checks (scheme, host and port) for both transports.

A browser's request carries `Origin`; it is allowed when it is the app's own origin (the
scheme and `Host` of the request itself, with the host in ALLOWED_HOSTS: the same rule as
Django's CSRF check) or listed in STREAMS_ALLOWED_ORIGINS. `Sec-Fetch-Site: cross-site` is
refused as well (unless the origin is listed). A request without `Origin` is not from a
page (browsers always send it on WebSocket handshakes and cross-origin POSTs), so no origin
rule applies to it; API keys are checked elsewhere and skip these rules altogether.
"""

from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http.request import split_domain_port, validate_host

Origin = tuple[str, str, int]  # scheme, host (lowercase, IPv6 without brackets), port
DEFAULT_PORTS = {"http": 80, "https": 443}
# An ASGI WebSocket scope's scheme, as the page that opened it writes its origin.
PAGE_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def parse_origin(text: str | None) -> Origin | None:
    """An Origin header ("https://host[:port]", nothing more) as a tuple; None for anything else."""
    if not text:
        return None
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path or parts.query or parts.fragment or text.strip().endswith(("?", "#")):
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def own_origin(scheme: str, host: str | None) -> Origin | None:
    """The origin a request was sent to, from its scheme and Host header; None for a host not allowed."""
    if not host or scheme not in DEFAULT_PORTS:
        return None
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    try:
        number = int(port) if port else DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    return scheme, domain.strip("[]").lower(), number


@lru_cache(maxsize=8)
def _listed(entries: tuple[str, ...]) -> frozenset[Origin]:
    origins = {parse_origin(entry) for entry in entries}
    return frozenset(o for o in origins if o is not None)


def listed_origins() -> frozenset[Origin]:
    """settings.STREAMS["ALLOWED_ORIGINS"] parsed (entries that are not origins are ignored)."""
    return _listed(tuple(settings.STREAMS["ALLOWED_ORIGINS"]))


def refusal(origin: str | None, fetch_site: str | None, own: Origin | None) -> str | None:
    """Why a request without an API key is refused as cross-site, or None when it is not."""
    if origin is None:
        if fetch_site and fetch_site.strip().lower() == "cross-site":
            return "cross-site requests are refused"
        return None
    parsed = parse_origin(origin)
    if parsed is not None and parsed in listed_origins():
        return None
    if parsed is None or parsed != own:
        return "the Origin is not allowed"
    if fetch_site and fetch_site.strip().lower() == "cross-site":
        return "cross-site requests are refused"
    return None


def _scope_header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _proxy_says_https(get_header) -> bool:
    """Whether SECURE_PROXY_SSL_HEADER is set and the request carries it (Django's rule)."""
    setting = settings.SECURE_PROXY_SSL_HEADER
    if not setting:
        return False
    meta_name, secure_value = setting
    name = meta_name.removeprefix("HTTP_").lower().replace("_", "-")
    value = get_header(name.encode())
    return value is not None and value.split(",", 1)[0].strip() == secure_value


def scope_own_origin(scope) -> Origin | None:
    """The origin of an ASGI connection as its page sees it (ws -> http, wss -> https)."""
    scheme = PAGE_SCHEMES.get(scope.get("scheme") or "ws", "")
    if scheme == "http" and _proxy_says_https(lambda name: _scope_header(scope, name)):
        scheme = "https"
    return own_origin(scheme, _scope_header(scope, b"host"))


def scope_refusal(scope) -> str | None:
    """Why a WebSocket handshake without an API key is refused as cross-site, or None."""
    return refusal(
        _scope_header(scope, b"origin"), _scope_header(scope, b"sec-fetch-site"), scope_own_origin(scope)
    )


def request_refusal(request) -> str | None:
    """Why an HTTP request without an API key is refused as cross-site, or None."""
    try:
        own = own_origin(request.scheme, request.get_host())
    except DisallowedHost:
        own = None
    return refusal(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own)
