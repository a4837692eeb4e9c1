"""Hostile client frames: each gets an error frame, the connection stays usable, nothing escapes receive()."""

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.access.owners import owner_of
from streams.protocol import ClientError
from streams.session.inputs import check_tree, loads_checked, parse_client_frame
from tests.wsclient import connect, recv, send

LIMITS = {"max_bytes": 64 * 1024, "max_input_chars": 32_000, "max_ping_bytes": 1024}


def parse(text):
    return parse_client_frame(text, **LIMITS)


def code_of(text) -> str:
    with pytest.raises(ClientError) as info:
        parse(text)
    return info.value.code


# Lone surrogates as JSON escapes in every string the protocol reads, and in a key.
SURROGATES = [
    r'{"type": "ping", "x": "\ud800"}',
    r'{"type": "ping", "\udfff": 1}',
    r'{"type": "ping", "nested": [{"deep": "a\ud83db"}]}',
    r'{"type": "run.start", "pipeline": "demo", "input": "hi", "ref": "\ud800"}',
    r'{"type": "run.start", "pipeline": "\ud800", "input": "hi"}',
    r'{"type": "run.start", "pipeline": "demo", "input": "\udc00"}',
    r'{"type": "run.cancel", "run_id": "\ud800"}',
    r'{"type": "run.resume", "run_id": "\ud800", "after_seq": 0}',
    r'{"type": "\ud800"}',
]


@pytest.mark.parametrize("text", SURROGATES)
def test_a_lone_surrogate_anywhere_is_bad_request(text):
    assert code_of(text) == "bad_request"


def test_a_raw_lone_surrogate_in_the_text_is_bad_request():
    # Not possible over a real socket (UTF-8 cannot encode it) but possible in process.
    assert code_of('{"type": "ping", "x": "\ud800"}') == "bad_request"


def test_valid_non_ascii_text_passes():
    frame = parse(json.dumps({"type": "run.start", "pipeline": "demo", "input": "é→😀", "ref": "😀"}))
    assert frame["input"] == "é→😀"


@pytest.mark.parametrize("depth", [17, 200, 30_000])
def test_deep_nesting_is_bad_request_however_deep(depth):
    text = '{"type": "ping", "x": ' + "[" * depth + "]" * depth + "}"
    assert code_of(text) == "bad_request"


def test_nesting_within_the_limit_is_echoable():
    nested = [[[["ok"]]]]
    assert parse(json.dumps({"type": "ping", "x": nested}))["x"] == nested


def test_check_tree_needs_no_recursion():
    data: list = []
    for _ in range(100_000):
        data = [data]
    with pytest.raises(ClientError):
        check_tree(data)


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "ping", "x": NaN}',
        '{"type": "ping", "x": -Infinity}',
        '{"type": "ping", "x": ' + "9" * 5000 + "}",
        '{"type": "run.resume", "run_id": "abc", "after_seq": ' + "9" * 30 + "}",
        '{"type": "run.resume", "run_id": "abc", "after_seq": 1.5}',
        '{"type": "run.start", "pipeline": "demo", "input": "a\\u0000b"}',
        '{"type": "run.start", "pipeline": ["demo"], "input": "x"}',
        '{"type": "run.start", "pipeline": "demo", "input": {"x": 1}}',
        '{"type": 7}',
        '{"type": null}',
    ],
)
def test_constants_huge_numbers_nul_and_wrong_types_are_bad_request(text):
    assert code_of(text) == "bad_request"


@pytest.mark.parametrize("run_id", ["", "x" * 129, "a b", "../etc", "é", "run\n"])
def test_a_run_id_no_run_can_have_is_unknown_run(run_id):
    assert code_of(json.dumps({"type": "run.cancel", "run_id": run_id})) == "unknown_run"


def test_a_pipeline_name_no_pipeline_can_have_is_unknown_pipeline():
    assert code_of(json.dumps({"type": "run.start", "pipeline": "a/b", "input": "x"})) == "unknown_pipeline"


def test_a_ping_over_the_echo_limit_is_too_large_and_one_within_is_echoed():
    assert code_of(json.dumps({"type": "ping", "pad": "x" * 1100})) == "too_large"
    assert parse(json.dumps({"type": "ping", "pad": "x" * 900}))["pad"] == "x" * 900


def test_session_owners_are_hashes_not_keys():
    key = "abcdefghijklmnopqrstuvwxyz012345"
    owner = owner_of(None, key, "fallback")
    assert owner.startswith("session:") and key not in owner
    assert owner == owner_of(None, key, "other") and owner != owner_of(None, key + "x", "f")


# Any JSON value whatever, and any text: parse either returns a frame or raises ClientError.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ping", "run.start", "run.cancel", "run.resume"])},
        optional={
            "pipeline": json_values,
            "input": json_values,
            "ref": json_values,
            "run_id": json_values,
            "after_seq": json_values,
        },
    ).map(json.dumps),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames)
def test_any_text_parses_to_a_frame_that_can_be_sent_back_or_to_a_client_error(text):
    try:
        frame = parse(text)
    except ClientError as exc:
        # The error frame itself must encode: it echoes `ref`.
        json.dumps(exc.frame(), ensure_ascii=False).encode("utf-8")
        return
    # Whatever passed can be echoed (pong) and stored without an encoding error.
    json.dumps(frame, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert isinstance(frame["type"], str)


def test_loads_checked_keeps_valid_data():
    assert loads_checked('{"a": ["b", 1, 2.5, null, true]}') == {"a": ["b", 1, 2.5, None, True]}


# --- over the socket: the connection stays usable ---------------------------------------------

HOSTILE = [
    *SURROGATES,
    '{"type": "ping", "x": ' + "[" * 30_000 + "]" * 30_000 + "}",
    '{"type": "ping", "x": NaN}',
    '{"type": "ping", "pad": "' + "y" * 5000 + '"}',
    '{"type": "run.resume", "run_id": "' + "r" * 5000 + '", "after_seq": 0}',
    '{"type": "run.resume", "run_id": "abc", "after_seq": ' + "9" * 40 + "}",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
async def test_hostile_frames_each_get_an_error_and_the_socket_keeps_answering(redis_layer, caplog):
    caplog.set_level(logging.WARNING)
    comm = await connect()
    for text in HOSTILE:
        await comm.send_to(text_data=text)
        frame = await recv(comm)
        assert frame["type"] == "error", frame
        assert frame["code"] in {"bad_request", "too_large", "unknown_run"}, frame
        await send(comm, {"type": "ping", "n": 1})
        assert await recv(comm) == {"type": "pong", "n": 1}
    await comm.disconnect()
    assert not [r for r in caplog.records if r.exc_info], "a hostile frame was logged with a traceback"
