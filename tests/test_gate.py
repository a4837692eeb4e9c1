"""The ordering gate: guarantees 1-4 of the protocol for any interleaving of task streams."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runs.gate import COMPLETED, DELTA, FAILED, STARTED, Gate, GateError, TaskEvent


def task_stream(key: str, texts: list[str], fail: bool) -> list[TaskEvent]:
    """One task's own events: started, deltas, then completed or failed."""
    end = (
        TaskEvent(key, FAILED, error={"code": "upstream_error", "message": "x"})
        if fail
        else TaskEvent(key, COMPLETED, stats={"tokens": len(texts)})
    )
    return [TaskEvent(key, STARTED), *(TaskEvent(key, DELTA, text=t) for t in texts), end]


@st.composite
def runs(draw):
    """Random per-task streams plus two random interleavings of them."""
    n = draw(st.integers(1, 5))
    keys = [f"t{i}" for i in range(n)]
    streams = {
        k: task_stream(k, draw(st.lists(st.text(min_size=1, max_size=5), max_size=8)), draw(st.booleans()))
        for k in keys
    }

    def interleave():
        cursors = dict.fromkeys(keys, 0)
        out = []
        while any(cursors[k] < len(streams[k]) for k in keys):
            k = draw(st.sampled_from([k for k in keys if cursors[k] < len(streams[k])]))
            out.append(streams[k][cursors[k]])
            cursors[k] += 1
        return out

    return keys, streams, interleave(), interleave()


def check_guarantees(keys, streams, frames):
    """Assert guarantees 1-4 of PROTOCOL.md on one run's frames."""
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert all(f["run_id"] == "r" for f in frames)
    task_frames = [f for f in frames if f["type"].startswith("task.")]
    # 1. delivery order: the task keys of the frames are grouped and in order.
    seen = []
    for f in task_frames:
        if not seen or seen[-1] != f["task"]:
            seen.append(f["task"])
    assert seen == keys
    for k in keys:
        mine = [f for f in task_frames if f["task"] == k]
        # 2. one started, deltas, one end.
        assert mine[0]["type"] == "task.started"
        assert all(f["type"] == "task.delta" for f in mine[1:-1])
        assert mine[-1]["type"] in ("task.completed", "task.failed")
        # 3. text is exact.
        expected = "".join(e.text for e in streams[k] if e.kind == DELTA)
        assert "".join(f["text"] for f in mine[1:-1]) == expected
    # 4. exactly one run frame, last.
    assert [f["type"].startswith("run.") for f in frames].count(True) == 1
    assert frames[-1]["type"] in ("run.completed", "run.failed")
    failed = any(streams[k][-1].kind == FAILED for k in keys)
    assert frames[-1]["type"] == ("run.failed" if failed else "run.completed")


@settings(max_examples=300, deadline=None)
@given(runs())
def test_any_interleaving_gives_the_same_frames_and_keeps_the_guarantees(run):
    keys, streams, first, second = run
    frames_a = Gate("r", keys).feed_all(first)
    frames_b = Gate("r", keys).feed_all(second)
    check_guarantees(keys, streams, frames_a)
    assert frames_a == frames_b


@settings(max_examples=100, deadline=None)
@given(runs(), st.integers(0, 60))
def test_cancel_at_any_point_ends_every_task_then_the_run(run, cut):
    keys, _, events, _ = run
    gate = Gate("r", keys)
    frames = gate.feed_all(events[:cut])
    if not gate.ended:
        frames += gate.cancel()
        assert frames[-1]["type"] == "run.cancelled"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    for k in keys:
        mine = [f["type"] for f in frames if f.get("task") == k]
        assert mine[0] == "task.started"
        assert mine.count("task.started") == 1
        assert mine[-1] in ("task.completed", "task.failed")
        assert mine.count("task.completed") + mine.count("task.failed") == 1


def test_head_is_live_and_later_tasks_are_held_until_it_ends():
    gate = Gate("r", ["a", "b"])
    assert gate.feed(TaskEvent("b", STARTED)) == []
    assert gate.feed(TaskEvent("b", DELTA, text="B1")) == []
    assert [f["type"] for f in gate.feed(TaskEvent("a", STARTED))] == ["task.started"]
    assert gate.feed(TaskEvent("a", DELTA, text="A1"))[0]["text"] == "A1"
    flushed = gate.feed(TaskEvent("a", COMPLETED, stats={}))
    assert [(f["type"], f.get("task")) for f in flushed] == [
        ("task.completed", "a"),
        ("task.started", "b"),
        ("task.delta", "b"),
    ]
    # b is the head now: its next delta goes out at once.
    assert gate.feed(TaskEvent("b", DELTA, text="B2"))[0]["text"] == "B2"
    end = gate.feed(TaskEvent("b", COMPLETED, stats={}))
    assert [f["type"] for f in end] == ["task.completed", "run.completed"]


