"""The Anthropic provider through the real SDK against the local Messages server, over real HTTP."""

import logging
import sys
import time
import traceback

import pytest

from streams.providers.anthropic_provider import AnthropicDecoder, build
from streams.providers.base import LLMRequest, Usage
from tests.support.anthropic_server import AnthropicServer, Script
from tests.support.providers import Outcome, cancel_mid_stream, closed_port, consume, provider_factory

KEY_ENV = "TEST_PROVIDER_ANTHROPIC_KEY"
KEY = "sk-ant-test-SECRETkey0123456789"
REQUEST = LLMRequest(model="claude-test", prompt="Say hello", system="You are terse.")
UNICODE_CHUNKS = ["Grüß", " dich ", "👋🏾", "\n\n", "中文", " 👩‍", "💻 ", "done\r\n"]


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """The key lives in an environment variable named by the config."""
    monkeypatch.setenv(KEY_ENV, KEY)


@pytest.fixture
async def make():
    """Build providers pointed at a URL with fast test settings; close them afterwards."""
    async with provider_factory(build, "testclaude", KEY_ENV) as factory:
        yield factory


async def run(provider, request: LLMRequest = REQUEST) -> Outcome:
    """Consume a stream as the orchestrator does."""
    return await consume(provider, request)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_text_has_unicode_split_everywhere_then_it_arrives_byte_exact(make, transport):
    """Events cut into 5-byte writes; ping and block events in between; usage from start and delta."""
    script = Script(chunks=UNICODE_CHUNKS, fragment_bytes=5, fragment_delay_s=0.001)
    with AnthropicServer(script) as srv:
        out = await run(make(srv.base_url, http_client=transport))
    assert out.error is None
    assert out.text == "".join(UNICODE_CHUNKS) == srv.requests[0].text_sent
    # input: words of system + prompt (server's count); output: the cumulative count in message_delta
    assert out.usage == Usage(prompt_tokens=5, completion_tokens=len(UNICODE_CHUNKS), finish_reason="stop")


async def test_when_a_system_prompt_is_given_then_it_is_the_top_level_system_parameter(make):
    """System goes in `system`, never as a message; max_tokens defaults to 1024; the key is sent."""
    with AnthropicServer(Script(text="ok")) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None and out.texts == ["ok"]
    record = srv.requests[0]
    assert record.path == "/v1/messages"
    assert record.body["system"] == "You are terse."
    assert record.body["messages"] == [{"role": "user", "content": "Say hello"}]
    assert all(m["role"] != "system" for m in record.body["messages"])
    assert record.body["max_tokens"] == 1024
    assert record.body["stream"] is True
    assert record.body["model"] == "claude-test"
    assert "temperature" not in record.body
    assert record.authorization == KEY
    assert record.headers.get("anthropic-version")


async def test_when_extra_body_is_configured_then_its_fields_join_the_request_body(make):
    """Provider-specific fields go into the JSON body next to ours."""
    with AnthropicServer(Script(text="ok")) as srv:
        out = await run(make(srv.base_url, extra_body={"top_k": 3}))
    assert out.error is None
    assert srv.requests[0].body["top_k"] == 3 and srv.requests[0].body["stream"] is True


async def test_when_options_are_given_then_max_tokens_and_temperature_are_sent(make):
    """An explicit max_tokens wins; temperature rides in the body; no system prompt, no `system`."""
    request = LLMRequest(model="m", prompt="p", max_tokens=50, temperature=0.2)
    with AnthropicServer(Script(text="ok")) as srv:
        await run(make(srv.base_url), request)
        await run(make(srv.base_url, default_max_tokens=77), LLMRequest(model="m", prompt="p"))
    first, second = (r.body for r in srv.requests)
    assert first["max_tokens"] == 50 and first["temperature"] == 0.2 and "system" not in first
    assert second["max_tokens"] == 77


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("overloaded_error", "upstream_error"),
        ("api_error", "upstream_error"),
        ("rate_limit_error", "rate_limited"),
        ("authentication_error", "auth"),
        ("permission_error", "auth"),
        ("invalid_request_error", "upstream_error"),
    ],
)
async def test_when_an_error_event_arrives_after_200_then_it_maps_and_follows_the_text(
    make, error_type, code
):
    """`event: error` mid-stream: the text before it is delivered, then the mapped error."""
    script = Script(text="one two three", error_after=2, error_type=error_type, error_message="went wrong")
    with AnthropicServer(script) as srv:
        out = await run(make(srv.base_url, max_retries=3))
    assert out.text == "one two "
    assert out.error.code == code
    assert error_type in out.error.message and "went wrong" in out.error.message
    assert len(srv.requests) == 1  # never retried after the first token


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "auth"), (403, "auth"), (429, "rate_limited"), (500, "upstream_error"), (529, "upstream_error")],
)
async def test_when_http_error_then_it_maps_to_a_stable_code(make, status, code):
    """HTTP errors (no retries configured) map to codes; the message names status, type and host."""
    with AnthropicServer(Script(status=status)) as srv:
        out = await run(make(srv.base_url))
    assert out.texts == [] and out.error.code == code
    assert f"HTTP {status}" in out.error.message and f"127.0.0.1:{srv.port}" in out.error.message
    assert len(srv.requests) == 1


