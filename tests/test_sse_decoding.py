"""The hand-written SSE parser against httpx-sse as the oracle, for any stream cut at any points.

The oracle is the maintained pipeline: Python's incremental UTF-8 decoder ("utf-8-sig", which
drops one leading BOM as the spec's decode step does), httpx-sse's line splitter and its event
decoder. Two documented differences are bridged here, not hidden: httpx-sse also dispatches an
event that has no data line (the spec does not), and our parser dispatches an event that the
body's end cuts off before its blank line (the oracle sees the stream plus a final blank line).
"""

import codecs
import itertools

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.providers.base import ProviderError
from streams.providers.sse import MAX_LINE_BYTES, SSEParser, decode_json


def oracle(body: bytes) -> list[tuple[str, str]]:
    """(event, data) pairs per httpx-sse, for a body that ends properly."""
    text = codecs.getincrementaldecoder("utf-8-sig")().decode(body + b"\n\n", final=True)
    lines_decoder, decoder = SSELineDecoder(), SSEDecoder()
    events = []
    has_data = False
    for line in [*lines_decoder.decode(text), *lines_decoder.flush()]:
        # The spec dispatches only when a data field was seen (httpx-sse: any field).
        if line.partition(":")[0] == "data":
            has_data = True
        event = decoder.decode(line)
        if event is not None:
            if has_data:
                events.append((event.event, event.data))
            has_data = False
    return events


def parsed(body: bytes, cuts: list[int]) -> list[tuple[str, str]]:
    """(event, data) pairs from our parser, the body fed in pieces cut at `cuts`."""
    parser = SSEParser()
    events = []
    bounds = [0, *sorted(set(cuts)), len(body)]
    for start, end in itertools.pairwise(bounds):
        events += parser.feed(body[start:end])
    events += parser.flush()
    # The spec names an event without a type "message" (httpx-sse too); ours says None.
    return [(event or "message", data.decode("utf-8")) for event, data in events]


NEWLINES = st.sampled_from(["\n", "\r\n", "\r"])
VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12
) | st.sampled_from(["", " ", "  x", '{"a":"é👍"}', "[DONE]", "👨\u200d👩\u200d👧", ":", " : "])
LINES = st.one_of(
    st.builds(lambda v: "data: " + v, VALUES),
    st.builds(lambda v: "data:" + v, VALUES),
    st.just("data"),
    st.builds(lambda v: "event: " + v, VALUES),
    st.builds(lambda v: "event:" + v, VALUES),
    st.just("event"),
    st.builds(lambda v: ":" + v, VALUES),  # comment
    st.builds(lambda v: "id: " + v, VALUES),
    st.builds(lambda v: "retry: " + v, VALUES),
    st.builds(lambda n, v: n + ":" + v, st.sampled_from(["foo", "Data", "data ", " data"]), VALUES),
    st.just(""),  # blank line: dispatch
)


@st.composite
def streams(draw) -> bytes:
    """An event stream from the grammar above: mixed line ends, perhaps a BOM, UTF-8 everywhere."""
    lines = draw(st.lists(st.tuples(LINES, NEWLINES), max_size=30))
    body = "".join(line + end for line, end in lines)
    if draw(st.booleans()):
        body += draw(LINES)  # an unterminated last line
    prefix = "\ufeff" if draw(st.booleans()) else ""
    return (prefix + body).encode()


def cut_points(body: bytes):
    """Any positions in the body, inside CRLF pairs and UTF-8 sequences included."""
    return st.lists(st.integers(min_value=0, max_value=len(body)), max_size=12)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_parser_agrees_with_httpx_sse_for_grammar_streams_split_anywhere(data):
    """Grammar-built streams with random cut points: the same events as the oracle."""
    body = data.draw(streams())
    cuts = data.draw(cut_points(body))
    assert parsed(body, cuts) == oracle(body)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), st.data())
def test_the_parser_agrees_with_httpx_sse_for_arbitrary_text(text, data):
    """Any Unicode text at all (control characters, lone CRs, colons), cut anywhere."""
    body = text.encode()
    assert parsed(body, data.draw(cut_points(body))) == oracle(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"data: a\r\n\r\n", [("message", "a")]),
        (b"data: a\r\rdata: b\r\r", [("message", "a"), ("message", "b")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [("message", "bom")]),
        (b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n", []),  # only one BOM is dropped: a field "\ufeffdata"
        (b": comment\ndata:no-space\ndata\ndata:  two\n\n", [("message", "no-space\n\n two")]),
        (b"event: error\ndata: e\n\ndata: after\n\n", [("error", "e"), ("message", "after")]),
        (b"event: lonely\n\ndata: x\n\n", [("message", "x")]),  # no data: nothing dispatched, type reset
        (b"data: \xc3\xa9\xf0\x9f\x91\x8d\n\n", [("message", "é👍")]),
    ],
)
def test_odd_but_legal_framings_at_every_single_split(body, expected):
    """Each case cut at every single position (inside CRLF, the BOM and UTF-8 sequences too)."""
    assert oracle(body) == expected
    for cut in range(len(body) + 1):
        assert parsed(body, [cut]) == expected, cut


def test_a_cr_at_the_end_of_one_read_and_lf_at_the_start_of_the_next_is_one_line_end():
    """CRLF cut between reads: no phantom blank line (that would end the event early)."""
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r") == [(None, b"a\nb")]
    assert parser.feed(b"\n") == []


def test_a_line_longer_than_the_limit_is_bad_response():
    """A server that never ends a line cannot make the parser buffer without bound."""
    parser = SSEParser()
    with pytest.raises(ProviderError) as caught:
        parser.feed(b"data: " + b"x" * MAX_LINE_BYTES)
    assert caught.value.code == "bad_response"


def test_decode_json_refuses_invalid_utf8_and_non_objects():
    """Bytes that are not UTF-8 JSON objects are bad_response, never an uncaught error."""
    for data in (b'{"a": "\xff"}', b"[1]", b"nope", b'"s"'):
        with pytest.raises(ProviderError) as caught:
            decode_json(data, "here")
        assert caught.value.code == "bad_response"
