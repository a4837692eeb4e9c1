"""Production settings: the public secret key refused, TLS settings from the environment, a clean
`check --deploy` with the deployment guide's settings, no password or key on an error page or log line."""

import logging
import secrets
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import RequestFactory
from django.views.debug import technical_500_response

from orchestrator_site.security import require_secret_key
from streams.logs import PlainFormatter
from streams.redact import redact
from tests.support.live import ROOT, free_port, server_command
from tests.test_settings_layers import load_settings

# The environment docs/deployment.md sets (its "Steps" and "Settings that matter").
GUIDE_ENV = {
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "1",
    "DJANGO_SECURE_SSL_REDIRECT": "1",
    "DJANGO_SECURE_COOKIES": "1",
    "DJANGO_HSTS_SECONDS": "31536000",
    "DJANGO_HSTS_INCLUDE_SUBDOMAINS": "1",
    "DJANGO_HSTS_PRELOAD": "1",
    "STREAMS_ALLOW_ANONYMOUS": "0",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without any DJANGO_/STREAMS_ setting, plus `extra`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "STREAMS_", "REDIS_"))}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("key", "debug", "local", "refused"),
    [
        (None, False, False, True),
        (None, True, False, False),
        (None, False, True, False),
        ("k" * 50, False, False, False),
    ],
)
def test_the_public_default_key_is_refused_unless_debug_or_local(settings, key, debug, local, refused):
    settings.SECRET_KEY = key or settings.DEFAULT_SECRET_KEY
    settings.DEBUG, settings.INSECURE_LOCAL = debug, local
    if refused:
        with pytest.raises(ImproperlyConfigured, match="DJANGO_SECRET_KEY"):
            require_secret_key()
    else:
        require_secret_key()


def test_a_server_without_a_secret_key_refuses_to_start():
    port = free_port()
    done = subprocess.run(
        server_command("daphne", port),
        cwd=ROOT,
        env=clean_env(DJANGO_SETTINGS_MODULE="orchestrator_site.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "DJANGO_SECRET_KEY" in done.stderr


def test_tls_settings_come_from_the_environment(monkeypatch):
    s = load_settings(monkeypatch, **GUIDE_ENV)
    assert s.SESSION_COOKIE_SECURE and s.CSRF_COOKIE_SECURE and s.SECURE_SSL_REDIRECT
    assert (s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_HSTS_PRELOAD) == (
        31536000,
        True,
        True,
    )
    assert s.SECURE_PROXY_SSL_HEADER == ("HTTP_X_FORWARDED_PROTO", "https")
    local = load_settings(monkeypatch)
    assert not (local.SESSION_COOKIE_SECURE or local.SECURE_SSL_REDIRECT or local.SECURE_HSTS_SECONDS)
    assert local.SECURE_PROXY_SSL_HEADER is None


def test_the_limits_have_their_documented_defaults(monkeypatch):
    cfg = load_settings(monkeypatch).STREAMS
    assert (cfg["MAX_RUNS_PER_OWNER"], cfg["MAX_RUNS_PER_MINUTE"], cfg["MAX_CONNECTIONS_PER_OWNER"]) == (
        16,
        60,
        32,
    )
    assert (cfg["MAX_RESUMES_PER_RUN"], cfg["MAX_PING_BYTES"], cfg["API_KEY_CACHE_S"]) == (10, 1024, 10.0)
    assert cfg["TRUSTED_PROXIES"] == ["127.0.0.0/8", "::1"] and cfg["ALLOWED_ORIGINS"] == []


def test_check_deploy_is_clean_with_the_guides_settings_and_not_without():
    def check(env):
        return subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            cwd=ROOT,
            env=clean_env(DJANGO_SETTINGS_MODULE="orchestrator_site.settings", **env),
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = check(GUIDE_ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    bare = check({})
    assert bare.returncode != 0
    for code in ("security.W009", "security.W012", "streams.W001"):
        assert code in bare.stdout + bare.stderr


SECRET = "s3cr3t-Pa55"
URL = f"redis://:{SECRET}@redis.internal:6379/0"


def test_the_debug_error_page_shows_no_redis_password(settings):
    settings.DEBUG = True
    settings.REDIS_URL = URL
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "x", "CONFIG": {"hosts": [{"address": URL}]}}}

    def request(accept: str):
        key = "strm_0123456789ab_" + "k" * 43
        return RequestFactory().get("/boom", HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_ACCEPT=accept)

    def connect(url):
        # A frame whose local variable and exception message both hold the URL.
        raise ConnectionError(f"cannot reach {url}")

    try:
        connect(URL)
    except ConnectionError:
        exc_info = sys.exc_info()
    html = technical_500_response(request("text/html"), *exc_info).content.decode()
    plain = technical_500_response(request("text/plain"), *exc_info).content.decode()
    assert "<html" in html and "<html" not in plain
    for page in (html, plain):
        assert "redis.internal" in page  # the page is there, the password is not
        assert SECRET not in page
        assert "k" * 43 not in page


def test_log_lines_mask_url_passwords_and_keys_tracebacks_included():
    record = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "connecting to %s with %s", (URL, "Bearer abc.def"), None
    )
    try:
        raise RuntimeError(f"failed: {URL} strm_0123456789ab_{'z' * 43}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    line = PlainFormatter("%(message)s").format(record)
    assert "redis.internal" in line and SECRET not in line and "abc.def" not in line and "z" * 43 not in line
    assert "strm_0123456789ab_" in line  # the prefix names the key


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://app:pw@db/x", "postgres://app:********@db/x"),
        ("redis://:pw@h:6379/0", "redis://:********@h:6379/0"),
        ("rediss://user:p%40ss@h", "rediss://user:********@h"),
        ("http://example.com:8080/x", "http://example.com:8080/x"),
        ("Authorization: Bearer tok", "Authorization: Bearer ********"),
        ("no secrets here", "no secrets here"),
    ],
)
def test_redact(text, masked):
    assert redact(text) == masked
