"""Origins compared whole (scheme, host, port); client addresses believed only from trusted proxies."""

import ipaddress

import pytest
from django.test import RequestFactory

from streams.access.clients import UNKNOWN, client_address, scope_address
from streams.access.origins import parse_origin, refusal, request_refusal, scope_own_origin, scope_refusal

OWN = ("http", "127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("http://127.0.0.1:8000", ("http", "127.0.0.1", 8000)),
        ("https://Chat.Example.com", ("https", "chat.example.com", 443)),
        ("http://chat.example.com:80", ("http", "chat.example.com", 80)),
        ("http://[::1]:8000", ("http", "::1", 8000)),
        ("null", None),
        ("file://", None),
        ("http://a.example/path", None),
        ("http://a.example/", None),
        ("http://a.example?x", None),
        ("http://user@a.example", None),
        ("http://a.example:99999", None),
        ("ws://a.example", None),
        ("", None),
    ],
)
def test_parse_origin(text, parsed):
    assert parse_origin(text) == parsed


@pytest.mark.parametrize(
    ("origin", "fetch_site", "refused"),
    [
        ("http://127.0.0.1:8000", None, False),
        ("http://127.0.0.1:8000", "same-origin", False),
        # Another port, another scheme, another host name of the same machine: all another origin.
        ("http://127.0.0.1:9999", None, True),
        ("http://127.0.0.1", None, True),
        ("https://127.0.0.1:8000", None, True),
        ("http://localhost:8000", None, True),
        ("http://evil.example", None, True),
        ("null", None, True),
        # No Origin: not a page, unless the browser says it is a cross-site one.
        (None, None, False),
        (None, "none", False),
        (None, "cross-site", True),
        ("http://127.0.0.1:8000", "cross-site", True),
    ],
)
def test_refusal_compares_the_whole_origin(origin, fetch_site, refused):
    assert (refusal(origin, fetch_site, OWN) is not None) is refused


def test_listed_origins_are_allowed_even_cross_site(settings):
    settings.STREAMS = {**settings.STREAMS, "ALLOWED_ORIGINS": ["https://app.example.com", "junk"]}
    assert refusal("https://app.example.com", "cross-site", OWN) is None
    assert refusal("https://app.example.com:8443", None, OWN) is not None
    assert refusal("http://app.example.com", None, OWN) is not None


def ws_scope(host: str | None, origin: str | None = None, scheme: str = "ws", **headers: str) -> dict:
    pairs = [] if host is None else [(b"host", host.encode())]
    if origin is not None:
        pairs.append((b"origin", origin.encode()))
    pairs += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "websocket", "scheme": scheme, "headers": pairs}


def test_the_own_origin_of_a_socket_is_its_scheme_and_host_when_the_host_is_allowed(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1", ".example.com"]
    assert scope_own_origin(ws_scope("127.0.0.1:8000")) == ("http", "127.0.0.1", 8000)
    assert scope_own_origin(ws_scope("chat.example.com", scheme="wss")) == ("https", "chat.example.com", 443)
    assert scope_own_origin(ws_scope("evil.test:8000")) is None  # DNS rebinding: the host is not ours
    assert scope_own_origin(ws_scope(None)) is None
    assert scope_refusal(ws_scope("evil.test:8000", "http://evil.test:8000")) is not None
    assert scope_refusal(ws_scope("127.0.0.1:8000", "http://127.0.0.1:8000")) is None


def test_behind_a_tls_proxy_the_forwarded_proto_makes_the_page_https(settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    scope = ws_scope("chat.example.com", "https://chat.example.com", x_forwarded_proto="https")
    settings.SECURE_PROXY_SSL_HEADER = None
    assert scope_refusal(scope) is not None
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert scope_refusal(scope) is None
    request = RequestFactory().post(
        "/stream",
        HTTP_HOST="chat.example.com",
        HTTP_ORIGIN="https://chat.example.com",
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert request_refusal(request) is None


def test_an_http_request_from_another_port_is_refused(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    factory = RequestFactory()
    assert (
        request_refusal(
            factory.post("/stream", HTTP_HOST="127.0.0.1:8000", HTTP_ORIGIN="http://127.0.0.1:8000")
        )
        is None
    )
    assert request_refusal(
        factory.post("/stream", HTTP_HOST="127.0.0.1:8000", HTTP_ORIGIN="http://127.0.0.1:3000")
    )
    assert request_refusal(factory.post("/stream", HTTP_HOST="other.test", HTTP_ORIGIN="http://other.test"))


LOOPBACK = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1"))
PROXIES = (*LOOPBACK, ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "address"),
    [
        ("203.0.113.5", None, LOOPBACK, "203.0.113.5"),
        # An untrusted peer's header is ignored: it could say anything.
        ("203.0.113.5", "1.2.3.4", LOOPBACK, "203.0.113.5"),
        # nginx on loopback appends the address it saw.
        ("127.0.0.1", "198.51.100.7", LOOPBACK, "198.51.100.7"),
        # What the client wrote itself stays left of what the proxy appended.
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", LOOPBACK, "198.51.100.7"),
        # Two trusted hops.
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", PROXIES, "198.51.100.7"),
        # Garbage stops at the proxy that passed it on.
        ("127.0.0.1", "not-an-ip", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "198.51.100.7, garbage", LOOPBACK, "127.0.0.1"),
        ("127.0.0.1", "[2001:db8::1]:4711", LOOPBACK, "2001:db8::1"),
        ("127.0.0.1", "198.51.100.7:4711", LOOPBACK, "198.51.100.7"),
        ("::ffff:127.0.0.1", "198.51.100.7", LOOPBACK, "198.51.100.7"),
        ("::1", "2001:db8::2", LOOPBACK, "2001:db8::2"),
        (None, "1.2.3.4", LOOPBACK, UNKNOWN),
        ("127.0.0.1", None, LOOPBACK, "127.0.0.1"),
    ],
)
def test_client_address(peer, forwarded, proxies, address):
    assert client_address(peer, forwarded, proxies) == address


def test_scope_address_uses_the_setting(settings):
    scope = {"client": ("127.0.0.1", 5000), "headers": [(b"x-forwarded-for", b"198.51.100.7")]}
    assert scope_address(scope) == "198.51.100.7"
    settings.STREAMS = {**settings.STREAMS, "TRUSTED_PROXIES": []}
    assert scope_address(scope) == "127.0.0.1"
