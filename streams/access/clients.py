"""The client's address: the direct peer, or behind a trusted proxy the address it forwarded."""

import ipaddress
from functools import lru_cache

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# The address of a client whose peer is unknown (a unix socket, an in-process test).
UNKNOWN = "unknown"


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip())


def trusted_proxies() -> tuple[Network, ...]:
    """settings.STREAMS["TRUSTED_PROXIES"] as networks (default: loopback)."""
    return _networks(tuple(settings.STREAMS["TRUSTED_PROXIES"]))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write it ("1.2.3.4", "::1", "[::1]", "1.2.3.4:5678"), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _trusted(ip, proxies: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address from the direct peer and its X-Forwarded-For header.

    The header is believed only as far as the proxies that wrote it are trusted: read from the
    right (each proxy appends the address it saw), the first address that is not a trusted
    proxy is the client. An entry that does not parse ends the walk at the proxy that passed
    it on, so garbage cannot make up an address of its own.
    """
    ip = _ip(peer) if peer else None
    if ip is None:
        return UNKNOWN
    if not forwarded_for or not _trusted(ip, proxies):
        return str(ip)
    for entry in reversed(forwarded_for.split(",")):
        hop = _ip(entry)
        if hop is None:
            break
        ip = hop
        if not _trusted(ip, proxies):
            break
    return str(ip)


def _header(headers, name: bytes) -> str | None:
    """All values of an ASGI header joined with commas (as HTTP combines repeated headers)."""
    values = [value.decode("latin-1") for key, value in headers if key.lower() == name]
    return ",".join(values) if values else None


def scope_address(scope) -> str:
    """The client address of an ASGI connection (WebSocket or HTTP)."""
    peer = scope.get("client")
    return client_address(
        peer[0] if peer else None, _header(scope.get("headers", ()), b"x-forwarded-for"), trusted_proxies()
    )


def request_address(request) -> str:
    """The client address of a Django request."""
    scope = getattr(request, "scope", None)
    if scope is not None:
        return scope_address(scope)
    return client_address(
        request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"), trusted_proxies()
    )
