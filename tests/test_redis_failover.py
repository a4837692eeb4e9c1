"""A Redis that fails over, restarts empty or dies costs no run it did not hold (real processes).

Each test starts its own redis-server processes (tests/support/redis_procs.py) and two app
instances on them; the run streams while Redis goes away, and the client on the same socket
must get every task's text byte-exact with gap-free seq, then a resume on the other instance
must replay the same frames.
"""

import asyncio
import contextlib
import json
import time

import httpx
import pytest

from streams.store.topology import Topology
from tests.support.live import LiveServer, app_env, prepare_database
from tests.support.wsruns import expected_text, next_frame, quad, session_cookie, texts, until_end, ws

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TOKENS = 80
PACE = {"SIMULATED_TOKENS_PER_S": "25", "SIMULATED_TTFT_S": "0.05", "SIMULATED_TOKENS": str(TOKENS)}
# A frame may wait for the outage (a failover takes ~2.3 s) plus the quiet check (5 s).
FRAME_TIMEOUT_S = 30


def instances(tmp_path, redis: dict[str, str], **extra: str):
    """Two app servers on the same Redis topology and database (context managers)."""
    db = prepare_database(tmp_path, "", quad("simulated"))
    env = app_env(db, "", **{**PACE, "STREAMS_RESUME_GRACE_S": "10", **redis, **extra})
    return (
        LiveServer(env, log_path=tmp_path / "one.log"),
        LiveServer(env, log_path=tmp_path / "two.log"),
    )


async def start_run(sock, user_input: str) -> dict:
    """Start a `quad` run; its run.accepted frame (retried while Redis is still coming back)."""
    for _ in range(100):
        await sock.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": user_input}))
        answer = await next_frame(sock, FRAME_TIMEOUT_S)
        if answer["type"] == "run.accepted":
            return answer
        assert answer["code"] == "layer_unavailable", answer
        assert answer["retry_after"] >= 1
        await asyncio.sleep(0.2)
    raise AssertionError("no run was accepted")


async def read_until_deltas(sock, count: int) -> list[dict]:
    """Ordered frames until `count` deltas have arrived."""
    frames: list[dict] = []
    while sum(f["type"] == "task.delta" for f in frames) < count:
        frames.append(await next_frame(sock, FRAME_TIMEOUT_S))
    return frames


async def rest_of_run(sock) -> list[dict]:
    """Ordered frames until the run's end, however long the outage holds them."""
    frames: list[dict] = []
    while not (frames and frames[-1]["type"] in ("run.completed", "run.failed", "run.cancelled")):
        frames.append(await next_frame(sock, FRAME_TIMEOUT_S))
    return frames


def assert_whole(frames: list[dict], user_input: str) -> None:
    """Gap-free seq from 1, completed, every task's text byte-exact."""
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "run.completed", frames[-1]
    got = texts(frames)
    for k in "abcd":
        assert got[f"task_{k}"] == expected_text(k, user_input, TOKENS)


async def read_for(sock, seconds: float) -> list[dict]:
    """Ordered frames that arrive within `seconds`."""
    frames: list[dict] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                frames.append(await next_frame(sock, FRAME_TIMEOUT_S))
    return frames


async def survive(one: LiveServer, two: LiveServer, down, up) -> None:
    """A run streams on `one` while Redis goes `down()` and comes back `up()`; then resume,
    new runs and cancel from `two`."""
    cookie = session_cookie(one)
    sock = await ws(one, cookie)
    accepted = await start_run(sock, "through the outage")
    seen = await read_until_deltas(sock, 3)
    await asyncio.to_thread(down)
    # The starter gets its frames from the host, not through Redis: it reads on, live.
    during = await read_for(sock, 1.5)
    assert any(f["type"] == "task.delta" for f in during), during
    await asyncio.to_thread(up)
    frames = seen + during + await rest_of_run(sock)
    assert_whole(frames, "through the outage")
    # The host did ride the outage out (rather than the fault landing between sends).
    assert "Redis answers again" in one.log_text()
    assert "host_lost" not in one.log_text() + two.log_text()

    # Another instance replays the same frames from the log, which the host repaired.
    other = await ws(two, cookie)
    await other.send(json.dumps({"type": "run.resume", "run_id": accepted["run_id"], "after_seq": 0}))
    assert await until_end(other) == frames

    # New runs work on both, and a cancel from `two` reaches a run hosted by `one`.
    await start_run(other, "after")
    assert_whole(await rest_of_run(other), "after")
    hosted = await start_run(sock, "cancel me")
    await read_until_deltas(sock, 1)
    await other.send(json.dumps({"type": "run.cancel", "run_id": hosted["run_id"]}))
    assert (await rest_of_run(sock))[-1]["type"] == "run.cancelled"
    # The socket that lived through the outage still works.
    await start_run(sock, "still here")
    assert_whole(await rest_of_run(sock), "still here")
    await sock.close()
    await other.close()


