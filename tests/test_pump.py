"""The run pump: coalescing, held tasks flushed as one delta, progress, cancel, without Channels."""

import asyncio
import itertools

from streams.runs.pump import RunPump


class Recorder:
    """Collects what the pump publishes; each publish can be slowed down."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list[dict]] = []
        self.progress: list[dict] = []
        self.progress_at: list[float] = []
        self.delay = delay

    async def publish(self, frames):
        await asyncio.sleep(self.delay)
        self.batches.append(frames)

    async def report(self, frame):
        self.progress.append(frame)
        self.progress_at.append(asyncio.get_running_loop().time())

    @property
    def frames(self):
        return [f for batch in self.batches for f in batch]


async def test_a_held_task_is_flushed_as_one_delta_when_the_head_ends():
    rec = Recorder()
    pump = RunPump("r", ["a", "b"], rec.publish)
    sender = asyncio.create_task(pump.run())
    pump.started("b")
    for i in range(500):
        pump.delta("b", f"{i},")
    pump.started("a")
    pump.delta("a", "A")
    await asyncio.sleep(0.01)
    assert all(f.get("task") == "a" for f in rec.frames)
    pump.finished("a", stats={})
    pump.finished("b", stats={})
    await asyncio.wait_for(sender, 1)
    b_deltas = [f for f in rec.frames if f["type"] == "task.delta" and f["task"] == "b"]
    assert len(b_deltas) == 1 and b_deltas[0]["text"] == "".join(f"{i}," for i in range(500))
    assert rec.frames[-1]["type"] == "run.completed"


async def test_tokens_that_arrive_during_a_send_go_out_together_in_the_next():
    rec = Recorder(delay=0.05)
    pump = RunPump("r", ["a"], rec.publish)
    sender = asyncio.create_task(pump.run())
    pump.started("a")
    await asyncio.sleep(0.01)  # the first send (started) is in flight now
    for i in range(100):
        pump.delta("a", str(i))
    pump.finished("a", stats={})
    await asyncio.wait_for(sender, 1)
    assert len(rec.batches) == 2
    assert [f["type"] for f in rec.batches[1]] == ["task.delta", "task.completed", "run.completed"]


async def test_progress_reports_background_tasks_at_most_once_per_interval():
    rec = Recorder()
    pump = RunPump("r", ["a", "b"], rec.publish, rec.report, progress_interval_s=0.05)
    sender = asyncio.create_task(pump.run())
    pump.started("a")
    pump.started("b")
    for _ in range(20):
        pump.delta("a", "x")
        pump.delta("b", "y")
        await asyncio.sleep(0.01)
    pump.finished("b", stats={})
    await asyncio.sleep(0.12)
    pump.finished("a", stats={})
    await asyncio.wait_for(sender, 1)
    assert len(rec.progress) >= 2
    # Paced by the interval, however long the loop took (no count: the machine may be slow).
    assert all(b - a >= 0.049 for a, b in zip(rec.progress_at, rec.progress_at[1:], strict=False))
    assert all(set(p["tasks"]) == {"b"} for p in rec.progress)
    assert rec.progress[-1]["tasks"]["b"] == {"state": "done", "tokens": 20}


async def test_cancel_ends_every_open_task_then_the_run():
    rec = Recorder()
    pump = RunPump("r", ["a", "b"], rec.publish)
    sender = asyncio.create_task(pump.run())
    pump.started("a")
    pump.delta("a", "x")
    await asyncio.sleep(0.01)
    pump.cancel()
    await asyncio.wait_for(sender, 1)
    types = [(f["type"], f.get("task")) for f in rec.frames]
    assert types == [
        ("task.started", "a"),
        ("task.delta", "a"),
        ("task.failed", "a"),
        ("task.started", "b"),
        ("task.failed", "b"),
        ("run.cancelled", None),
    ]
    assert pump.history == rec.frames


async def test_a_failing_progress_report_does_not_fail_the_run():
    rec = Recorder()

    async def broken_report(frame):
        raise ConnectionError("redis went away")

    pump = RunPump("r", ["a", "b"], rec.publish, broken_report, progress_interval_s=0.01)
    sender = asyncio.create_task(pump.run())
    pump.started("a")
    pump.started("b")
    pump.delta("b", "y")
    await asyncio.sleep(0.05)
    pump.finished("b", stats={})
    pump.finished("a", stats={})
    await asyncio.wait_for(sender, 1)
    assert rec.frames[-1]["type"] == "run.completed"


async def test_with_a_window_the_first_token_goes_at_once_and_later_ones_at_most_once_per_window():
    rec = Recorder()
    sent_at: list[float] = []
    loop = asyncio.get_running_loop()

    async def publish(frames):
        sent_at.append(loop.time())
        await rec.publish(frames)

    pump = RunPump("r", ["a"], publish, coalesce_window_s=0.2)
    sender = asyncio.create_task(pump.run())
    begin = loop.time()
    pump.started("a")
    pump.delta("a", "first ")
    await asyncio.sleep(0.02)
    # The run's first send did not wait for a window.
    assert [f["text"] for f in rec.frames if f["type"] == "task.delta"] == ["first "]
    assert sent_at[0] - begin < 0.1
    for i in range(10):  # one token every 20 ms for 200 ms: one window's worth
        pump.delta("a", f"{i} ")
        await asyncio.sleep(0.02)
    pump.finished("a", stats={})
    await asyncio.wait_for(sender, 2)
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert all(gap >= 0.19 for gap in gaps), gaps
    assert len(rec.batches) <= 3
    text = "".join(f["text"] for f in rec.frames if f["type"] == "task.delta")
    assert text == "first " + "".join(f"{i} " for i in range(10))
