"""Operators' side of records: export_trace, prune_runs, the admin pages."""

import io
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from streams.models import Conversation, Pipeline, Run, RunTrace, TaskRun
from streams.records.codec import encode_frames, encode_pieces
from streams.records.writer import flush_all
from tests.support.records import delivered, recorded_run, spec_of

pytestmark = pytest.mark.usefixtures("records")

TWO = spec_of(
    {"key": "a", "title": "First", "model": "fast:30", "system": "A"},
    {"key": "b", "title": "Second", "model": "fast:10", "system": "B", "depends_on": ("a",)},
)
TRACE_KEYS = {
    "run_id",
    "pipeline",
    "conversation",
    "input",
    "status",
    "started_at",
    "ended_at",
    "tasks",
    "frames",
}
TASK_KEYS = {
    "key",
    "title",
    "provider",
    "model",
    "status",
    "text",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "error",
    "pieces",
}


def export(run_id: str) -> dict:
    """`manage.py export_trace RUN_ID`, parsed."""
    out = io.StringIO()
    call_command("export_trace", run_id, stdout=out)
    return json.loads(out.getvalue())


async def test_export_trace_prints_the_contract_shape():
    """Exactly the keys of PROTOCOL.md, with the run's frames and texts; an unknown id is an error."""
    rec, sent = await recorded_run(TWO, "x", conversation="c1")
    assert await flush_all()
    data = await database_sync_to_async(export)(rec.run_id)
    assert set(data) == TRACE_KEYS
    assert (data["run_id"], data["pipeline"], data["conversation"], data["status"]) == (
        rec.run_id,
        "rec",
        "c1",
        "completed",
    )
    assert all(isinstance(data[k], float) for k in ("started_at", "ended_at"))
    assert [set(t) for t in data["tasks"]] == [TASK_KEYS, TASK_KEYS]
    assert [t["text"] for t in data["tasks"]] == [delivered(sent, "a"), delivered(sent, "b")]
    assert all(
        isinstance(at, float) and isinstance(text, str) for t in data["tasks"] for at, text in t["pieces"]
    )
    assert [set(f) for f in data["frames"]] == [{"seq", "type", "task", "sent_at"}] * len(sent)
    assert [f["seq"] for f in data["frames"]] == list(range(1, len(sent) + 1))
    with pytest.raises(CommandError, match="no run"):
        await database_sync_to_async(export)("no-such-run")


def old_run(run_id: str, conversation: Conversation, days: float) -> Run:
    """A stored run started `days` ago, with a task record and a trace."""
    started = timezone.now() - timedelta(days=days)
    run = Run.objects.create(
        run_id=run_id, conversation=conversation, owner="user:1", pipeline="demo", started_at=started
    )
    TaskRun.objects.create(run=run, key="a", text="x", pieces=encode_pieces([1.0], ["x"], "x", 0.0))
    RunTrace.objects.create(run=run, frames=encode_frames([(1, "run.completed", None, 1.0)], 0.0))
    return run


def test_prune_removes_only_old_runs_and_their_traces():
    """Old runs go with their tasks and traces; newer runs, their conversations and pipelines stay."""
    stale = Conversation.objects.create(
        id="stale", owner="user:1", updated=timezone.now() - timedelta(days=40)
    )
    mixed = Conversation.objects.create(id="mixed", owner="user:1")
    old_run("old-1", stale, 40)
    old_run("old-2", mixed, 31)
    old_run("new-1", mixed, 29)
    pipelines = list(Pipeline.objects.values_list("slug", flat=True))
    out = io.StringIO()
    call_command("prune_runs", "--older-than", "30", stdout=out)
    assert "2 runs" in out.getvalue()
    assert list(Run.objects.values_list("run_id", flat=True)) == ["new-1"]
    assert list(TaskRun.objects.values_list("run_id", flat=True)) == ["new-1"]
    assert list(RunTrace.objects.values_list("run_id", flat=True)) == ["new-1"]
    assert list(Conversation.objects.values_list("id", flat=True)) == ["mixed"]
    assert list(Pipeline.objects.values_list("slug", flat=True)) == pipelines


def test_prune_traces_only_keeps_the_runs(settings):
    """--traces-only drops frames and pieces, not the records; the setting is the default age."""
    settings.STREAMS = {**settings.STREAMS, "RECORDS_RETENTION_DAYS": 10}
    conversation = Conversation.objects.create(id="c", owner="user:1")
    old_run("old", conversation, 11)
    old_run("new", conversation, 9)
    call_command("prune_runs", "--traces-only", stdout=io.StringIO())
    assert sorted(Run.objects.values_list("run_id", flat=True)) == ["new", "old"]
    assert list(RunTrace.objects.values_list("run_id", flat=True)) == ["new"]
    assert TaskRun.objects.get(run_id="old").pieces == [] and TaskRun.objects.get(run_id="new").pieces


async def test_admin_shows_runs_with_tasks_timeline_and_trace(admin_client):
    """List with filters, the run page (tasks side by side, SVG timeline), the download, the conversation."""
    rec, _ = await recorded_run(TWO, "admin <b>input</b>", owner="user:42", conversation="conv-admin")
    assert await flush_all()
    get = database_sync_to_async(admin_client.get)

    page = await get(reverse("admin:streams_run_changelist"), {"status": "completed", "owner": "user:42"})
    assert page.status_code == 200 and rec.run_id in page.content.decode()
    page = await get(reverse("admin:streams_run_changelist"), {"status": "failed"})
    assert rec.run_id not in page.content.decode()

    page = (await get(reverse("admin:streams_run_change", args=[rec.run_id]))).content.decode()
    assert "<svg" in page and "First" in page and "Second" in page
    assert "admin &lt;b&gt;input&lt;/b&gt;" in page and "<b>input</b>" not in page  # escaped everywhere

    download = await get(reverse("admin:streams_run_trace", args=[rec.run_id]))
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert json.loads(download.content)["run_id"] == rec.run_id

    page = await get(reverse("admin:streams_conversation_change", args=["conv-admin"]))
    assert page.status_code == 200 and rec.run_id in page.content.decode()