@pytest.mark.parametrize(
    "events",
    [
        [TaskEvent("a", DELTA, text="x")],
        [TaskEvent("a", STARTED), TaskEvent("a", STARTED)],
        [TaskEvent("b", STARTED), TaskEvent("b", COMPLETED), TaskEvent("b", DELTA, text="x")],
        [TaskEvent("zz", STARTED)],
        [TaskEvent("a", "bogus")],
    ],
)
def test_events_out_of_a_tasks_own_order_are_refused(events):
    gate = Gate("r", ["a", "b"])
    with pytest.raises(GateError):
        gate.feed_all(events)


def test_abort_fails_open_tasks_with_the_code_and_ends_the_run():
    gate = Gate("r", ["a", "b"])
    gate.feed_all([TaskEvent("a", STARTED), TaskEvent("a", DELTA, text="x")])
    frames = gate.abort("layer_unavailable", "redis is down")
    assert [f["type"] for f in frames] == ["task.failed", "task.started", "task.failed", "run.failed"]
    assert frames[-1]["error"]["code"] == "layer_unavailable"
    assert gate.abort("x", "y") == [] and gate.cancel() == []


@settings(max_examples=200, deadline=None)
@given(runs(), st.integers(1, 7))
def test_split_deltas_never_pass_the_bound_and_still_concatenate_exactly(run, max_chars):
    keys, streams, first, second = run
    frames_a = Gate("r", keys, max_delta_chars=max_chars).feed_all(first)
    frames_b = Gate("r", keys, max_delta_chars=max_chars).feed_all(second)
    check_guarantees(keys, streams, frames_a)
    assert frames_a == frames_b
    assert all(len(f["text"]) <= max_chars for f in frames_a if f["type"] == "task.delta")
    # Fed one event at a time (as a recovery replays a log), every delta still fits.
    gate = Gate("r", keys, max_delta_chars=max_chars)
    one_by_one = [frame for event in first for frame in gate.feed(event)]
    check_guarantees(keys, streams, one_by_one)
    assert all(0 < len(f["text"]) <= max_chars for f in one_by_one if f["type"] == "task.delta")


def test_a_held_task_is_flushed_in_frames_of_the_bound():
    gate = Gate("r", ["a", "b"], max_delta_chars=4)
    gate.feed_all(
        [TaskEvent("a", STARTED), TaskEvent("b", STARTED), TaskEvent("b", DELTA, text="0123456789")]
    )
    flushed = gate.feed(TaskEvent("a", COMPLETED, stats={}))
    assert [f.get("text") for f in flushed if f["type"] == "task.delta"] == ["0123", "4567", "89"]
    assert [f["seq"] for f in flushed] == [2, 3, 4, 5, 6]


@settings(max_examples=300, deadline=None)
@given(runs(), st.integers(0, 3000), st.integers(1, 7))
def test_the_log_never_passes_its_byte_bound_and_a_cut_run_ends_too_large(run, room, max_chars):
    from streams.runs.gate import frame_bytes

    keys, streams, events, _ = run
    cap = gate_reserve(keys) + room
    gate = Gate("r", keys, max_delta_chars=max_chars, max_log_bytes=cap)
    frames = []
    for event in events:  # one send per event: the most frames, the most JSON overhead
        if gate.ended:
            break
        frames += gate.feed(event)
    assert sum(frame_bytes(f) for f in frames) == gate.log_bytes <= cap
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    if not gate.ended:
        return
    cut = frames[-1]["type"] == "run.failed" and frames[-1]["error"]["code"] == "too_large"
    task_frames = [f for f in frames if f["type"].startswith("task.")]
    for k in keys:
        mine = [f for f in task_frames if f["task"] == k]
        assert mine[0]["type"] == "task.started"
        assert mine[-1]["type"] in ("task.completed", "task.failed")
        assert [f["type"] for f in mine].count("task.started") == 1
        expected = "".join(e.text for e in streams[k] if e.kind == DELTA)
        sent = "".join(f["text"] for f in mine if f["type"] == "task.delta")
        # A cut run's texts stop early, never differ.
        assert expected.startswith(sent) if cut else sent == expected


def gate_reserve(keys) -> int:
    """The bytes a gate keeps for its closing frames."""
    return Gate("r", keys, max_log_bytes=10**9)._closing_reserve()


def test_a_cut_fails_the_open_tasks_with_too_large_and_keeps_what_fit():
    gate = Gate("r", ["a", "b"], max_log_bytes=gate_reserve(["a", "b"]) + 200)
    frames = gate.feed_all([TaskEvent("a", STARTED), TaskEvent("a", DELTA, text="x" * 10)])
    assert [f["type"] for f in frames] == ["task.started", "task.delta"]
    frames = gate.feed(TaskEvent("a", DELTA, text="y" * 500))
    assert [(f["type"], f.get("task")) for f in frames] == [
        ("task.failed", "a"),
        ("task.started", "b"),
        ("task.failed", "b"),
        ("run.failed", None),
    ]
    assert frames[-1]["error"]["code"] == "too_large" and gate.ended
    assert gate.cancel() == []
