"""Fallback routes with two real local servers: tried on a failure before the first token, never after."""

import contextlib

import pytest

from streams import providers as registry
from streams.providers import openai_provider
from streams.providers.base import LLMRequest
from streams.providers.fallback import stream_with_fallbacks
from tests.support.openai_server import OpenAIServer, Script
from tests.support.providers import cancel_mid_stream, closed_port, consume, fast_config

KEY_ENV = "TEST_PROVIDER_FALLBACK_KEY"
REQUEST = LLMRequest(model="primary-model", prompt="Say hello")


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """The key every provider here reads."""
    monkeypatch.setenv(KEY_ENV, "sk-test-fallback-0123456789")


@contextlib.asynccontextmanager
async def two_routes(first: Script | None, second: Script):
    """Providers "first" (None: nothing listens) and "second" on their own servers."""
    servers = {"second": OpenAIServer(second).start()}
    urls = {"first": f"http://127.0.0.1:{closed_port()}/v1", "second": servers["second"].base_url}
    if first is not None:
        servers["first"] = OpenAIServer(first).start()
        urls["first"] = servers["first"].base_url
    built = {name: openai_provider.build(name, fast_config(url, KEY_ENV)) for name, url in urls.items()}
    try:
        yield built, servers
    finally:
        for provider in built.values():
            await provider.aclose()
        for srv in servers.values():
            srv.stop()


def routed(built):
    """A FallbackStream over first/primary-model then second/backup-model."""
    return stream_with_fallbacks(("first", "primary-model"), [("second", "backup-model")], REQUEST, built.get)


class _Routed:
    """Adapter so the shared consume() helper can drive a FallbackStream."""

    def __init__(self, built):
        self.built = built
        self.last = None

    def stream(self, request):
        self.last = routed(self.built)
        return self.last


@pytest.mark.parametrize(
    "first",
    [None, Script(status=500), Script(status=401), Script(chunks=[], finish_reason=None)],
    ids=["refused", "http-500", "http-401", "incomplete-before-text"],
)
async def test_a_failure_before_the_first_token_moves_on_to_the_next_route(first):
    """The second route answers, with its own model; the stats say who served and that one fallback ran."""
    async with two_routes(first, Script(text="from the backup")) as (built, servers):
        via = _Routed(built)
        out = await consume(via, REQUEST)
    assert out.error is None and out.text == "from the backup"
    assert via.last.stats() == {"provider": "second", "model": "backup-model", "fallbacks_tried": 1}
    assert [a.provider for a in via.last.failed] == ["first"]
    assert servers["second"].requests[0].body["model"] == "backup-model"
    if first is not None:
        assert servers["first"].requests[0].body["model"] == "primary-model"


async def test_when_the_primary_answers_the_fallback_is_never_asked():
    """A working primary: its text, no request to the second server, fallbacks_tried 0."""
    async with two_routes(Script(text="primary answer"), Script(text="unused")) as (built, servers):
        via = _Routed(built)
        out = await consume(via, REQUEST)
    assert out.error is None and out.text == "primary answer"
    assert via.last.stats() == {"provider": "first", "model": "primary-model", "fallbacks_tried": 0}
    assert servers["second"].requests == []


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (Script(text="a b c", error_after=1), "upstream_error"),
        (Script(text="a b c", disconnect_after=1), "connection"),
        (Script(text="a ", finish_reason=None), "incomplete"),
    ],
    ids=["error-event", "disconnect", "incomplete"],
)
async def test_a_failure_after_a_token_was_delivered_never_falls_back(first, code):
    """Text reached the caller: the failure is the task's, the second server gets nothing."""
    async with two_routes(first, Script(text="must not be used")) as (built, servers):
        via = _Routed(built)
        out = await consume(via, REQUEST)
    assert out.text == "a "
    assert out.error.code == code
    assert servers["second"].requests == []
    assert via.last.stats()["provider"] == "first" and via.last.failed == []


async def test_when_every_route_fails_the_last_error_names_all_of_them():
    """Both routes fail early: the second's code, a message listing both, two failed attempts."""
    async with two_routes(None, Script(status=429)) as (built, _servers):
        via = _Routed(built)
        out = await consume(via, REQUEST)
    assert out.texts == []
    assert out.error.code == "rate_limited"
    assert "first/primary-model (connection)" in out.error.message
    assert "second/backup-model (rate_limited)" in out.error.message
    assert [a.code for a in via.last.failed] == ["connection", "rate_limited"]


async def test_the_default_registry_resolves_the_routes_and_an_unknown_name_falls_back(settings):
    """Without a providers callable the settings registry is used; an unknown primary is an early failure."""
    with OpenAIServer(Script(text="registered")) as srv:
        settings.STREAMS_PROVIDERS = {"local": {"kind": "openai", **fast_config(srv.base_url, KEY_ENV)}}
        registry.reset()
        try:
            stream = stream_with_fallbacks(("nowhere", "m"), [("local", "m2")], REQUEST)
            texts = []
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, str):
                        texts.append(item)
        finally:
            await registry.aclose_all()
    assert "".join(texts) == "registered"
    assert stream.stats() == {"provider": "local", "model": "m2", "fallbacks_tried": 1}
    assert stream.failed[0].code == "bad_request"


async def test_cancelling_a_fallback_stream_closes_the_serving_upstream():
    """Cancelled mid-stream on the second route: that server sees the close promptly."""
    async with two_routes(Script(status=503), Script(tokens=500, tokens_per_s=40)) as (built, servers):
        record, cancelled_at = await cancel_mid_stream(servers["second"], _Routed(built), REQUEST)
    assert record.client_closed and record.closed_at - cancelled_at < 0.2
