"""Odd-but-legal framings and broken streams, for both SDK providers over real HTTP to the local servers.

An answer is complete only when the upstream says so; every broken stream fails with a stable
code after the text it did deliver; a field of the wrong type is bad_response.
"""

import pytest

from streams.providers import anthropic_provider, openai_provider
from streams.providers.base import LLMRequest, Usage
from streams.providers.simulated import SimulatedProvider
from tests.support.anthropic_server import AnthropicServer
from tests.support.openai_server import OpenAIServer, RequestRecord, Script
from tests.support.providers import Outcome, consume, provider_factory

KEY_ENV = "TEST_PROVIDER_STREAMS_KEY"
REQUEST = LLMRequest(model="m", prompt="Say hello")
CHUNKS = ["Hé", "llo ", "👍🏽", " 日本語", " 👨‍👩‍👧", " end∑"]

DIALECTS = {
    "openai": (openai_provider.build, OpenAIServer),
    "anthropic": (anthropic_provider.build, AnthropicServer),
}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    """The key for every provider built here."""
    monkeypatch.setenv(KEY_ENV, "sk-test-streams-0123456789")


@pytest.fixture(params=list(DIALECTS))
async def dialect(request):
    """(provider factory, server class) for each SDK provider."""
    build, server_cls = DIALECTS[request.param]
    async with provider_factory(build, f"t-{request.param}", KEY_ENV) as factory:
        yield factory, server_cls


async def stream(dialect, script, **config) -> tuple[Outcome, list[RequestRecord]]:
    """One request through the provider to a fresh server with this script (or script list)."""
    factory, server_cls = dialect
    with server_cls(script) as srv:
        out = await consume(factory(srv.base_url, **config), REQUEST)
    return out, srv.requests


@pytest.mark.parametrize(
    "framing",
    [
        {"line_ending": "\r\n"},
        {"line_ending": "\r"},
        {"bom": True},
        {"comments": True},
        {"multiline_data": True},
        {"line_ending": "\r\n", "bom": True, "comments": True, "multiline_data": True},
        {"line_ending": "\r", "bom": True, "comments": True, "multiline_data": True},
    ],
    ids=["crlf", "lone-cr", "bom", "comments", "multiline-data", "all-crlf", "all-cr"],
)
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_odd_but_legal_framing_cut_into_3_byte_reads_gives_the_exact_text(dialect, framing, transport):
    """Every framing the SSE spec allows, each event in 3-byte writes (CRLF pairs, BOM, UTF-8 cut)."""
    script = Script(chunks=CHUNKS, fragment_bytes=3, fragment_delay_s=0.0005, **framing)
    out, requests = await stream(dialect, script, http_client=transport)
    assert out.error is None
    assert out.text == "".join(CHUNKS) == requests[0].text_sent
    assert out.usage.finish_reason == "stop"
    assert out.usage.completion_tokens == len(CHUNKS)