async def test_when_overloaded_before_the_first_token_then_it_is_retried(make):
    """An error event before any text (HTTP 200) and an HTTP 529: both retried, text once."""
    scripts = [Script(error_after=0), Script(status=529, retry_after_ms=1), Script(text="finally")]
    with AnthropicServer(scripts) as srv:
        out = await run(make(srv.base_url, max_retries=2))
    assert out.error is None and out.text == "finally"
    assert len(srv.requests) == 3


async def test_when_retry_after_is_longer_than_allowed_then_it_fails_at_once(make):
    """The Anthropic SDK would sleep as long as Retry-After says; we refuse waits over the cap."""
    with AnthropicServer(Script(status=529, retry_after_ms=600_000)) as srv:
        started = time.monotonic()
        out = await run(make(srv.base_url, max_retries=2, max_retry_wait_s=1.0))
    assert out.error.code == "upstream_error" and len(srv.requests) == 1
    assert time.monotonic() - started < 1.0


async def test_when_retries_run_out_then_the_error_is_raised(make):
    """max_retries=1 and two early overloads: the second one is the caller's error."""
    with AnthropicServer(Script(error_after=0)) as srv:
        out = await run(make(srv.base_url, max_retries=1))
    assert out.error.code == "upstream_error" and len(srv.requests) == 2


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_the_connection_dies_mid_stream_then_connection_error_without_retry(make, transport):
    """Closed after 2 tokens with retries left: 2 tokens, `connection`, one request."""
    with AnthropicServer(Script(text="a b c d", disconnect_after=2)) as srv:
        out = await run(make(srv.base_url, max_retries=3, http_client=transport))
    assert out.text == "a b " and out.error.code == "connection" and len(srv.requests) == 1


async def test_when_an_event_is_malformed_then_bad_response(make):
    """Invalid JSON in an event -> bad_response after the earlier text."""
    with AnthropicServer(Script(text="a b c", malformed_after=1)) as srv:
        out = await run(make(srv.base_url))
    assert out.text == "a " and out.error.code == "bad_response"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_the_server_stalls_then_timeout(make, transport):
    """Silence longer than the read timeout, before headers or mid-stream -> timeout."""
    with AnthropicServer([Script(ttfb_s=2.0), Script(text="a b c", stall_after=1)]) as srv:
        provider = make(srv.base_url, timeout_s=0.2, http_client=transport)
        started = time.monotonic()
        before_headers = await run(provider)
        mid_stream = await run(provider)
    assert before_headers.error.code == "timeout" and before_headers.texts == []
    assert mid_stream.error.code == "timeout" and mid_stream.text == "a "
    assert time.monotonic() - started < 2.0


async def test_when_the_port_is_closed_then_connection_error(make):
    """A refused connection is `connection`."""
    out = await run(make(f"http://127.0.0.1:{closed_port()}"))
    assert out.error.code == "connection"


async def test_when_the_message_ends_without_message_stop_but_with_stop_reason_then_it_completes(make):
    """message_delta carried the stop reason: a missing message_stop loses nothing."""
    with AnthropicServer(Script(text="x y", done=False)) as srv:
        out = await run(make(srv.base_url))
    assert out.error is None and out.text == "x y" and out.usage.completion_tokens == 2


async def test_when_the_key_variable_is_unset_then_auth_error_naming_it(make, monkeypatch):
    """Missing key: build works, the stream fails with `auth` and the variable's name; no request."""
    monkeypatch.delenv(KEY_ENV)
    with AnthropicServer(Script(text="x")) as srv:
        out = await run(make(srv.base_url))
    assert out.error.code == "auth" and KEY_ENV in out.error.message
    assert srv.requests == []


