"""The OpenAI provider through the real SDK against the local OpenAI-compatible server, over real HTTP."""

import asyncio
import contextlib
import logging
import time
import traceback

import aiohttp
import httpx2
import pytest

from streams.providers.base import LLMRequest, Usage
from streams.providers.errors import redact, transport_code
from streams.providers.openai_provider import build
from streams.providers.sse import SSEParser
from tests.support.openai_server import OpenAIServer, RequestRecord, Script
from tests.support.providers import (
    Outcome,
    cancel_mid_stream,
    closed_port,
    consume,
    loop_turns,
    provider_factory,
)

KEY_ENV = "TEST_PROVIDER_OPENAI_KEY"
KEY = "sk-test-SECRETkey0123456789abcdef"
REQUEST = LLMRequest(model="gpt-test", prompt="Say hello", system="You are terse.")

# Unicode on purpose: accents, CJK, emoji with a skin-tone modifier and a ZWJ family
# (graphemes split across events), CR/LF and blank lines (SSE framing characters).
UNICODE_CHUNKS = ["Hé", "llo ", "👍", "🏽 wörld\n", "\n", "日本語", " 👨‍👩", "‍👧", "\r\nend ", "∑"]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """The key lives in an environment variable named by the config, as in settings."""
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
async def make():
    """Build providers pointed at a URL with fast test settings; close them afterwards."""
    async with provider_factory(build, "testai", KEY_ENV) as factory:
        yield factory


async def run(provider, request: LLMRequest = REQUEST) -> Outcome:
    """Consume a stream as the orchestrator does."""
    return await consume(provider, request)


@pytest.mark.parametrize(
    ("transport", "ensure_ascii"), [("aiohttp", False), ("httpx", False), ("aiohttp", True)]
)
async def test_when_text_has_unicode_split_everywhere_then_it_arrives_byte_exact(
    make, transport, ensure_ascii
):
    """Every event cut into 5-byte writes: SSE lines and UTF-8 sequences arrive in pieces."""
    script = Script(
        chunks=UNICODE_CHUNKS, fragment_bytes=5, fragment_delay_s=0.001, ensure_ascii=ensure_ascii
    )
    with OpenAIServer(script) as srv:
        out = await run(make(srv.base_url, http_client=transport))
    assert out.error is None
    assert out.text == "".join(UNICODE_CHUNKS) == srv.requests[0].text_sent
    assert out.usage == Usage(prompt_tokens=5, completion_tokens=len(UNICODE_CHUNKS), finish_reason="stop")


async def test_when_streaming_then_request_has_system_message_stream_options_and_key(make):
    """The request the SDK sends: system then user message, stream with usage, bearer key."""
    request = LLMRequest(model="m1", prompt="Hi there", system="Be brief.", max_tokens=7, temperature=0.3)
    with OpenAIServer(Script(text="ok")) as srv:
        out = await run(make(srv.base_url), request)
    assert out.error is None and out.texts == ["ok"]
    record = srv.requests[0]
    assert record.path == "/v1/chat/completions"
    assert record.authorization == KEY
    assert record.body["model"] == "m1"
    assert record.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
    ]
    assert record.body["stream"] is True
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.body["max_tokens"] == 7
    assert record.body["temperature"] == 0.3


async def test_when_extra_body_is_configured_then_its_fields_join_the_request_body(make):
    """Provider-specific fields (e.g. vLLM's top_k) go into the JSON body next to ours."""
    with OpenAIServer(Script(text="ok")) as srv:
        out = await run(make(srv.base_url, extra_body={"top_k": 5, "repetition_penalty": 1.1}))
    assert out.error is None
    body = srv.requests[0].body
    assert body["top_k"] == 5 and body["repetition_penalty"] == 1.1
    assert body["model"] == REQUEST.model and body["stream"] is True


async def test_when_no_system_prompt_then_only_the_user_message_is_sent(make):
    """An empty system prompt sends no system message."""
    with OpenAIServer(Script(text="ok")) as srv:
        await run(make(srv.base_url), LLMRequest(model="m", prompt="p"))
    assert srv.requests[0].body["messages"] == [{"role": "user", "content": "p"}]


async def test_when_paced_then_pieces_arrive_as_they_come_and_usage_last(make):
    """A paced stream is yielded as it arrives (events that share a network read are joined)."""
    with OpenAIServer(Script(text="one two three four", tokens_per_s=50)) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None
    assert out.text == "one two three four"
    assert len(out.texts) >= 2  # not buffered until the end
    assert out.usage == Usage(prompt_tokens=5, completion_tokens=4, finish_reason="stop")


