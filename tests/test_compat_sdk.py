"""The Stainless SDK behaviours in streams.compat, pinned for both SDKs against the local servers.

Each test fails if an SDK upgrade drops or changes the private behaviour the providers rely on;
where it matters, a control case shows that the behaviour is really the header's doing.
"""

import contextlib

import anthropic
import httpx2
import openai
import pytest

from streams import compat
from tests.support.anthropic_server import AnthropicServer
from tests.support.openai_server import OpenAIServer, Script

BODY = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "stream": True}

# (SDK module, client class, server class, streaming path)
SDKS = {
    "openai": (openai, openai.AsyncOpenAI, OpenAIServer, "/chat/completions"),
    "anthropic": (anthropic, anthropic.AsyncAnthropic, AnthropicServer, "/v1/messages"),
}


@contextlib.asynccontextmanager
async def sdk_client(name: str, base_url: str, max_retries: int = 0, hook=None):
    """A real SDK client on its aiohttp transport (as the providers build it), closed on exit."""
    sdk, client_cls, _, _ = SDKS[name]
    timeout = sdk.Timeout(2.0, connect=2.0)
    hooks = {"response": [hook]} if hook else {}
    http_client = sdk.DefaultAioHttpClient(timeout=timeout, event_hooks=hooks)
    client = client_cls(
        api_key="k", base_url=base_url, max_retries=max_retries, timeout=timeout, http_client=http_client
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("name", SDKS)
async def test_raw_stream_header_returns_the_response_at_its_headers_with_the_body_unread(name):
    """sdk_post_stream returns an httpx2.Response while the server is still streaming; we read the body."""
    _, _, server_cls, path = SDKS[name]
    with server_cls(Script(text="first second", stall_after=1)) as srv:
        async with sdk_client(name, srv.base_url) as client:
            http = await compat.sdk_post_stream(client, path, dict(BODY))
            try:
                assert isinstance(http, httpx2.Response) and http.status_code == 200
                assert not http.is_stream_consumed
                assert srv.requests[0].finished_at is None  # the server has not ended the body
                received = b""
                async for chunk in http.aiter_bytes():
                    received += chunk
                    if b"first" in received:
                        break
            finally:
                await http.aclose()
    assert b"first" in received


@pytest.mark.parametrize("name", SDKS)
async def test_without_the_raw_stream_header_the_sdk_reads_the_body_itself(name):
    """Control: the same post without the header returns a consumed body, so the header is what counts."""
    _, _, server_cls, path = SDKS[name]
    with server_cls(Script(text="whole body")) as srv:
        async with sdk_client(name, srv.base_url) as client:
            http = await client.post(path, cast_to=httpx2.Response, body=dict(BODY))
    assert isinstance(http, httpx2.Response)
    assert http.is_stream_consumed
    assert b"whole" in http.content


@pytest.mark.parametrize("name", SDKS)
async def test_retry_count_header_numbers_the_sdk_retries_of_one_call(name):
    """Two HTTP 500s then a stream: the server sees 0, 1, 2 and the response says 2 retries were taken."""
    _, _, server_cls, path = SDKS[name]
    failing = Script(status=500, retry_after_ms=1)
    with server_cls([failing, failing, Script(text="ok")]) as srv:
        async with sdk_client(name, srv.base_url, max_retries=2) as client:
            http = await compat.sdk_post_stream(client, path, dict(BODY))
            await http.aclose()
    assert [r.headers[compat.SDK_RETRY_COUNT_HEADER] for r in srv.requests] == ["0", "1", "2"]
    assert compat.sdk_retries_taken(http) == 2


@pytest.mark.parametrize("name", SDKS)
async def test_max_retries_passed_per_call_overrides_the_clients(name):
    """The client allows 5 retries, the call 1: two requests, then the SDK's status error."""
    sdk, _, server_cls, path = SDKS[name]
    with server_cls(Script(status=500, retry_after_ms=1)) as srv:
        async with sdk_client(name, srv.base_url, max_retries=5) as client:
            with pytest.raises(sdk.APIStatusError):
                await compat.sdk_post_stream(client, path, dict(BODY), max_retries=1)
    assert len(srv.requests) == 2


@pytest.mark.parametrize("name", SDKS)
@pytest.mark.parametrize("forbid", [True, False])
async def test_should_retry_header_set_by_a_response_hook_stops_the_sdk_retrying(name, forbid):
    """A hook marking the 500 "do not retry" leaves one request; without the hook the SDK retries twice."""
    sdk, _, server_cls, path = SDKS[name]

    async def hook(response: httpx2.Response) -> None:
        if response.status_code >= 500:
            compat.sdk_forbid_retry(response)

    with server_cls(Script(status=500, retry_after_ms=1)) as srv:
        async with sdk_client(name, srv.base_url, max_retries=2, hook=hook if forbid else None) as client:
            with pytest.raises(sdk.APIStatusError):
                await compat.sdk_post_stream(client, path, dict(BODY))
    assert len(srv.requests) == (1 if forbid else 3)
