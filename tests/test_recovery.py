"""Ending an orphaned run from its log: the replayed gate continues seq and closes every open task."""

from streams.runs.gate import COMPLETED, DELTA, STARTED, Gate, TaskEvent
from streams.runs.recovery import closing_frames


def logged_run():
    """Frames of a run whose host died after task a finished and while b was live."""
    gate = Gate("r", ["a", "b", "c"])
    return gate.feed_all(
        [
            TaskEvent("c", STARTED),
            TaskEvent("a", STARTED),
            TaskEvent("a", DELTA, text="A"),
            TaskEvent("b", STARTED),
            TaskEvent("a", COMPLETED, stats={"tokens": 1}),
            TaskEvent("b", DELTA, text="B"),
        ]
    )


def test_closing_frames_continue_seq_and_fail_every_open_task():
    logged = logged_run()
    frames = closing_frames("r", ["a", "b", "c"], logged, "host_lost", "gone")
    assert [f["seq"] for f in frames] == list(range(len(logged) + 1, len(logged) + 1 + len(frames)))
    assert [(f["type"], f.get("task")) for f in frames] == [
        ("task.failed", "b"),
        ("task.started", "c"),
        ("task.failed", "c"),
        ("run.failed", None),
    ]
    assert frames[-1]["error"]["code"] == "host_lost"


def test_an_ended_run_or_an_inconsistent_log_gets_no_closing_frames():
    logged = logged_run()
    ended = logged + closing_frames("r", ["a", "b", "c"], logged, "host_lost", "gone")
    assert closing_frames("r", ["a", "b", "c"], ended, "host_lost", "gone") == []
    assert closing_frames("r", ["a", "b", "c"], logged[1:], "host_lost", "gone") == []


def test_a_log_with_several_deltas_of_one_task_in_a_row_is_replayed_exactly():
    # Regression: replaying the log as one batch joined a.delta "A1" and "A2" into one frame,
    # so the replay never matched the log and an orphaned run was never ended.
    gate = Gate("r", ["a", "b"])
    logged = gate.feed(TaskEvent("a", STARTED)) + gate.feed(TaskEvent("a", DELTA, text="A1"))
    logged += gate.feed(TaskEvent("a", DELTA, text="A2"))
    frames = closing_frames("r", ["a", "b"], logged, "host_lost", "gone")
    assert [(f["type"], f.get("task")) for f in frames] == [
        ("task.failed", "a"),
        ("task.started", "b"),
        ("task.failed", "b"),
        ("run.failed", None),
    ]
