"""A client that never reads, against a real uvicorn (python -m streams.serve): its replay of a
large finished run is cut off with 4408 once 1 MiB is unsent, and the server's memory stays
bounded. (daphne's send never waits, so there the outbox cannot see it: docs/deployment.md.)"""

import asyncio

import pytest

from tests.support.live import LiveServer, app_env, prepare_database
from tests.support.slow_readers import RSSSampler, finished_run, non_reader, read_to_close, session_cookie

pytestmark = pytest.mark.redis

CAP = 1024 * 1024
LOG_BYTES = 24 * 1024 * 1024  # well past the cap plus every buffer on the way (kernel, client)


@pytest.fixture
def uvicorn_server(tmp_path, redis_url):
    """The app under uvicorn with a 1 MiB cap on a connection's unsent data."""
    db = prepare_database(tmp_path, redis_url)
    env = app_env(db, redis_url, STREAMS_MAX_UNSENT_BYTES=str(CAP))
    with LiveServer(env, log_path=tmp_path / "server.log", server="uvicorn") as live:
        yield live


async def test_a_client_that_never_reads_a_replay_is_closed_4408_and_memory_stays_bounded(
    uvicorn_server, redis_url
):
    server = uvicorn_server
    cookie, key = await session_cookie(server.url)
    run_id = await finished_run(redis_url, key, LOG_BYTES, text_chars=16_000)
    sampler = RSSSampler(server.proc.pid).start()
    conn = await non_reader(server.ws_url, cookie, run_id)
    async with asyncio.timeout(30):
        while "slow reader" not in server.log_text():  # noqa: ASYNC110 (another process's log)
            await asyncio.sleep(0.05)
    growth = await sampler.stop()
    # Only now does the client read: what the server had written, then its close.
    chars, code = await read_to_close(conn)
    assert code == 4408
    assert chars < LOG_BYTES // 2, chars
    # The replay was cut off, not buffered: far less than the log's 24 MiB.
    assert growth < 16 * 1024 * 1024, growth
    # The connection is gone from the server, and the next one works.
    assert "slow reader" in server.log_text() and "Traceback" not in server.log_text()
    conn2 = await non_reader(server.ws_url, cookie, "no-such-run")
    assert '"unknown_run"' in await asyncio.wait_for(conn2.recv(), 10)
    await conn2.close()