async def test_when_server_reports_no_usage_then_the_usage_has_no_token_counts(make):
    """Usage is optional: servers that ignore include_usage end the stream without it (the finish
    reason still comes last, in a Usage without counts)."""
    with OpenAIServer(Script(text="a b", usage=False)) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None and out.text == "a b" and out.usage == Usage(finish_reason="stop")


async def test_when_many_buffered_tokens_then_text_is_exact_and_the_loop_is_not_starved(make):
    """Thousands of tokens written at once: exact text, and other tasks still get turns."""
    with OpenAIServer(Script(tokens=5000)) as srv:
        async with loop_turns() as turns:
            out = await run(make(srv.base_url))
    assert out.error is None
    assert out.text == srv.requests[0].text_sent
    assert out.usage.completion_tokens == 5000
    assert turns[0] > 5


async def test_when_stream_lacks_done_but_has_finish_reason_then_it_completes(make):
    """Some compatible servers omit [DONE]; a finish_reason is enough."""
    with OpenAIServer(Script(text="x y", done=False)) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None and out.text == "x y" and out.usage is not None


async def test_when_two_streams_follow_each_other_then_the_connection_is_reused(make):
    """After [DONE] the rest of the body is read, so HTTP keep-alive works."""
    with OpenAIServer(Script(text="a b c")) as srv:
        provider = make(srv.base_url)
        await run(provider)
        await run(provider)
    assert [r.connection for r in srv.requests] == [1, 1]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "auth"),
        (403, "auth"),
        (429, "rate_limited"),
        (500, "upstream_error"),
        (503, "upstream_error"),
        (400, "upstream_error"),
        (404, "upstream_error"),
    ],
)
async def test_when_http_error_then_it_maps_to_a_stable_code(make, status, code):
    """HTTP errors (after the SDK's retries, none here) map to codes; messages name status and host."""
    with OpenAIServer(Script(status=status)) as srv:
        out = await run(make(srv.base_url))
    assert out.texts == [] and out.usage is None
    assert out.error.code == code
    assert f"HTTP {status}" in out.error.message
    assert "testai" in out.error.message and f"127.0.0.1:{srv.port}" in out.error.message
    if code == "auth":
        assert KEY_ENV in out.error.message  # tells the operator which variable to fix
    assert len(srv.requests) == 1


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_port_is_closed_then_connection_error(make, transport):
    """Refused connections are `connection`, not `timeout` (the SDK's aiohttp adapter says timeout)."""
    port = closed_port()
    out = await run(make(f"http://127.0.0.1:{port}/v1", http_client=transport))
    assert out.error.code == "connection"
    assert f"127.0.0.1:{port}" in out.error.message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_server_stalls_before_headers_then_timeout(make, transport):
    """No response within the read timeout -> timeout, quickly."""
    with OpenAIServer(Script(ttfb_s=2.0)) as srv:
        started = time.monotonic()
        out = await run(make(srv.base_url, timeout_s=0.2, http_client=transport))
    assert out.error.code == "timeout"
    assert time.monotonic() - started < 1.5
    assert "read timeout 0.2 s" in out.error.message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_server_stalls_mid_stream_then_timeout_after_the_text(make, transport):
    """Silence longer than the read timeout mid-stream -> timeout, text so far delivered."""
    with OpenAIServer(Script(text="a b c d", stall_after=2)) as srv:
        out = await run(make(srv.base_url, timeout_s=0.2, http_client=transport))
    assert out.text == "a b "
    assert out.error.code == "timeout"


async def test_when_a_chunk_is_malformed_then_bad_response_after_the_text(make):
    """Invalid JSON in an event -> bad_response; earlier text was already yielded."""
    with OpenAIServer(Script(text="a b c d", malformed_after=2)) as srv:
        out = await run(make(srv.base_url))
    assert out.text == "a b "
    assert out.error.code == "bad_response"


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("server_error", "upstream_error"),
        ("rate_limit_exceeded", "rate_limited"),
        ("invalid_api_key", "auth"),
        ("something_new", "upstream_error"),
    ],
)
async def test_when_the_stream_carries_an_error_object_then_it_maps_to_its_code(make, error_type, code):
    """{"error": {...}} after HTTP 200 -> the code for its type, with the upstream's message."""
    script = Script(text="a b c", error_after=1, error_type=error_type, error_message="it broke")
    with OpenAIServer(script) as srv:
        out = await run(make(srv.base_url))
    assert out.texts == ["a "]
    assert out.error.code == code
    assert "it broke" in out.error.message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("abort", [False, True])
