"""The Content-Security-Policy header (django-csp with this host's sockets): on every page, and
on the refusal of a Host that is not allowed, without a second error."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    """The policy's directives, by name."""
    policy = response["Content-Security-Policy"]
    parts = [part.split() for part in policy.split(";") if part.strip()]
    return {name: values for name, *values in parts}


def test_the_policy_allows_own_scripts_and_this_hosts_sockets_only(client):
    """script-src 'self' without unsafe-*, no plugins, no <base>, no framing; ws(s) of this host."""
    policy = directives(client.get("/accounts/login/", HTTP_HOST="127.0.0.1:8000"))
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["connect-src"] == ["'self'", "ws://127.0.0.1:8000", "wss://127.0.0.1:8000"]
    assert not any("unsafe" in value for values in policy.values() for value in values)


def test_a_foreign_host_gets_its_400_with_the_policy_and_no_socket_of_that_host():
    """DisallowedHost answers 400; the policy is still sent, naming no socket of the foreign host."""
    response = Client(raise_request_exception=False).get("/accounts/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert directives(response)["connect-src"] == ["'self'"]