async def test_when_no_key_anywhere_then_auth_error_names_anthropic_api_key(make, monkeypatch, tmp_path):
    """Without api_key_env and without the SDK's variables or profiles: a clear `auth` error."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no profile on disk either
    out = await run(make("http://127.0.0.1:9", api_key_env=None))
    assert out.error.code == "auth" and "ANTHROPIC_API_KEY" in out.error.message


async def test_when_the_sdk_profile_config_is_broken_then_auth_error(make, monkeypatch, tmp_path):
    """ANTHROPIC_CONFIG_DIR without a profile makes the SDK raise at construction: `auth`, not a crash."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path))
    out = await run(make("http://127.0.0.1:9", api_key_env=None))
    assert out.error.code == "auth" and "ANTHROPIC_API_KEY" in out.error.message


async def test_when_the_sdk_is_missing_then_build_works_and_streaming_says_how_to_install(make, monkeypatch):
    """`import anthropic` failing: a clear message at stream time, not an import error at startup."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    provider = make("http://127.0.0.1:9")
    out = await run(provider)
    assert out.error.code == "upstream_error"
    assert "pip install anthropic" in out.error.message


async def test_when_errors_happen_then_the_key_never_appears_in_messages_or_logs(make, caplog):
    """Upstream messages echoing the key (HTTP and in-stream), with retries: the key is nowhere."""
    for name in ("", "anthropic", "httpx2", "httpcore2", "streams"):
        caplog.set_level(logging.DEBUG, logger=name or None)
    scripts = [
        Script(status=401, error_message=f"invalid x-api-key {KEY}"),
        Script(status=529, retry_after_ms=1, error_message=f"overloaded for {KEY}"),
        Script(text="a", error_after=0, error_message=f"key={KEY}"),
    ]
    errors = []
    with AnthropicServer(scripts[0]) as srv:
        provider = make(srv.base_url, max_retries=1)
        for script in scripts:
            srv.script = script
            errors.append((await run(provider)).error)
    assert all(error is not None for error in errors)
    for error in errors:
        for text in (str(error), repr(error), "".join(traceback.format_exception(error))):
            assert KEY not in text
    assert KEY not in caplog.text
    assert all(KEY not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_when_the_consumer_is_cancelled_then_the_upstream_sees_the_close_within_200ms(make, transport):
    """Cancel the consuming task mid-stream: the server records the TCP close promptly."""
    with AnthropicServer(Script(tokens=500, tokens_per_s=40)) as srv:
        provider = make(srv.base_url, http_client=transport)
        record, cancelled_at = await cancel_mid_stream(srv, provider, REQUEST)
    assert record.client_closed
    assert record.closed_at - cancelled_at < 0.2


def test_decoder_ignores_ping_unknown_events_and_non_text_deltas():
    """Only text_delta text counts; thinking, tool JSON, pings and new event types are skipped."""
    decoder = AnthropicDecoder(build("d", {}))
    texts: list[str] = []
    events = [
        (
            "message_start",
            b'{"type":"message_start","message":{"usage":{"input_tokens":3,'
            b'"cache_read_input_tokens":4,"output_tokens":1}}}',
        ),
        ("ping", b'{"type":"ping"}'),
        (
            "content_block_delta",
            b'{"type":"content_block_delta","delta":{"type":"thinking_delta","thinking":"hm"}}',
        ),
        (
            "content_block_delta",
            b'{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{"}}',
        ),
        ("brand_new_event", b'{"type":"brand_new_event","x":1}'),
        ("content_block_delta", b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}'),
        (
            "message_delta",
            b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}}',
        ),
        ("message_stop", b'{"type":"message_stop"}'),
    ]
    for event, data in events:
        decoder.apply(event, data, texts)
    assert texts == ["hi"]
    assert decoder.done and decoder.finished
    assert decoder.usage() == Usage(prompt_tokens=7, completion_tokens=9, finish_reason="stop")


async def test_a_keyless_provider_never_sends_the_sdks_own_key(make, monkeypatch):
    """ANTHROPIC_API_KEY belongs to Anthropic: a keyless server (no api_key_env) must not receive it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env-123456")
    with AnthropicServer(Script(text="local")) as srv:
        out = await run(make(srv.base_url, api_key_env=None, api_key_optional=True))
    assert out.error is None and out.texts == ["local"]
    assert srv.requests[0].authorization == "unused"