async def test_when_connection_dies_mid_stream_then_connection_error_and_no_retry(make, transport, abort):
    """Closed (FIN or RST) after 3 tokens: those 3 are delivered, then `connection`; one request only."""
    with OpenAIServer(Script(text="a b c d e", disconnect_after=3, abort=abort)) as srv:
        out = await run(make(srv.base_url, max_retries=3, http_client=transport))
    assert out.text == "a b c "
    assert out.error.code == "connection"
    assert len(srv.requests) == 1


@pytest.mark.parametrize("status", [500, 429, 503])
async def test_when_first_requests_fail_then_the_sdk_retries_and_text_arrives_once(make, status):
    """HTTP errors before any token are retried (by the SDK) up to max_retries."""
    failing = Script(status=status, retry_after_ms=1)
    with OpenAIServer([failing, failing, Script(text="hello world")]) as srv:
        out = await run(make(srv.base_url, max_retries=2))
    assert out.error is None
    assert out.text == "hello world"
    assert len(srv.requests) == 3
    assert [r.headers["x-stainless-retry-count"] for r in srv.requests] == ["0", "1", "2"]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_retry_after_is_longer_than_allowed_then_it_fails_at_once(make, transport):
    """A 429 asking for 60 s: no SDK sleep, `rate_limited` right away, one request."""
    with OpenAIServer(Script(status=429, retry_after_ms=60_000)) as srv:
        started = time.monotonic()
        out = await run(make(srv.base_url, max_retries=2, max_retry_wait_s=1.0, http_client=transport))
    assert out.error.code == "rate_limited"
    assert len(srv.requests) == 1
    assert time.monotonic() - started < 1.0


async def test_when_retries_are_exhausted_then_the_last_error_is_raised(make):
    """max_retries=1: two requests, then the error."""
    with OpenAIServer(Script(status=500, retry_after_ms=1)) as srv:
        out = await run(make(srv.base_url, max_retries=1))
    assert out.error.code == "upstream_error"
    assert len(srv.requests) == 2


@pytest.mark.parametrize(
    "failure",
    [
        Script(text="x", disconnect_after=0),
        Script(text="x", error_after=0, error_type="server_error"),
        Script(text="x", stall_after=0),
    ],
    ids=["disconnect", "error-object", "stall"],
)
async def test_when_a_200_stream_fails_before_the_first_token_then_it_is_retried(make, failure):
    """After HTTP 200 but before any text: our own retry, text delivered once."""
    with OpenAIServer([failure, Script(text="fine now")]) as srv:
        out = await run(make(srv.base_url, max_retries=1, timeout_s=0.3))
    assert out.error is None
    assert out.text == "fine now"
    assert len(srv.requests) == 2


async def test_when_sdk_retries_and_stream_failures_mix_then_they_share_one_budget(make):
    """One HTTP 500 (SDK retry) and one early disconnect (ours) use up max_retries=2 together."""
    scripts = [Script(status=500, retry_after_ms=1), Script(disconnect_after=0), Script(text="never")]
    with OpenAIServer(scripts) as srv:
        out = await run(make(srv.base_url, max_retries=1))
    assert out.texts == [] and out.error.code == "connection"
    assert len(srv.requests) == 2


async def test_when_a_stream_fails_after_the_first_token_then_it_is_never_retried(make):
    """Mid-stream failure with retries left: exactly one request, error after the text."""
    with OpenAIServer([Script(text="a b c", error_after=1), Script(text="retried!")]) as srv:
        out = await run(make(srv.base_url, max_retries=5))
    assert out.texts == ["a "]
    assert out.error.code == "upstream_error"
    assert len(srv.requests) == 1


async def test_when_the_key_variable_is_unset_then_auth_error_at_stream_start(make, monkeypatch):
    """Building needs no key; the stream fails with `auth` naming the variable, sending nothing."""
    monkeypatch.delenv(KEY_ENV)
    with OpenAIServer(Script(text="x")) as srv:
        provider = make(srv.base_url)  # no error here
        out = await run(provider)
    assert out.error.code == "auth"
    assert KEY_ENV in out.error.message
    assert srv.requests == []


