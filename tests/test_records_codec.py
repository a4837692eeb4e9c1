"""Stored pieces and frames decode to what was recorded: texts exact, times to the microsecond."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from streams.records.codec import decode_frames, decode_pieces, encode_frames, encode_pieces

T0 = 1_796_000_000.123456
gaps = st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), min_size=1, max_size=50)


@given(gaps, st.data())
def test_pieces_round_trip(deltas, data):
    """Texts come back exactly; times within a microsecond, still in order, never before t0."""
    times = list(itertools.accumulate(deltas, initial=T0 + 1e-6))[1:]
    texts = data.draw(st.lists(st.text(max_size=5), min_size=len(times), max_size=len(times)))
    for text in ("".join(texts), "something else"):  # the second takes the fallback form
        decoded = decode_pieces(encode_pieces(times, texts, text, T0), text, T0)
        assert [x for _, x in decoded] == texts
        back = [at for at, _ in decoded]
        assert all(abs(a - b) < 2e-6 for a, b in zip(back, times, strict=True))
        assert back == sorted(back) and back[0] >= T0


@given(gaps)
def test_frames_round_trip(deltas):
    """Seq, type and task come back exactly, times in order."""
    times = list(itertools.accumulate(deltas, initial=T0 + 1e-6))[1:]
    kinds = ["task.started", "task.delta", "task.completed", "run.completed"]
    frames = [(i + 1, kinds[i % 4], None if i % 4 == 3 else f"t{i % 3}", at) for i, at in enumerate(times)]
    decoded = decode_frames(encode_frames(frames, T0), T0)
    assert [(f["seq"], f["type"], f["task"]) for f in decoded] == [f[:3] for f in frames]
    sent = [f["sent_at"] for f in decoded]
    assert sent == sorted(sent) and all(abs(a - f[3]) < 2e-6 for a, f in zip(sent, frames, strict=True))


def test_nothing_stored_is_nothing_decoded():
    """No pieces or frames: an empty list both ways."""
    assert encode_pieces([], [], "", T0) == [] and decode_pieces([], "", T0) == []
    assert encode_frames([], T0) == [] and decode_frames([], T0) == []