@pytest.mark.parametrize(
    ("reason", "reported"), [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls")]
)
async def test_the_finish_reason_is_reported_in_openai_words(dialect, reason, reported):
    """A max_tokens cut is "length" for both (Anthropic's max_tokens, tool_use mapped)."""
    out, _ = await stream(dialect, Script(text="cut short", finish_reason=reason))
    assert out.error is None and out.text == "cut short"
    assert out.usage.finish_reason == reported


async def test_openai_done_without_finish_reason_is_incomplete_after_the_text():
    """llama.cpp ends an interrupted answer with [DONE] and no finish_reason: never a normal end."""
    async with provider_factory(openai_provider.build, "t", KEY_ENV) as factory:
        script = Script(text="a b c", finish_reason=None)
        out, requests = await stream((factory, OpenAIServer), script, max_retries=3)
    assert out.text == "a b c"
    assert out.error.code == "incomplete" and "finish_reason" in out.error.message
    assert out.usage is None
    assert len(requests) == 1  # text was delivered: never retried


async def test_a_body_that_ends_without_any_end_signal_is_incomplete(dialect):
    """Properly ended body (chunked terminator) with neither finish reason nor end marker."""
    out, _ = await stream(dialect, Script(text="a b", finish_reason=None, done=False))
    assert out.text == "a b"
    assert out.error.code == "incomplete"
    assert out.usage is None


async def test_anthropic_message_stop_without_stop_reason_completes():
    """message_stop is Anthropic's own "the message is complete": it ends the answer normally."""
    async with provider_factory(anthropic_provider.build, "t", KEY_ENV) as factory:
        out, _ = await stream((factory, AnthropicServer), Script(text="a b", finish_reason=None))
    assert out.error is None and out.text == "a b"
    assert out.usage == Usage(prompt_tokens=2, completion_tokens=2, finish_reason=None)


async def test_an_incomplete_answer_before_the_first_token_is_retried(dialect):
    """No text delivered yet: an incomplete stream is safe to retry, and the retry answers."""
    scripts = [Script(chunks=[], finish_reason=None, done=False), Script(text="second try")]
    out, requests = await stream(dialect, scripts, max_retries=1)
    assert out.error is None and out.text == "second try"
    assert len(requests) == 2


@pytest.mark.parametrize("abort", [False, True])
@pytest.mark.parametrize("after", [0, 2])
async def test_a_connection_closed_early_is_connection_never_a_normal_end(dialect, abort, after):
    """FIN or RST before or after some tokens (and before any end signal): `connection`."""
    out, _ = await stream(dialect, Script(text="a b c d", disconnect_after=after, abort=abort))
    assert out.text == "a b c d"[: 2 * after]
    assert out.error.code == "connection"
    assert out.usage is None


@pytest.mark.parametrize("content", [42, ["x"], {"text": "x"}, True])
async def test_content_that_is_not_a_string_is_bad_response_after_the_text_before_it(dialect, content):
    """A JSON value of the wrong type where the text goes: bad_response, naming the field."""
    out, _ = await stream(dialect, Script(chunks=["ok ", content, "never"]), max_retries=2)
    assert out.text == "ok "
    assert out.error.code == "bad_response"
    assert "not a string" in out.error.message


OPENAI_BAD = {
    "choices-not-list": b'data: {"choices": {"0": {}}}\n\n',
    "choice-not-object": b'data: {"choices": ["x"]}\n\n',
    "delta-not-object": b'data: {"choices": [{"delta": "x"}]}\n\n',
    "finish-not-string": b'data: {"choices": [{"delta": {}, "finish_reason": 1}]}\n\n',
    "usage-not-object": b'data: {"choices": [], "usage": "lots"}\n\n',
    "tokens-not-integer": b'data: {"choices": [], "usage": {"prompt_tokens": "3"}}\n\n',
}
ANTHROPIC_BAD = {
    "delta-not-object": b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": []}\n\n',
    "usage-not-object": b'event: message_delta\ndata: {"type": "message_delta", "usage": 5}\n\n',
    "stop-not-string": b'data: {"type": "message_delta", "delta": {"stop_reason": 7}}\n\n',
    "message-not-object": b'data: {"type": "message_start", "message": "m"}\n\n',
    "tokens-not-integer": b'data: {"type": "message_delta", "usage": {"output_tokens": 1.5}}\n\n',
    "type-not-string": b'data: {"type": 3}\n\n',
}


@pytest.mark.parametrize("case", list(OPENAI_BAD))
async def test_openai_fields_of_the_wrong_type_are_bad_response(case):
    """Each field the provider reads is type-checked at the boundary."""
    async with provider_factory(openai_provider.build, "t", KEY_ENV) as factory:
        out, _ = await stream((factory, OpenAIServer), Script(text="a b c", inject=[(1, OPENAI_BAD[case])]))
    assert out.text == "a "
    assert out.error.code == "bad_response"


@pytest.mark.parametrize("case", list(ANTHROPIC_BAD))
async def test_anthropic_fields_of_the_wrong_type_are_bad_response(case):
    """Each field the provider reads is type-checked at the boundary."""
    async with provider_factory(anthropic_provider.build, "t", KEY_ENV) as factory:
        out, _ = await stream(
            (factory, AnthropicServer), Script(text="a b c", inject=[(1, ANTHROPIC_BAD[case])])
        )
    assert out.text == "a "
    assert out.error.code == "bad_response"


class _IgnoresStream:
    """Mix-in: a server that answers stream=True with one JSON answer."""

    def wants_stream(self, record: RequestRecord) -> bool:
        """Never stream."""
        return False


class _JsonOpenAI(_IgnoresStream, OpenAIServer):
    """OpenAI dialect, JSON answers only."""


class _JsonAnthropic(_IgnoresStream, AnthropicServer):
    """Anthropic dialect, JSON answers only."""


@pytest.mark.parametrize(
    ("build", "server_cls"),
    [(openai_provider.build, _JsonOpenAI), (anthropic_provider.build, _JsonAnthropic)],
    ids=["openai", "anthropic"],
)
async def test_a_json_answer_needs_its_finish_reason_too(build, server_cls):
    """A whole answer without a finish/stop reason is incomplete; with "length" it says so."""
    async with provider_factory(build, "t", KEY_ENV) as factory:
        cut, _ = await stream((factory, server_cls), Script(text="whole", finish_reason=None))
        length, _ = await stream((factory, server_cls), Script(text="whole", finish_reason="length"))
    assert cut.error.code == "incomplete" and cut.texts == []
    assert length.error is None and length.text == "whole" and length.usage.finish_reason == "length"


@pytest.mark.parametrize(
    ("stop_reason", "reported"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "pause_turn"),
    ],
)
def test_anthropic_stop_reasons_are_mapped_to_openai_words(stop_reason, reported):
    """The decoder's mapping; reasons without an OpenAI counterpart pass unchanged."""
    decoder = anthropic_provider.AnthropicDecoder(anthropic_provider.build("d", {}))
    data = b'{"type":"message_delta","delta":{"stop_reason":"%s"},"usage":{"output_tokens":2}}'
    decoder.apply("message_delta", data % stop_reason.encode(), [])
    assert decoder.finished
    assert decoder.usage() == Usage(completion_tokens=2, finish_reason=reported)


async def test_the_simulated_provider_reports_stop_or_a_max_tokens_cut_as_length():
    """Its answer is complete ("stop") unless max_tokens cut it ("length")."""
    provider = SimulatedProvider(ttft_s=0, tokens_per_s=0, tokens=5)
    whole = await consume(provider, LLMRequest(model="m", prompt="p"))
    cut = await consume(provider, LLMRequest(model="m", prompt="p", max_tokens=3))
    exact = await consume(provider, LLMRequest(model="m", prompt="p", max_tokens=5))
    assert whole.usage.finish_reason == "stop" and len(whole.texts) == 5
    assert cut.usage.finish_reason == "length" and len(cut.texts) == 3
    assert exact.usage.finish_reason == "stop"