async def test_when_no_key_env_is_configured_then_openai_api_key_is_used(make, monkeypatch):
    """Without api_key_env the SDK's own OPENAI_API_KEY applies; unset, the error names it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env-123456")
    with OpenAIServer(Script(text="x")) as srv:
        out = await run(make(srv.base_url, api_key_env=None))
    assert out.error is None and srv.requests[0].authorization == "sk-from-openai-env-123456"
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_ADMIN_KEY", raising=False)
    out = await run(make(srv.base_url, api_key_env=None))
    assert out.error.code == "auth" and "OPENAI_API_KEY" in out.error.message


async def test_when_the_key_is_optional_then_a_local_server_gets_a_placeholder(make, monkeypatch):
    """api_key_optional serves keyless local servers (Ollama, vLLM) without inventing errors."""
    monkeypatch.delenv(KEY_ENV)
    with OpenAIServer(Script(text="local")) as srv:
        out = await run(make(srv.base_url, api_key_optional=True))
    assert out.error is None and out.texts == ["local"]


async def test_a_keyless_provider_never_sends_the_sdks_own_key(make, monkeypatch):
    """OPENAI_API_KEY belongs to OpenAI: a keyless server (no api_key_env) must not receive it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env-123456")
    with OpenAIServer(Script(text="local")) as srv:
        out = await run(make(srv.base_url, api_key_env=None, api_key_optional=True))
    assert out.error is None and out.texts == ["local"]
    assert srv.requests[0].authorization == "unused"


async def test_when_base_url_is_not_configured_then_openai_base_url_applies(make, monkeypatch):
    """The SDK's OPENAI_BASE_URL is honoured for a provider without base_url."""
    with OpenAIServer(Script(text="via env")) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        out = await run(make(None))
    assert out.error is None and out.texts == ["via env"]