async def test_a_sentinel_failover_mid_run_costs_nothing(tmp_path, sentinel_group):
    redis = {
        "REDIS_SENTINELS": ",".join(f"{h}:{p}" for h, p in sentinel_group.sentinels),
        "REDIS_SENTINEL_MASTER": sentinel_group.master_name,
    }
    one, two = instances(tmp_path, redis)
    with one, two:
        await survive(one, two, sentinel_group.kill_master, sentinel_group.wait_for_failover)


async def test_a_redis_restarted_empty_mid_run_costs_nothing(tmp_path, redis_process):
    one, two = instances(tmp_path, {"REDIS_URL": redis_process.url})
    with one, two:

        def restart_empty():
            time.sleep(0.5)  # 2 s down in all, with the 1.5 s read while down
            redis_process.restart()

        await survive(one, two, redis_process.kill, restart_empty)
        # Nothing is left behind: the repaired run's keys carry their expiry again.
        client = redis_process.client()
        for key in client.keys("streams:run:*"):
            assert client.ttl(key) > 0, key


async def test_two_nodes_share_the_runs_and_a_dead_node_costs_only_its_own(tmp_path, redis_pair):
    alive, dead = redis_pair
    urls = f"{alive.url},{dead.url}"
    # Runs of 8 s and a window of 1 s: those on the dead node outlast it.
    one, two = instances(
        tmp_path, {"REDIS_URL": urls}, STREAMS_LAYER_OUTAGE_S="1", SIMULATED_TOKENS_PER_S="10"
    )
    topology = Topology.parse(urls)
    with one, two:
        cookie = session_cookie(one)
        socks: list = []
        runs: list[dict] = []
        held: dict[str, set[str]] = {node.url: set() for node in redis_pair}
        # Placement is by run id: start runs (one per socket) until both nodes hold some.
        while len(runs) < 4 or not all(held.values()):
            assert len(runs) < 24, held
            socks.append(await ws(one, cookie))
            runs.append(await start_run(socks[-1], f"run {len(runs)}"))
            run_id = runs[-1]["run_id"]
            for node in redis_pair:
                # Each node holds the metadata of the runs placed on it.
                if node.client().exists(f"streams:run:{{{run_id}}}:meta"):
                    held[node.url].add(run_id)
        seen = [await read_until_deltas(sock, 1) for sock in socks]
        assert held[alive.url] and held[dead.url], held
        assert held[alive.url].isdisjoint(held[dead.url])
        assert topology.size == 2

        dead.kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        for n, (sock, run) in enumerate(zip(socks, runs, strict=True)):
            frames = seen[n] + await rest_of_run(sock)
            if run["run_id"] in held[alive.url]:
                assert_whole(frames, f"run {n}")
            else:
                assert frames[-1]["type"] == "run.failed"
                assert frames[-1]["error"]["code"] == "layer_unavailable"
        # Runs on the dead node ended within the outage window (1 s) plus 30 s.
        assert loop.time() - killed_at < 1 + 30

        # No socket was closed: each can still run (placed on the living node, or refused clearly).
        for sock in socks[:2]:
            await sock.send(json.dumps({"type": "ping"}))
            assert (await next_frame(sock))["type"] == "pong"
        await socks[0].close()
        for sock in socks[1:]:
            await sock.close()


async def test_while_redis_is_down_new_runs_are_refused_clearly_and_connections_stay(tmp_path, redis_process):
    db = prepare_database(tmp_path, "", quad("simulated"))
    with LiveServer(app_env(db, redis_process.url, **PACE), log_path=tmp_path / "one.log") as one:
        cookie = session_cookie(one)
        sock = await ws(one, cookie)
        await asyncio.to_thread(redis_process.kill)
        await sock.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "x", "ref": "r1"}))
        refused = await next_frame(sock, FRAME_TIMEOUT_S)
        assert refused["type"] == "error" and refused["code"] == "layer_unavailable"
        assert refused["ref"] == "r1" and refused["retry_after"] >= 1
        await sock.send(json.dumps({"type": "ping"}))
        assert (await next_frame(sock))["type"] == "pong"
        async with httpx.AsyncClient(timeout=FRAME_TIMEOUT_S) as http:
            response = await http.post(
                one.url + "/stream", json={"pipeline": "quad", "input": "x"}, headers={"Cookie": cookie}
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "layer_unavailable"
        assert int(response.headers["Retry-After"]) >= 1

        await asyncio.to_thread(redis_process.restart)
        await start_run(sock, "back")
        assert_whole(await rest_of_run(sock), "back")
        await sock.close()
