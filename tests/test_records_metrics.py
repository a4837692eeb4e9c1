"""/metrics: off by default, not public when on, counts runs, adds up several processes."""

import os
import subprocess
import sys

import pytest
from channels.db import database_sync_to_async
from prometheus_client.parser import text_string_to_metric_families

from tests.support.records import recorded_run, spec_of

pytestmark = pytest.mark.usefixtures("records")

TWO = spec_of(
    {"key": "a", "title": "First", "model": "fast:30", "system": "A"},
    {"key": "b", "title": "Second", "model": "fast:10", "system": "B", "depends_on": ("a",)},
)


def runs_completed(text: str) -> float:
    """streams_runs_total{status="completed"} in a /metrics answer."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "streams_runs_total" and sample.labels == {"status": "completed"}:
                return sample.value
    return 0.0


async def test_metrics_are_off_by_default_and_count_runs_when_on(client, settings):
    """404 when off; on, a run is counted, and only loopback or the token may read."""
    get = database_sync_to_async(client.get)
    settings.STREAMS = {**settings.STREAMS, "METRICS": False}
    assert (await get("/metrics")).status_code == 404

    settings.STREAMS = {**settings.STREAMS, "METRICS": True, "METRICS_TOKEN": "s3cret"}
    before = runs_completed((await get("/metrics")).content.decode())
    await recorded_run(TWO)
    response = await get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert runs_completed(response.content.decode()) == before + 1
    assert "streams_tasks_total" in response.content.decode()

    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert (await get("/metrics", **remote)).status_code == 401
    assert (await get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", **remote)).status_code == 401
    assert (await get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret", **remote)).status_code == 200
    # Through a proxy on the same host the socket address is loopback; the proxy's header gives it away.
    assert (await get("/metrics", HTTP_X_FORWARDED_FOR="203.0.113.9")).status_code == 401


def in_process(code: str, multiproc_dir) -> str:
    """Run `code` in a new Python process in multiprocess mode; return its output."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_several_processes_add_up_in_multiprocess_mode(tmp_path):
    """Two workers count a run each; /metrics of a third answers the sum."""
    count = "from streams.records import metrics; metrics.run_started(); metrics.run_ended('completed')"
    in_process(count, tmp_path)
    in_process(count, tmp_path)
    text = in_process("from streams.records import metrics; print(metrics.render().decode())", tmp_path)
    assert runs_completed(text) == 2


def errors_counted(code: str) -> float:
    """streams_errors_total{code=...} in this process."""
    from streams.records import metrics

    text = metrics.render().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "streams_errors_total" and sample.labels == {"code": code}:
                return sample.value
    return 0.0


async def test_a_refused_client_frame_is_counted_by_its_error_code(memory_layer):
    """The WebSocket answers `unknown_pipeline` and /metrics counts it."""
    from tests.wsclient import connect, recv, send

    before = errors_counted("unknown_pipeline")
    comm = await connect()
    await send(comm, {"type": "run.start", "pipeline": "nope", "input": "x"})
    assert (await recv(comm))["code"] == "unknown_pipeline"
    await comm.disconnect()
    assert errors_counted("unknown_pipeline") == before + 1
