"""max_concurrency: a provider's requests in flight are capped per event loop, and the rest queue.

The local server counts the requests it answers at once; with interrupt=True it behaves like
llama.cpp's server, which cuts the answer in progress short when the next request arrives.
"""

import asyncio
import contextlib

from streams.providers import openai_provider
from streams.providers.base import LLMRequest
from tests.support.openai_server import OpenAIServer, Script
from tests.support.providers import consume, fast_config, provider_factory

KEY_ENV = "TEST_PROVIDER_LIMITS_KEY"


def request(i: int) -> LLMRequest:
    """A request whose generated answer differs per i."""
    return LLMRequest(model="m", prompt=f"question {i}")


async def consume_all(provider, count: int):
    """`count` streams started at once; their outcomes in order."""
    return await asyncio.gather(*(consume(provider, request(i)) for i in range(count)))


async def test_without_a_cap_a_single_slot_server_cuts_answers_short_and_with_cap_1_all_are_whole(
    monkeypatch,
):
    """The llama.cpp case: four concurrent tasks. Uncapped, interrupted answers are `incomplete`
    (never complete); with max_concurrency=1 the server gets one request at a time, all whole."""
    monkeypatch.setenv(KEY_ENV, "sk-test-limits-0123456789")
    script = Script(tokens=20, tokens_per_s=50)
    async with provider_factory(openai_provider.build, "llama", KEY_ENV) as make:
        with OpenAIServer(script, interrupt=True) as srv:
            uncapped = await consume_all(make(srv.base_url), 4)
            uncapped_peak = srv.max_in_flight
        with OpenAIServer(script, interrupt=True) as srv:
            capped = await consume_all(make(srv.base_url, max_concurrency=1), 4)
            capped_peak = srv.max_in_flight
            sent = {r.prompt: r.text_sent for r in srv.requests}
    assert uncapped_peak > 1
    assert any(out.error is not None and out.error.code == "incomplete" for out in uncapped)
    assert all(out.error is None or out.error.code == "incomplete" for out in uncapped)
    assert capped_peak == 1
    assert all(out.error is None and out.usage.finish_reason == "stop" for out in capped)
    assert [out.text for out in capped] == [sent[f"question {i}"] for i in range(4)]
    assert all(len(out.text.split()) == 20 for out in capped)


async def test_a_cap_of_two_keeps_two_requests_in_flight_and_queues_the_rest(monkeypatch):
    """Six streams at once, cap 2: the server never sees more than two, all six complete."""
    monkeypatch.setenv(KEY_ENV, "sk-test-limits-0123456789")
    async with provider_factory(openai_provider.build, "capped", KEY_ENV) as make:
        with OpenAIServer(Script(tokens=5, tokens_per_s=100)) as srv:
            outs = await consume_all(make(srv.base_url, max_concurrency=2), 6)
    assert srv.max_in_flight == 2
    assert len(srv.requests) == 6
    assert all(out.error is None for out in outs)


async def test_cancelled_streams_free_their_slot_whether_queued_or_streaming(monkeypatch):
    """Cap 1: A streams, B waits; B is cancelled while queued, A mid-stream; C then gets the slot
    and completes, and B was never sent."""
    monkeypatch.setenv(KEY_ENV, "sk-test-limits-0123456789")
    async with provider_factory(openai_provider.build, "cancel", KEY_ENV) as make:
        with OpenAIServer(Script(tokens=200, tokens_per_s=40)) as srv:
            provider = make(srv.base_url, max_concurrency=1)
            first_pieces: list = []

            async def stream_a():
                async with contextlib.aclosing(provider.stream(request(0))) as stream:
                    async for item in stream:
                        first_pieces.append(item)

            a = asyncio.create_task(stream_a())
            await srv.wait_for(lambda: first_pieces)
            b = asyncio.create_task(consume(provider, request(1)))
            await asyncio.sleep(0.1)  # B is queued behind A (it cannot have a request out)
            assert len(srv.requests) == 1
            for task in (b, a):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            srv.script = Script(text="third")
            c = await asyncio.wait_for(consume(provider, request(2)), timeout=2.0)
    assert b.cancelled() and a.cancelled()
    assert c.error is None and c.text == "third"
    assert [r.prompt for r in srv.requests] == ["question 0", "question 2"]
    assert srv.max_in_flight == 1


def test_the_cap_works_on_each_new_event_loop(monkeypatch):
    """The semaphore belongs to a loop: a provider reused from a second asyncio.run still streams."""
    monkeypatch.setenv(KEY_ENV, "sk-test-limits-0123456789")
    with OpenAIServer(Script(text="again and again", tokens_per_s=50)) as srv:
        provider = openai_provider.build("loops", fast_config(srv.base_url, KEY_ENV, max_concurrency=1))

        async def twice():
            outs = await consume_all(provider, 2)
            await provider.aclose()
            return [(out.text, out.error) for out in outs]

        assert asyncio.run(twice()) == [("again and again", None)] * 2
        assert asyncio.run(twice()) == [("again and again", None)] * 2
    assert srv.max_in_flight == 1 and len(srv.requests) == 4


def test_max_concurrency_absent_or_zero_means_no_cap():
    """Only a positive number caps."""
    assert openai_provider.build("a", {}).cap.limit is None
    assert openai_provider.build("b", {"max_concurrency": 0}).cap.limit is None
    assert openai_provider.build("c", {"max_concurrency": "3"}).cap.limit == 3
