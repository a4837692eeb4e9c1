"""Several server instances (streams.serve) sharing Redis and a database: resume and cancel
from any instance, Redis loss."""

import asyncio
import json
import shutil
import subprocess
import time

import pytest

from tests.support.live import LiveServer, app_env, free_port, prepare_database, wait_for_port
from tests.support.openai_server import OpenAIServer, Script
from tests.support.wsruns import expected_text, next_frame, quad, session_cookie, texts, until_end, ws

pytestmark = pytest.mark.redis

TOKENS = 80


@pytest.fixture
def two_instances(tmp_path, redis_url):
    """Two server processes on two ports, one Redis, one database, runs surviving a drop for 10 s."""
    db = prepare_database(tmp_path, redis_url, quad("simulated"))
    env = app_env(
        db,
        redis_url,
        STREAMS_RESUME_GRACE_S="10",
        SIMULATED_TOKENS_PER_S="40",
        SIMULATED_TTFT_S="0.05",
        SIMULATED_TOKENS=str(TOKENS),
    )
    with (
        LiveServer(env, log_path=tmp_path / "one.log") as one,
        LiveServer(env, log_path=tmp_path / "two.log") as two,
    ):
        yield one, two


async def test_a_run_dropped_on_one_instance_resumes_on_another_byte_exact(two_instances):
    one, two = two_instances
    cookie = session_cookie(one)
    first = await ws(one, cookie)
    await first.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "resume me"}))
    accepted = await next_frame(first)
    seen = []
    while len(seen) < 6:
        seen.append(await next_frame(first))
    assert seen[-1]["type"] == "task.delta" and seen[-1]["task"] == "task_a"
    await first.close()

    second = await ws(two, cookie)
    resume = {"type": "run.resume", "run_id": accepted["run_id"], "after_seq": seen[-1]["seq"]}
    await second.send(json.dumps(resume))
    rest = await until_end(second)
    await second.close()

    frames = seen + rest
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "run.completed"
    for k in "abcd":
        assert texts(frames)[f"task_{k}"] == expected_text(k, "resume me")


async def test_another_session_cannot_resume_on_another_instance(two_instances):
    one, two = two_instances
    first = await ws(one, session_cookie(one))
    await first.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "mine"}))
    run_id = (await next_frame(first))["run_id"]
    stranger = await ws(two, session_cookie(two))
    for frame in (
        {"type": "run.resume", "run_id": run_id, "after_seq": 0},
        {"type": "run.cancel", "run_id": run_id},
    ):
        await stranger.send(json.dumps(frame))
        answer = await next_frame(stranger)
        assert answer["type"] == "error" and answer["code"] == "unknown_run"
    assert (await until_end(first))[-1]["type"] == "run.completed"
    await first.close()
    await stranger.close()


async def test_cancel_on_a_second_instance_closes_the_upstream_streams_of_the_first(tmp_path, redis_url):
    with OpenAIServer(Script(tokens=2000, tokens_per_s=50)) as upstream:
        db = prepare_database(tmp_path, redis_url, quad("openai"))
        env = app_env(db, redis_url, OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="test-key")
        with LiveServer(env) as one, LiveServer(env) as two:
            cookie = session_cookie(one)
            runner = await ws(one, cookie)
            await runner.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "long"}))
            run_id = (await next_frame(runner))["run_id"]
            while (await next_frame(runner))["type"] != "task.delta":
                pass
            canceller = await ws(two, cookie)
            t0 = time.monotonic()
            await canceller.send(json.dumps({"type": "run.cancel", "run_id": run_id}))
            frames = await until_end(runner)
            assert frames[-1]["type"] == "run.cancelled"
            for _ in range(250):  # the server records closes in its own thread: poll up to 5 s
                if all(r.client_closed for r in upstream.requests):
                    break
                await asyncio.sleep(0.02)
            assert len(upstream.requests) == 4
            for record in upstream.requests:
                assert record.client_closed, record
                assert record.closed_at - t0 < 1.0
                assert record.tokens_sent < 2000
            await runner.close()
            await canceller.close()


class PrivateRedis:
    """A redis-server of the test's own on a free port, so restarting it disturbs nobody else."""

    def __init__(self):
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


async def test_redis_gone_past_the_outage_window_fails_the_run_and_new_runs_work_after(tmp_path, redis_url):
    redis = PrivateRedis()
    redis.start()
    try:
        db = prepare_database(tmp_path, redis.url, quad("simulated"))
        env = app_env(
            db,
            redis.url,
            SIMULATED_TOKENS_PER_S="20",
            SIMULATED_TTFT_S="0.05",
            SIMULATED_TOKENS="60",
            STREAMS_LAYER_OUTAGE_S="1",
        )
        with LiveServer(env, log_path=tmp_path / "app.log") as app:
            cookie = session_cookie(app)
            sock = await ws(app, cookie)
            await sock.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "x"}))
            await next_frame(sock)
            while (await next_frame(sock))["type"] != "task.delta":
                pass
            redis.stop()
            frames = await until_end(sock)
            assert frames[-1]["type"] == "run.failed"
            assert frames[-1]["error"]["code"] == "layer_unavailable"
            await sock.close()

            redis.start()
            sock = await ws(app, cookie)
            for _ in range(50):  # the app may need a moment to notice Redis is back
                await sock.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "again"}))
                answer = await next_frame(sock)
                if answer["type"] == "run.accepted":
                    break
                assert answer["code"] == "layer_unavailable"
                await asyncio.sleep(0.2)
            frames = await until_end(sock)
            assert frames[-1]["type"] == "run.completed"
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            await sock.close()
    finally:
        redis.stop()
