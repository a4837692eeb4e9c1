"""deploy/nginx.conf in front of two server instances (streams.serve): a WebSocket run and a
resume through it."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.live import ROOT, LiveServer, app_env, free_port, prepare_database, wait_for_port
from tests.test_instances import expected_text, next_frame, quad, session_cookie, texts, until_end, ws

pytestmark = pytest.mark.redis

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def render_config(tmp: Path, listen: int, backends: list[int]) -> Path:
    """The deploy config with this test's ports and temp paths; nothing else changed."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    text = text.replace("127.0.0.1:8080", f"127.0.0.1:{listen}")
    text = text.replace("127.0.0.1:8001", f"127.0.0.1:{backends[0]}")
    text = text.replace("127.0.0.1:8002", f"127.0.0.1:{backends[1]}")
    text = text.replace("/tmp/nginx-orchestrator", str(tmp / "nginx"))
    path = tmp / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture
def behind_nginx(tmp_path, redis_url):
    """nginx with the deploy config on a free port, in front of two instances sharing Redis and a DB."""
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed; scripts/test installs Debian's nginx-light")
    db = prepare_database(tmp_path, redis_url, quad("simulated"))
    env = app_env(
        db, redis_url, STREAMS_RESUME_GRACE_S="10", SIMULATED_TOKENS_PER_S="40", SIMULATED_TOKENS="80"
    )
    with LiveServer(env) as one, LiveServer(env) as two:
        port = free_port()
        conf = render_config(tmp_path, port, [one.port, two.port])
        proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"])
        try:
            wait_for_port(port)
            front = LiveServer(env, port=port)  # only its url helpers: nginx is the process
            yield front, (one, two)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def test_a_run_through_nginx_survives_a_reconnect_with_nothing_lost(behind_nginx):
    front, _ = behind_nginx
    cookie = session_cookie(front)
    sock = await ws(front, cookie)
    await sock.send(json.dumps({"type": "run.start", "pipeline": "quad", "input": "via nginx"}))
    run_id = (await next_frame(sock))["run_id"]
    seen = [await next_frame(sock) for _ in range(5)]
    await sock.close()
    # least_conn may send the reconnect to either instance: both must resume it.
    sock = await ws(front, cookie)
    await sock.send(json.dumps({"type": "run.resume", "run_id": run_id, "after_seq": seen[-1]["seq"]}))
    frames = seen + await until_end(sock)
    await sock.close()
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "run.completed"
    for k in "abcd":
        assert texts(frames)[f"task_{k}"] == expected_text(k, "via nginx")
