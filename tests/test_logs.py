"""Every log line about a run carries its run id and task key, in plain and JSON output."""

import json
import logging

import pytest

from streams.logs import JSONFormatter, PlainFormatter, RunContextFilter
from tests.wsclient import connect, start, until_run_end

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_a_failing_task_logs_one_line_with_its_run_and_task(
    memory_layer, scripted_provider, make_pipeline, caplog
):
    await make_pipeline(
        "p",
        [
            {"key": "a", "provider": "scripted", "model": "fail:2"},
            {"key": "b", "provider": "scripted", "model": "fast:2"},
        ],
    )
    caplog.handler.addFilter(RunContextFilter())
    comm = await connect()
    with caplog.at_level(logging.INFO, logger="streams"):
        run_id = (await start(comm, "p"))["run_id"]
        frames = await until_run_end(comm)
    await comm.disconnect()
    assert frames[-1]["type"] == "run.failed"
    failed = [r for r in caplog.records if r.getMessage().startswith("task failed")]
    assert [(r.run_id, r.task) for r in failed] == [(run_id, "a")]
    ended = [r for r in caplog.records if r.getMessage().startswith("run ended")]
    assert [(r.run_id, r.task, r.getMessage()) for r in ended] == [(run_id, "", "run ended: run.failed")]
    started = [r for r in caplog.records if r.getMessage().startswith("run started")]
    assert [r.run_id for r in started] == [run_id]


def test_the_formatters_write_the_context_only_when_there_is_one():
    record = logging.LogRecord("streams.x", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    RunContextFilter().filter(record)
    plain = PlainFormatter("%(levelname)s %(message)s")
    assert plain.format(record) == "WARNING hello you"
    record.run_id, record.task = "r1", "task_a"
    assert plain.format(record) == "WARNING hello you run=r1 task=task_a"
    assert json.loads(JSONFormatter().format(record)) | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "streams.x",
        "message": "hello you",
        "run_id": "r1",
        "task": "task_a",
    }
