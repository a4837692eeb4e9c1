"""The in-memory run log (one process, no Redis): ordered reads after a seq, bounded, atomic end."""

import pytest

from streams.store.runlog import MemoryRunLog
from tests.support.scripted import ScriptedProvider
from tests.wsclient import connect, send, start, texts, until_run_end


def frames(first: int, last: int) -> list[dict]:
    return [
        {"type": "task.delta", "seq": n, "run_id": "r", "task": "a", "text": str(n)}
        for n in range(first, last + 1)
    ]


async def test_reads_after_a_seq_and_keeps_only_the_newest_frames_when_full():
    log = MemoryRunLog(max_frames=5)
    await log.create("r", {"owner": "o"})
    await log.append("r", frames(1, 3))
    assert [f["seq"] for f in await log.read("r", 1)] == [2, 3]
    await log.append("r", frames(4, 8))
    assert [f["seq"] for f in await log.read("r", 0)] == [4, 5, 6, 7, 8]
    assert [f["seq"] for f in await log.read("r", 6)] == [7, 8]
    assert await log.read("r", 8) == []
    assert await log.read("unknown", 0) == []


async def test_append_after_only_continues_the_log_where_the_caller_read_it():
    log = MemoryRunLog(max_frames=100)
    await log.create("r", {"owner": "o"})
    assert await log.append_after("r", 0, frames(1, 2))
    assert not await log.append_after("r", 1, frames(2, 3))
    assert await log.append_after("r", 2, frames(3, 3))
    assert [f["seq"] for f in await log.read("r", 0)] == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
async def test_without_redis_a_run_streams_in_order_and_resumes_from_the_memory_log(
    memory_layer, scripted_provider, make_pipeline
):
    await make_pipeline(
        "p", [{"key": k, "provider": "scripted", "model": "fast:40", "system": k} for k in "ab"]
    )
    comm = await connect()
    run_id = (await start(comm, "p"))["run_id"]
    frames = await until_run_end(comm)
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert texts(frames) == {k: "".join(ScriptedProvider.tokens("fast:40", k)) for k in "ab"}
    await send(comm, {"type": "run.resume", "run_id": run_id, "after_seq": 1})
    assert await until_run_end(comm) == frames[1:]
    await comm.disconnect()