async def test_when_errors_happen_then_the_key_never_appears_in_messages_or_logs(make, caplog):
    """Upstream messages that echo the key, retries, refused connections: no key anywhere."""
    for name in ("", "openai", "httpx2", "httpcore2", "streams"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    scripts = [
        Script(status=401, error_message=f"Incorrect API key provided: {KEY}"),
        Script(status=500, retry_after_ms=1, error_message=f"boom {KEY}"),
        Script(text="a b", error_after=0, error_message=f"key {KEY} revoked"),
        Script(text="a b", error_after=1, error_message=f"Bearer {KEY}"),
    ]
    errors = []
    with OpenAIServer(scripts) as srv:
        provider = make(srv.base_url, max_retries=1)
        for script in scripts:
            srv.script = script
            errors.append((await run(provider)).error)
    errors.append((await run(make(f"http://127.0.0.1:{closed_port()}/v1"))).error)
    assert all(error is not None for error in errors)
    for error in errors:
        for text in (str(error), error.message, repr(error), "".join(traceback.format_exception(error))):
            assert KEY not in text
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert "[redacted]" in errors[0].message


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_the_consumer_is_cancelled_then_the_upstream_sees_the_close_within_200ms(make, transport):
    """Cancel the consuming task mid-stream: the server records the TCP close promptly."""
    with OpenAIServer(Script(tokens=500, tokens_per_s=40)) as srv:
        provider = make(srv.base_url, http_client=transport)
        record, cancelled_at = await cancel_mid_stream(srv, provider, REQUEST)
    assert record.client_closed
    assert record.closed_at - cancelled_at < 0.2
    assert record.tokens_sent < 500


async def test_when_the_consumer_stops_early_then_the_upstream_sees_the_close(make):
    """Leaving aclosing() after two pieces closes the HTTP response too."""
    with OpenAIServer(Script(tokens=500, tokens_per_s=40)) as srv:
        provider = make(srv.base_url)
        async with contextlib.aclosing(provider.stream(REQUEST)) as stream:
            async for _ in stream:
                if srv.requests[0].tokens_sent >= 2:
                    break
        stopped_at = time.monotonic()
        record = srv.requests[0]
        await srv.wait_for(lambda: record.closed_at is not None, timeout=1.0)
    assert record.client_closed and record.closed_at - stopped_at < 0.2


class _IgnoresStream(OpenAIServer):
    """A server that answers stream=True with one JSON completion."""

    def wants_stream(self, record: RequestRecord) -> bool:
        """Never stream."""
        return False


async def test_when_the_server_ignores_stream_then_the_json_answer_is_used(make):
    """A 200 application/json answer still yields its text and out.usage."""
    with _IgnoresStream(Script(text="whole answer")) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None and out.texts == ["whole answer"] and out.usage.completion_tokens == 2


async def test_timeouts_and_retries_default_to_settings_and_config_wins(settings):
    """LLM_* settings are the defaults; the config dict overrides them."""
    settings.LLM_READ_TIMEOUT_S = 7.0
    settings.LLM_CONNECT_TIMEOUT_S = 3.0
    settings.LLM_MAX_RETRIES = 4
    provider = build("p", {"kind": "openai"})
    assert (provider.read_timeout_s, provider.connect_timeout_s, provider.max_retries) == (7.0, 3.0, 4)
    provider = build("p", {"timeout_s": 1.5, "connect_timeout_s": 0.5, "max_retries": 0})
    assert (provider.read_timeout_s, provider.connect_timeout_s, provider.max_retries) == (1.5, 0.5, 0)
    assert KEY not in repr(provider)


def test_when_used_from_a_new_event_loop_then_a_new_client_is_made(monkeypatch):
    """aiohttp sessions belong to one loop: a provider reused on another loop must not break."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with OpenAIServer(Script(text="again")) as srv:
        provider = build("loops", {"base_url": srv.base_url, "api_key_env": KEY_ENV, "max_retries": 0})

        async def once():
            out = await run(provider)
            await provider.aclose()
            return out.text, out.error

        assert asyncio.run(once()) == ("again", None)
        assert asyncio.run(once()) == ("again", None)


def test_sse_parser_handles_any_split_crlf_comments_and_multiline_data():
    """The framing is right whatever the read boundaries are."""
    body = (
        b": keep-alive\r\n\r\n"
        b'data: {"a": "\xc3\xa9\xf0\x9f\x91\x8d"}\r\n\r\n'
        b"event: error\ndata: line1\ndata:line2\n\n"
        b"id: 7\nretry: 10\ndata: [DONE]\n\n"
    )
    expected = [(None, '{"a": "é👍"}'.encode()), ("error", b"line1\nline2"), (None, b"[DONE]")]
    for step in (1, 2, 3, 7, len(body)):
        parser = SSEParser()
        events = []
        for offset in range(0, len(body), step):
            events += parser.feed(body[offset : offset + step])
        events += parser.flush()
        assert events == expected, step


def test_sse_parser_flushes_an_event_without_its_blank_line():
    """A body that ends right after a data line still yields that event."""
    parser = SSEParser()
    assert parser.feed(b"data: 1\n\ndata: 2") == [(None, b"1")]
    assert parser.flush() == [(None, b"2")]


def test_transport_code_looks_through_the_sdk_aiohttp_adapter_mislabel():
    """openai/_vendor/httpx_aiohttp maps ClientConnectionError to ConnectTimeout; we look at the root."""
    refused = aiohttp.ClientConnectorError.__new__(aiohttp.ClientConnectorError)
    refused.__cause__ = ConnectionRefusedError(111, "refused")
    wrapper = httpx2.ConnectTimeout("Cannot connect")
    wrapper.__cause__ = refused
    assert transport_code(wrapper) == "connection"
    read = httpx2.ReadTimeout("slow")
    read.__cause__ = aiohttp.SocketTimeoutError("Timeout on reading data from socket")
    assert transport_code(read) == "timeout"
    assert transport_code(httpx2.ReadTimeout("no cause")) == "timeout"
    assert transport_code(httpx2.RemoteProtocolError("peer closed")) == "connection"


def test_redact_removes_the_key_and_key_shaped_strings():
    """Known secrets and anything shaped like a key or bearer token are scrubbed."""
    text = redact(f"bad key {KEY}; other sk-proj-abcdef123456 and Bearer abc.def", (KEY,))
    assert KEY not in text and "sk-proj-abcdef123456" not in text and "abc.def" not in text


async def test_when_configured_in_settings_then_the_registry_builds_and_closes_it(settings):
    """STREAMS_PROVIDERS entry of kind "openai" -> get_provider() streams; aclose_all() closes it."""
    from streams import providers

    with OpenAIServer(Script(text="from settings")) as srv:
        settings.STREAMS_PROVIDERS = {
            "local": {"kind": "openai", "base_url": srv.base_url, "api_key_env": KEY_ENV, "max_retries": 0}
        }
        providers.reset()
        try:
            out = await run(providers.get_provider("local"))
        finally:
            await providers.aclose_all()
    assert out.error is None and out.text == "from settings"
